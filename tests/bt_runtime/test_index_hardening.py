"""`bt-run index` / `retrieve --index` with crafted index files and careless output paths (issue 22): members are
checked from their .npy headers before any data is decompressed, object arrays are never unpickled, and every
refusal is one line with exit code 2."""

from __future__ import annotations

import io
import os
import pickle
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bt_runtime import BridgeTowerRuntime
from bt_runtime import gallery_index as gi
from bt_runtime.cli import app
from bt_runtime.errors import BtRuntimeError


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def runtime(tiny_export):
    with BridgeTowerRuntime.load(tiny_export) as runtime:
        yield runtime


def _fields(runtime, images=("/a.png", "/b.png")):
    return {"format": np.array(gi.FORMAT), "embeddings": np.full((len(images), 4), 0.5, np.float32),
            "images": np.array(list(images)), "vision_sha256": np.array(gi.vision_sha256(runtime)),
            "precision": np.array("fp32")}


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _never_loaded(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("np.load reached: data was decompressed before the members were checked")
    monkeypatch.setattr(gi.np, "load", refuse)


def test_a_well_formed_index_reads_back(runtime, tmp_path):
    np.savez(tmp_path / "ok.npz", **_fields(runtime))
    embeddings, images = gi.read(tmp_path / "ok.npz", runtime)
    assert embeddings.shape == (2, 4) and [str(p) for p in images] == ["/a.png", "/b.png"]


@pytest.mark.parametrize("embeddings, says", [
    (np.ones((2, 4), np.float32), r"embeddings row 0 has L2 norm 2 \(2 of 2 rows are not unit vectors"),
    (np.array([[0.5] * 4, [0.0] * 4], np.float32), r"embeddings row 1 has L2 norm 0 \(1 of 2"),
    (np.array([[0.5] * 4, [np.inf] * 4], np.float32), "embeddings has non-finite values"),
])
def test_an_index_of_vectors_that_are_not_unit_is_refused(tiny_export, runtime, tmp_path, embeddings, says):
    """Their dot products would be printed as cosine similarities above 1 (or ranked by length, not angle)."""
    np.savez(tmp_path / "raw.npz", **{**_fields(runtime), "embeddings": embeddings})
    with pytest.raises(BtRuntimeError, match=says):
        gi.read(tmp_path / "raw.npz", runtime)
    result = invoke("retrieve", tiny_export, "--query", "q", "--index", tmp_path / "raw.npz")
    assert result.exit_code == 2 and "rebuild it with `bt-run index`" in result.output
    assert "internal error" not in result.output


def test_a_float16_index_of_real_embeddings_is_kept(runtime, photos_dir, tmp_path):
    """Storage in float16 moves a norm by up to 2**-11: within the tolerance, as the fp16 export's own rows are."""
    gallery = [str(p) for p in sorted(photos_dir.iterdir())[:3]]
    embeddings = runtime.embed_images(gallery).astype(np.float16)
    np.savez(tmp_path / "half.npz", **{**_fields(runtime, gallery), "embeddings": embeddings})
    read, _ = gi.read(tmp_path / "half.npz", runtime)
    assert read.dtype == np.float16
    hits = runtime.retrieve("a cat", gallery, top_k=3, rerank=0, index=read)
    assert all(-1.001 <= hit.score <= 1.001 for hit in hits)


def test_a_large_junk_member_is_refused_before_decompressing(runtime, tmp_path, monkeypatch):
    path = tmp_path / "junk.npz"
    np.savez(path, **_fields(runtime))
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("junk.npy", bytes(64 << 20))  # 64 MiB of zeros deflate to ~64 KB
    _never_loaded(monkeypatch)
    with pytest.raises(BtRuntimeError, match="unexpected member 'junk.npy'"):
        gi.read(path, runtime)


def test_a_member_larger_than_its_header_says_is_refused(runtime, tmp_path, monkeypatch):
    path = tmp_path / "padded.npz"
    fields = _fields(runtime)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, value in fields.items():
            archive.writestr(f"{key}.npy", _npy(value) + (bytes(8 << 20) if key == "images" else b""))
    _never_loaded(monkeypatch)
    with pytest.raises(BtRuntimeError, match="images: .* bytes where its header says"):
        gi.read(path, runtime)


@pytest.mark.parametrize("images, why", [
    (np.array([["/a.png", "/b.png"]]), r"images: <U6 of shape \(1, 2\); expected a 1-D str array"),
    (np.array(["/a.png", 3], dtype=object), r"images: object of shape \(2,\)"),
    (np.array(["x" * 5000, "/b.png"]), "strings of 5000 characters"),
])
def test_crafted_images_arrays_are_refused_from_the_header(runtime, tmp_path, monkeypatch, images, why):
    path = tmp_path / "crafted.npz"
    fields = {**_fields(runtime), "images": images}
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in fields.items():
            archive.writestr(f"{key}.npy", _npy(value))
    _never_loaded(monkeypatch)
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    with pytest.raises(BtRuntimeError, match=why):
        gi.read(path, runtime)


def test_a_raw_pickle_stream_is_not_an_index(tiny_export, tmp_path):
    (tmp_path / "p.npz").write_bytes(pickle.dumps({"embeddings": [1.0]}))
    result = invoke("retrieve", tiny_export, "--query", "q", "--index", tmp_path / "p.npz")
    assert result.exit_code == 2 and "not an index" in result.output and "internal error" not in result.output


def test_index_output_paths_are_checked_before_any_work(tiny_export, photos_dir, tmp_path, mode_bits_access):
    long = invoke("index", tiny_export, "--images", photos_dir, "-o", tmp_path / ("i" * 300 + ".npz"))
    assert long.exit_code == 2 and "the name is 304 bytes" in long.output
    dangling = tmp_path / "dangling.npz"
    dangling.symlink_to(tmp_path / "nowhere.npz")
    linked = invoke("index", tiny_export, "--images", photos_dir, "-o", dangling, "--overwrite")
    assert linked.exit_code == 2 and "is a symbolic link" in linked.output
    assert dangling.is_symlink() and not (tmp_path / "nowhere.npz").exists()
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = invoke("index", tiny_export, "--images", photos_dir, "-o", locked / "g.npz")
    assert result.exit_code == 2 and "is not writable" in result.output


def test_an_npz_index_follows_the_umask_as_an_index_directory_does(runtime, photos_dir, tmp_path):
    gallery = sorted(photos_dir.iterdir())[:2]
    previous = os.umask(0o027)
    try:
        gi.write(tmp_path / "g.npz", runtime, gallery, runtime.embed_images(gallery))
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "g.npz").stat().st_mode) == 0o640  # mkstemp made it 0600
    assert [p.name for p in tmp_path.iterdir()] == ["g.npz"]


def test_an_npz_index_stores_each_path_as_an_index_directory_ids_it(runtime, photos_dir, tmp_path, monkeypatch):
    """Absolute, not normalized: `linked/..` is the photos' parent, not `tmp_path`, when `linked` is a symbolic
    link to the photos (os.path.abspath stored tmp_path/images/NAME, a file that does not exist)."""
    from bt_runtime.index.inputs import from_arguments

    (tmp_path / "linked").symlink_to(photos_dir, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    name = sorted(photos_dir.iterdir())[0].name
    given = Path("linked") / ".." / photos_dir.name / name
    gi.write(tmp_path / "g.npz", runtime, [given], runtime.embed_images([given]))
    _, stored = gi.read(tmp_path / "g.npz", runtime)
    assert [str(p) for p in stored] == from_arguments([str(given)], None, None).ids == [str(tmp_path / given)]
    assert stored[0].is_file()
