"""Careless inputs and outputs of the index job, and damaged index directories: a listed path that is not a regular
file is that row's error and never opened, an `--output` directory gets the checks a .npz gets, a damaged
faiss.index / faiss-rows.arrow / faiss.json is refused in one line naming it, and every file follows the umask."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import threading
from pathlib import Path

import numpy as np
import pytest

from bt_runtime.errors import BtRuntimeError
from bt_runtime.index import faiss_index, inputs, shards
from bt_runtime.index.inputs import from_arguments, read_bytes
from bt_runtime.index.job import index_images

pytest.importorskip("faiss")
pytest.importorskip("pyarrow")

DIM = 8
TOWERS = {"vision_tower": "v"}


@contextlib.contextmanager
def unblocking(fifo: Path):
    """Whoever opens `fifo` to read gets end-of-file at once instead of blocking forever: a writer opens and closes
    it as soon as a reader waits, so a test of code that must never open it fails instead of hanging."""
    done = threading.Event()

    def writer():
        while not done.is_set():
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # ENXIO: no reader yet
                done.wait(0.01)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


@pytest.fixture
def never_reads_special_files(monkeypatch):
    """Path.read_bytes fails the test on anything but a regular file: /dev/zero would otherwise be read until memory
    runs out."""
    real = Path.read_bytes

    def guarded(path):
        assert stat.S_ISREG(os.stat(path).st_mode), f"{path} was opened: it is not a regular file"
        return real(path)

    monkeypatch.setattr(Path, "read_bytes", guarded)


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    with unblocking(path):
        yield path


def test_a_listed_fifo_or_device_is_that_rows_error_never_opened(fifo, never_reads_special_files, gallery):
    good = sorted(gallery.iterdir())[0]
    blobs = read_bytes([str(fifo), "/dev/zero", str(good)])
    assert blobs[0] == f"{fifo}: a FIFO, not a regular file (an image must be a regular file)"
    assert blobs[1] == "/dev/zero: a character device, not a regular file (an image must be a regular file)"
    assert blobs[2] == good.read_bytes()


def test_a_parquet_source_changed_since_indexing_is_its_rows_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "images.parquet"
    pq.write_table(pa.table({"png": [b"one", b"two"]}), path)
    sources = from_arguments(None, None, f"{path}:png").sources
    assert read_bytes(sources) == [b"one", b"two"]
    pq.write_table(pa.table({"png": [b"one"]}), path)  # a row fewer
    assert read_bytes(sources) == [b"one", f"{sources[1]}: {path.absolute()}: now has 1 row(s)"]
    pq.write_table(pa.table({"jpg": [b"one"]}), path)  # the column renamed
    errors = read_bytes(sources)
    assert all(e.startswith(f"{s}: {path.absolute()}: cannot be read (") for s, e in zip(sources, errors, strict=True))
    path.unlink()
    gone = f"{path.absolute()}: cannot be read (No such file or directory)"
    assert read_bytes(sources) == [f"{s}: {gone}" for s in sources]


def test_an_index_job_over_a_list_with_a_fifo_finishes(runtime, tiny_export, gallery, fifo, never_reads_special_files,
                                                        tmp_path):
    listed = [str(fifo), "/dev/zero", *(str(p) for p in sorted(gallery.iterdir())[:3])]
    (tmp_path / "list.txt").write_text("\n".join(listed))
    summary = index_images(runtime, tiny_export, from_arguments(None, str(tmp_path / "list.txt"), None),
                           tmp_path / "index")
    assert summary["images"] == 5 and summary["errors"] == 2
    assert all("not a regular file" in e for e in summary["first_errors"])


def test_a_list_or_parquet_file_that_is_a_fifo_is_refused(fifo):
    with pytest.raises(BtRuntimeError, match=re.escape(f"--list {fifo}: {fifo}: a FIFO, not a regular file")):
        from_arguments(None, str(fifo), None)
    with pytest.raises(BtRuntimeError, match=re.escape(f"--parquet {fifo}:png: {fifo}: a FIFO, not a regular file")):
        from_arguments(None, None, f"{fifo}:png")


def _refused(runtime, tiny_export, gallery, output, match, monkeypatch):
    """index_images refuses `output` before any image is read."""
    monkeypatch.setattr(inputs.Path, "read_bytes", lambda path: pytest.fail(f"{path} read before the refusal"))
    with pytest.raises(BtRuntimeError, match=match):
        index_images(runtime, tiny_export, from_arguments([str(gallery)], None, None), output)


def test_a_symlinked_output_directory_is_neither_followed_nor_replaced(runtime, tiny_export, gallery, tmp_path,
                                                                       monkeypatch):
    (tmp_path / "target").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path / "target")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for link in ("linked", "dangling"):
        _refused(runtime, tiny_export, gallery, tmp_path / link, f"--output '.*{link}' is a symbolic link", monkeypatch)
    assert not any((tmp_path / "target").iterdir()) and not (tmp_path / "nowhere").exists()
    assert os.readlink(tmp_path / "dangling") == str(tmp_path / "nowhere")


def _under_a_file(tmp_path: Path) -> Path:
    (tmp_path / "file.txt").write_text("the user's")
    return tmp_path / "file.txt" / "sub"


def _in_a_locked_directory(tmp_path: Path) -> Path:
    (tmp_path / "locked").mkdir(mode=0o500)
    return tmp_path / "locked" / "index"


def _read_only(tmp_path: Path) -> Path:
    (tmp_path / "read-only").mkdir(mode=0o500)  # an existing directory is written inside, not beside
    return tmp_path / "read-only"


@pytest.mark.parametrize("make, match", [
    (_under_a_file, "file.txt' is not a directory"),
    (lambda tmp_path: tmp_path / ("i" * 300), "the name is 300 bytes; at most 255"),
    (_in_a_locked_directory, "locked' is not writable"),
    (_read_only, "read-only' is not writable"),
])
def test_output_directory_paths_are_checked_before_any_work(runtime, tiny_export, gallery, tmp_path, monkeypatch,
                                                            mode_bits_access, make, match):
    output = make(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    _refused(runtime, tiny_export, gallery, output, match, monkeypatch)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written, nothing removed


def test_a_directory_the_filesystem_refuses_is_one_line(runtime, tiny_export, gallery, monkeypatch):
    """/proc takes no new directory whatever its mode bits say to root: mkdir's error, in one line."""
    _refused(runtime, tiny_export, gallery, Path("/proc/bt-index-test"),
             "--output '?/proc/bt-index-test'?(: cannot write \\(No such file|: '/proc' is not writable)", monkeypatch)


def test_cli_refuses_a_symlinked_output_directory_in_one_line(tiny_export, gallery, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import bt_runtime.cli as cli
    from bt_runtime.cli import app

    monkeypatch.setattr(cli, "_load", lambda *a, **k: pytest.fail("the model was loaded before -o was checked"))

    (tmp_path / "target").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path / "target")
    result = CliRunner().invoke(app, ["index", str(tiny_export), "--images", str(gallery), "-o",
                                      str(tmp_path / "linked")])
    assert result.exit_code == 2 and "is a symbolic link" in result.output and "Traceback" not in result.output
    assert not any((tmp_path / "target").iterdir())


def _small_index(directory: Path) -> Path:
    """A finished job of 40 random vectors and its exact FAISS index, without a model."""
    vectors = np.random.default_rng(3).standard_normal((40, DIM)).astype(np.float32)
    job = shards.Job(shards.JOB_FORMAT, "--list x", "0" * 64, len(vectors), 16, "fp32", TOWERS, DIM)
    shards.open_job(directory, job)
    for k in range(job.shards):
        rows = range(16 * k, min(16 * (k + 1), len(vectors)))
        shards.write_shard(directory, k, [f"img{r}" for r in rows], [f"/g/{r}.png" for r in rows],
                           vectors[rows.start:rows.stop], [""] * len(rows), DIM)
    faiss_index.build(directory)
    return directory


@pytest.fixture(scope="module")
def small_index(tmp_path_factory):
    return _small_index(tmp_path_factory.mktemp("small") / "index")


def _damage(small_index, tmp_path, name, damage) -> Path:
    copy = tmp_path / "damaged"
    shutil.copytree(small_index, copy)
    damage(copy / name)
    return copy


def _edit_manifest(**fields):
    def edit(path: Path):
        path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))
    return edit


@pytest.mark.parametrize("name, damage, match", [
    (faiss_index.INDEX_FILE, lambda p: os.truncate(p, 100), "faiss.index is damaged .*FAISS cannot read it: .*failed"),
    (faiss_index.ROWS_FILE, lambda p: p.write_bytes(b"junk" * 100), "faiss-rows.arrow is damaged .*ArrowInvalid"),
    (faiss_index.MANIFEST_FILE, _edit_manifest(nprobe="x"), "faiss.json is not an index manifest .*nprobe is 'x'; "
                                                            "expected int"),
    (faiss_index.MANIFEST_FILE, _edit_manifest(k_factor=True), "faiss.json is not .*k_factor is True; expected int"),
    (faiss_index.MANIFEST_FILE, _edit_manifest(recall_at_10=float("nan")), "faiss.json is not .*recall_at_10 is nan"),
    (faiss_index.MANIFEST_FILE, _edit_manifest(nprobe=4), "faiss.json is damaged .*nprobe 4 / k_factor 0 do not fit "
                                                          "the IndexFlatIP"),
    (faiss_index.MANIFEST_FILE, _edit_manifest(count=41), "faiss.index holds 40 vectors of 8 floats and "
                                                          "faiss-rows.arrow 40 rows, where faiss.json says 41 of 8"),
    (faiss_index.MANIFEST_FILE, _edit_manifest(dim=9), "faiss.index holds 40 vectors of 8 .* says 40 of 9"),
    (faiss_index.MANIFEST_FILE, lambda p: p.write_text("[1]"), "faiss.json is not an index manifest .*a JSON list"),
    (faiss_index.MANIFEST_FILE, lambda p: p.unlink(), r"faiss.json: cannot be read \(No such file or directory\); "
                                                      "not an index directory"),
])
def test_a_damaged_index_directory_is_refused_in_one_line(small_index, tmp_path, name, damage, match):
    damaged = _damage(small_index, tmp_path, name, damage)
    with pytest.raises(BtRuntimeError, match=f"--index {re.escape(str(damaged))}: {match}") as refused:
        faiss_index.open_index(damaged, TOWERS, "fp32")
    assert "\n" not in str(refused.value)


def test_rows_of_another_count_and_another_embedding_size_are_refused(small_index, tmp_path):
    import pyarrow as pa

    def fewer_rows(path: Path):
        rows = pa.ipc.open_file(pa.memory_map(str(path))).read_all().slice(0, 39)
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, rows.schema) as writer:
            writer.write_table(rows)

    damaged = _damage(small_index, tmp_path, faiss_index.ROWS_FILE, fewer_rows)
    with pytest.raises(BtRuntimeError, match="faiss-rows.arrow 39 rows, where faiss.json says 40"):
        faiss_index.open_index(damaged, TOWERS, "fp32")
    with pytest.raises(BtRuntimeError, match="faiss.json says 8-dimensional vectors, this export embeds 32"):
        faiss_index.open_index(small_index, TOWERS, "fp32", dim=32)
    assert faiss_index.open_index(small_index, TOWERS, "fp32", dim=DIM).manifest.count == 40


def test_index_files_follow_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        directory = _small_index(tmp_path / "index")
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}
    assert modes == dict.fromkeys(["job.json", "shard-000000.parquet", "shard-000001.parquet",
                                   "shard-000002.parquet", "faiss.json", "faiss.index", "faiss-rows.arrow"], 0o640)


def test_a_fifo_given_by_name_and_a_zero_budget_are_refused_before_any_work(runtime, tiny_export, gallery, fifo,
                                                                            tmp_path):
    with pytest.raises(BtRuntimeError, match=re.escape(f"--images {fifo}: not a directory, an image file or a glob "
                                                       "match (a FIFO, not a regular file)")):
        from_arguments([str(fifo)], None, None)
    with pytest.raises(BtRuntimeError, match=re.escape(f"1 match(es) not a readable regular file: {fifo} (a FIFO")):
        from_arguments([str(fifo.parent / "*.png")], None, None)  # a glob match is refused by name too
    for budget in (0, -2**30, 1.5e9):
        with pytest.raises(BtRuntimeError, match=f"memory_bytes must be a positive integer, got {budget!r}"):
            index_images(runtime, tiny_export, from_arguments([str(gallery)], None, None), tmp_path / "out",
                         memory_bytes=budget)
    from typer.testing import CliRunner

    from bt_runtime.cli import app

    for gib in ("inf", "nan", "0", "1e-12", "1e300"):  # 1e300 GiB in bytes overflows to inf
        result = CliRunner().invoke(app, ["index", str(tiny_export), "--images", str(gallery), "-o",
                                          str(tmp_path / "out"), "--index-memory-gib", gib])
        assert result.exit_code == 2 and "expected a finite size above 0 (GiB)" in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_a_hand_edited_job_file_is_one_line_and_overwrite_still_deletes_only_what_it_wrote(small_index, tmp_path):
    copy = tmp_path / "index"
    shutil.copytree(small_index, copy)
    job = json.loads((copy / shards.JOB_FILE).read_text())
    (copy / shards.JOB_FILE).write_text(json.dumps({**job, "count": "40"}))
    with pytest.raises(BtRuntimeError, match=r"no readable job.json \(ValueError: count is '40'; expected int\)"):
        shards.read_job(copy)
    (copy / shards.JOB_FILE).write_text(json.dumps({**job, "count": 10**15}))  # 10^12 shards: never enumerated
    (copy / "shard-0000001.parquet").write_text("the user's")  # shard 1 is shard-000001: not a name it writes
    removed = shards.written_files(copy, shards.read_job(copy))
    assert sorted(p.name for p in removed) == sorted(["faiss.json", "faiss.index", "faiss-rows.arrow",
                                                      "shard-000000.parquet", "shard-000001.parquet",
                                                      "shard-000002.parquet"])


def test_the_job_lock_is_released_when_the_job_fails(tmp_path):
    directory = tmp_path / "index"
    with pytest.raises(RuntimeError, match="embedding failed"):
        with shards.job_lock(directory):
            raise RuntimeError("embedding failed")
    with shards.job_lock(directory):  # free again: taking it twice at once would be refused
        with pytest.raises(BtRuntimeError, match="another index job is writing to it now"):
            with shards.job_lock(directory):
                pass


def test_a_filesystem_that_cannot_lock_a_directory_runs_the_job_unlocked_and_says_so(tmp_path, monkeypatch):
    """NFS emulates flock(2) with a write lock, which a directory (opened read-only) cannot take: EBADF. Such a
    filesystem ran index jobs before the lock existed; it still does, with a line saying it is unlocked."""
    import errno

    def no_locks(handle, operation):
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))

    monkeypatch.setattr(shards.fcntl, "flock", no_locks)
    lines = []
    with shards.job_lock(tmp_path / "index", lines.append) as directory:
        assert directory == tmp_path / "index" and directory.is_dir()
    assert lines == [f"--output {tmp_path / 'index'}: this filesystem cannot lock the directory "
                     f"({os.strerror(errno.EBADF)}); run one index job at a time there"]


def test_an_output_inside_an_export_is_refused_before_any_work(export_copy, gallery):
    """Before: `bt-run index -o EXPORT/idx` (and triton-repo REPO there) wrote into the export, whose bt-export
    --overwrite then refused: an entry its manifest does not list."""
    from typer.testing import CliRunner

    from bt_runtime.cli import app
    from bt_runtime.outputs import check_output_path

    before = sorted(p.name for p in export_copy.iterdir())
    for output in ("idx", "gallery.npz", "deeper/idx"):
        result = CliRunner().invoke(app, ["index", str(export_copy), "--images", str(gallery), "-o",
                                          str(export_copy / output)])
        assert result.exit_code == 2, result.output
        assert f"is inside the export {str(export_copy)!r}" in " ".join(result.output.split()), result.output
    with pytest.raises(BtRuntimeError, match=re.escape(f"REPO {str(export_copy)!r} is the export")):
        check_output_path(export_copy, "REPO", 0)
    assert sorted(p.name for p in export_copy.iterdir()) == before
