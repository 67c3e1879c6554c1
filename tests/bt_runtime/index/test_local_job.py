"""The in-process index job: resume after a lost shard, refusals, and retrieval over its FAISS index agreeing with
the brute-force retrieval of the same images."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bt_runtime.errors import BtRuntimeError
from bt_runtime.index import faiss_index, shards
from bt_runtime.index.inputs import from_arguments
from bt_runtime.index.job import index_images

pytest.importorskip("faiss")
pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def built(runtime, tiny_export, gallery, tmp_path_factory):
    output = tmp_path_factory.mktemp("built") / "index"
    summary = index_images(runtime, tiny_export, from_arguments([str(gallery)], None, None), output, shard_size=64)
    return output, summary


def test_a_rerun_embeds_only_the_missing_shards(runtime, tiny_export, gallery, built, tmp_path, monkeypatch):
    import shutil

    import bt_runtime.index.local as local

    output = tmp_path / "index"
    shutil.copytree(built[0], output)
    shards.shard_path(output, 2).unlink()  # as if the job had died while embedding shard 2
    untouched = {k: shards.shard_path(output, k).stat().st_mtime_ns for k in (0, 1, 3)}
    embedded = []
    real = local.embed
    monkeypatch.setattr(local, "embed", lambda rt, pixels, errors, b: embedded.append(len(errors)) or
                        real(rt, pixels, errors, b))
    summary = index_images(runtime, tiny_export, from_arguments([str(gallery)], None, None), output, shard_size=64)
    assert sum(embedded) == summary["embedded_now"] == 64  # shard 2 only
    assert {k: shards.shard_path(output, k).stat().st_mtime_ns for k in (0, 1, 3)} == untouched
    assert shards.read_shards(output).equals(shards.read_shards(built[0]))
    index_file = output / faiss_index.INDEX_FILE
    before = index_file.stat().st_mtime_ns
    again = index_images(runtime, tiny_export, from_arguments([str(gallery)], None, None), output, shard_size=64)
    assert again["embedded_now"] == 0 and index_file.stat().st_mtime_ns == before  # finished: nothing redone


def test_another_job_in_the_directory_is_refused(runtime, tiny_export, gallery, built, tmp_path):
    import shutil

    output = tmp_path / "index"
    shutil.copytree(built[0], output)
    with pytest.raises(BtRuntimeError, match="holds another index job .*shard_size.*--overwrite"):
        index_images(runtime, tiny_export, from_arguments([str(gallery)], None, None), output, shard_size=32)
    with pytest.raises(BtRuntimeError, match="exactly one of --images"):
        from_arguments([str(gallery)], str(gallery / "list.txt"), None)


def test_overwrite_replaces_the_jobs_files_only(runtime, tiny_export, gallery, built, tmp_path):
    import shutil

    output = tmp_path / "index"
    shutil.copytree(built[0], output)
    mine = ["faiss-notes.txt", "shard-old.parquet", "shard-000000.parquet.bak", "notes.md"]
    for name in mine:
        (output / name).write_text("the user's")
    inputs = from_arguments([str(gallery)], None, None)
    summary = index_images(runtime, tiny_export, inputs, output, shard_size=128, overwrite=True)
    assert summary["embedded_now"] == len(inputs.ids) and shards.read_job(output).shard_size == 128
    assert all((output / name).read_text() == "the user's" for name in mine)
    assert not shards.shard_path(output, 3).exists()  # the old job's 4th shard of 64; the new job has 3 of 128
    assert shards.read_shards(output).equals(shards.read_shards(built[0]))


def test_a_second_job_on_a_directory_in_use_is_refused(runtime, tiny_export, gallery, built, tmp_path):
    """While a job holds its directory, another (here one whose --overwrite would delete the first one's shards)
    is refused, touching nothing; once the first is done, the directory is free again. flock(2) locks belong to an
    open file description, so a second open in this process stands for another process."""
    import shutil

    directory = tmp_path / "index"
    shutil.copytree(built[0], directory)
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    with shards.job_lock(directory):
        with pytest.raises(BtRuntimeError, match="another index job is writing to it now"):
            index_images(runtime, tiny_export, from_arguments([str(gallery)], None, None), directory,
                         shard_size=32, overwrite=True)
        assert {p.name: p.read_bytes() for p in directory.iterdir()} == before
    summary = index_images(runtime, tiny_export, from_arguments([str(gallery)], None, None), directory,
                           shard_size=64)
    assert summary["embedded_now"] == 0 and summary["images"] == built[1]["images"]
    assert sorted(p.name for p in directory.iterdir()) == sorted(before)


def test_list_and_parquet_inputs_name_the_same_images(gallery, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(str(p) for p in gallery.iterdir())
    (tmp_path / "list.txt").write_text("\n".join(files))
    assert from_arguments(None, str(tmp_path / "list.txt"), None).ids == files
    pq.write_table(pa.table({"path": files}), tmp_path / "paths.parquet")
    assert from_arguments(None, None, f"{tmp_path / 'paths.parquet'}:path").ids == files
    pq.write_table(pa.table({"png": [open(f, "rb").read() for f in files[:3]]}), tmp_path / "bytes.parquet")
    encoded = from_arguments(None, None, f"{tmp_path / 'bytes.parquet'}:png")
    assert len(encoded.ids) == 3 and encoded.sources[0].startswith("parquet:")
    with pytest.raises(BtRuntimeError, match="no column 'jpg'; columns: png"):
        from_arguments(None, None, f"{tmp_path / 'bytes.parquet'}:jpg")


def test_retrieve_over_the_index_equals_brute_force(runtime, built):
    output, summary = built
    assert summary["factory"] == "Flat" and summary["recall_at_10"] == 1.0  # 299 vectors: exact
    table = shards.read_shards(output)
    good, vectors = shards.embeddings_of(table)
    images = [table.column("source")[int(i)].as_py() for i in good]
    for rerank in (0, 8):
        indexed = runtime.retrieve("a red circle", top_k=5, rerank=rerank, index=output)
        brute = runtime.retrieve("a red circle", images, top_k=5, rerank=rerank, index=vectors)
        assert [h.image_id for h in indexed] == [images[h.index] for h in brute]
        np.testing.assert_allclose([h.score for h in indexed], [h.score for h in brute], rtol=0, atol=1e-5)


def test_retrieve_from_index_checks_its_counts_as_retrieve_does(runtime, built, monkeypatch):
    """bt-serve and benchmarks/scale.py call retrieve_from_index directly: numpy integers are counts (as in
    retrieve()), a bool or a zero batch is refused before the query is embedded."""
    from bt_runtime.index.search import retrieve_from_index

    output = built[0]
    expected = [h.image_id for h in runtime.retrieve("a red circle", top_k=3, rerank=4, index=output)]
    hits = retrieve_from_index(runtime, "a red circle", output, np.int64(3), np.int32(4), np.int64(16))
    assert [h.image_id for h in hits] == expected
    monkeypatch.setattr(runtime, "encode_texts", lambda *a, **k: pytest.fail("embedded before the check"))
    for top_k, rerank, batch_size, message in ((3, True, 16, "rerank must be an integer ≥ 0, got True"),
                                               (True, 4, 16, "top_k must be a positive integer, got True"),
                                               (3, -1, 16, "rerank must be an integer ≥ 0, got -1"),
                                               (3, 4, 0, "batch_size must be a positive integer, got 0"),
                                               (3.0, 4, 16, "top_k must be a positive integer, got 3.0")):
        with pytest.raises(BtRuntimeError, match=message):
            retrieve_from_index(runtime, "a red circle", output, top_k, rerank, batch_size)


def test_an_index_of_another_export_or_precision_is_refused(runtime, built, tmp_path):
    import shutil

    for field, value in (("towers_sha256", {"vision_tower": "0" * 64, "text_tower": "1" * 64}),
                         ("precision", "int8")):
        other = tmp_path / field
        shutil.copytree(built[0], other)
        manifest = json.loads((other / faiss_index.MANIFEST_FILE).read_text())
        (other / faiss_index.MANIFEST_FILE).write_text(json.dumps({**manifest, field: value}))
        with pytest.raises(BtRuntimeError, match="built from another export or precision"):
            runtime.retrieve("a red circle", index=other)


def test_cli_index_then_retrieve(tiny_export, gallery, tmp_path):
    from typer.testing import CliRunner

    from bt_runtime.cli import app

    files = sorted(gallery.iterdir())[:20]
    (tmp_path / "list.txt").write_text("\n".join(str(f) for f in files))
    run = CliRunner().invoke(app, ["index", str(tiny_export), "--list", str(tmp_path / "list.txt"),
                                   "-o", str(tmp_path / "index")])
    assert run.exit_code == 0, run.output
    assert json.loads(run.stdout)["images"] == 20
    hits = CliRunner().invoke(app, ["retrieve", str(tiny_export), "--query", "a blue square", "--index",
                                    str(tmp_path / "index"), "--top-k", "3", "--rerank", "5"])
    assert hits.exit_code == 0, hits.output
    assert [h["image"] in {str(f) for f in files} for h in json.loads(hits.stdout)] == [True] * 3
