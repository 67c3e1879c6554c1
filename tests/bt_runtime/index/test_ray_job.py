"""The Ray Data index job against the in-process one: same shards row for row, every input exactly once when an
actor dies mid-job, a corrupt image an error row. One local Ray (conftest.local_ray) for the module."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from bt_runtime.index import ray_job, shards
from bt_runtime.index.inputs import from_arguments
from bt_runtime.index.job import index_images
from bt_runtime.index.ray_job import Embedder, RayOptions

pytest.importorskip("ray")
pytest.importorskip("faiss")

# 2 actors × 0.5 CPU + preprocessing tasks × 0.5 CPU fit the 2 CPUs of the test's Ray
TWO_ACTORS = RayOptions(workers=2, cpus_per_worker=0.5, preprocess_cpus=0.5)


@pytest.fixture(scope="module")
def local_job(runtime, tiny_export, gallery, tmp_path_factory):
    output = tmp_path_factory.mktemp("local") / "index"
    index_images(runtime, tiny_export, from_arguments([str(gallery)], None, None), output, shard_size=64)
    return shards.read_shards(output)


def _check_equal(table, expected) -> None:
    assert table.column("id").to_pylist() == expected.column("id").to_pylist()
    assert table.column("source").to_pylist() == expected.column("source").to_pylist()
    assert table.column("error").to_pylist() == expected.column("error").to_pylist()
    rows, got = shards.embeddings_of(table)
    want_rows, want = shards.embeddings_of(expected)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_ray_job_equals_in_process_row_for_row(local_ray, runtime, tiny_export, gallery, local_job, tmp_path):
    output = tmp_path / "index"
    summary = index_images(runtime, tiny_export, from_arguments([str(gallery)], None, None), output, shard_size=64,
                           ray=TWO_ACTORS)
    _check_equal(shards.read_shards(output), local_job)
    errors = [e for e in local_job.column("error").to_pylist() if e]
    assert summary["errors"] == 1 and len(errors) == 1 and "shape_corrupt.png" in errors[0]
    assert local_job.num_rows == len(list(gallery.iterdir()))


def dies_once(marker: Path) -> type:
    """An Embedder that kills its own process on its first batch, once per job (the marker file remembers), as an
    OOM kill would. Defined in a function so that Ray ships the class, marker included, by value."""

    class DiesOnce(Embedder):
        def __call__(self, batch):
            if not marker.exists():
                marker.write_text(str(os.getpid()))
                os._exit(1)
            return super().__call__(batch)

    return DiesOnce


def test_a_killed_actor_is_restarted_and_every_image_is_written_once(local_ray, runtime, tiny_export, gallery,
                                                                     local_job, tmp_path):
    marker = tmp_path / "died"
    listed = sorted(str(p) for p in gallery.iterdir())[:96]  # a subset: the property needs no more
    (tmp_path / "list.txt").write_text("\n".join(listed))
    job_inputs = from_arguments(None, str(tmp_path / "list.txt"), None)
    job = shards.Job(shards.JOB_FORMAT, "--list", job_inputs.fingerprint(), len(job_inputs.ids), 32, "fp32",
                     shards.towers_sha256(runtime, "fp32"), runtime.manifest.config.contrastive_hidden_size)
    output = tmp_path / "index"
    pending = shards.open_job(output, job)
    ray_job.run(tiny_export, runtime, job_inputs, job, output, pending, 16, "cpu",
                RayOptions(workers=1, cpus_per_worker=1.0, preprocess_cpus=0.5), embedder=dies_once(marker))
    assert marker.exists()  # an actor did die
    table = shards.read_shards(output, job)
    assert table.column("id").to_pylist() == job_inputs.ids == listed  # each exactly once, in order
    position = {image_id: k for k, image_id in enumerate(local_job.column("id").to_pylist())}
    expected = local_job.take([position[i] for i in listed])
    _check_equal(table, expected)
