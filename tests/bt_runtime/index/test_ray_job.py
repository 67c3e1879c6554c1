"""The Ray Data index job against the in-process one: same shards row for row, every input exactly once when an
actor dies mid-job, a corrupt image an error row. One local Ray (conftest.local_ray) for the module."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bt_runtime import BridgeTowerRuntime
from bt_runtime.errors import BtRuntimeError
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


@pytest.mark.parametrize("options, resources, says", [
    (RayOptions(workers=2, cpus_per_worker=1.0), {"CPU": 2.0},
     r"2.5 CPUs at once \(--workers 2 × --cpus-per-worker 1, \+ 0.5 for decoding\), the Ray has 2"),
    (RayOptions(workers=1, cpus_per_worker=1.0, gpus_per_worker=1.0), {"CPU": 8.0},
     r"^1 GPUs at once \(--workers 1 × 1 GPU each\), the Ray has 0$"),
    (RayOptions(workers=2, cpus_per_worker=0.5), {"CPU": 2.0}, None),  # the tests' own pool: exactly full
])
def test_what_the_actor_pool_holds_is_compared_with_the_ray(options, resources, says):
    why = ray_job.shortfall(options, resources)
    assert why is None if says is None else re.search(says, why)


def test_a_pool_larger_than_a_known_ray_is_refused_and_a_cluster_is_warned():
    """A 2-core node with 2 actors × 1 CPU waited forever (the decode tasks' 0.5 CPU never free), no error."""
    options = RayOptions(workers=2, cpus_per_worker=1.0)
    with pytest.raises(BtRuntimeError, match=r"--ray auto: the job needs 2.5 CPUs .* would wait for them forever; "
                                             r"lower --workers or --cpus-per-worker"):
        ray_job.check_resources(options, {"CPU": 2.0}, fixed=True)
    said = []
    ray_job.check_resources(options, {"CPU": 2.0}, fixed=False, log=said.append)  # an autoscaler may add nodes
    assert len(said) == 1 and said[0].startswith("warning: the job needs 2.5 CPUs")


def test_bt_run_index_on_a_local_ray_too_small_for_the_pool_exits_before_touching_the_output(
        tiny_export, gallery, tmp_path):
    """Through the CLI, in its own process (it starts its own local Ray): refused in one line, exit 2, before the
    output is made, or, with --overwrite over another job, before that job's shards are deleted. A timeout, not a
    hang, if the check is missing."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}

    def index(output, *extra):
        command = [sys.executable, "-c", "from bt_runtime.cli import app; app()", "index", str(tiny_export),
                   "--images", str(gallery), "-o", str(output), "--ray", "auto", "--workers", "512", *extra]
        result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
        assert result.returncode == 2, result.stdout + result.stderr
        said = " ".join((result.stdout + result.stderr).split())
        assert "the job needs 512.5 CPUs at once" in said and "Traceback" not in said

    index(tmp_path / "new")
    assert not (tmp_path / "new").exists()
    previous = tmp_path / "previous"
    listed = [str(p) for p in sorted(gallery.iterdir())[:3]]
    (tmp_path / "list.txt").write_text("\n".join(listed))
    index_images(BridgeTowerRuntime.load(tiny_export), tiny_export, from_arguments(None, str(tmp_path / "list.txt"),
                                                                                   None), previous)
    before = sorted(p.name for p in previous.iterdir())
    index(previous, "--overwrite", "--shard-size", "7")  # another job: --overwrite would delete the first one's
    assert sorted(p.name for p in previous.iterdir()) == before
