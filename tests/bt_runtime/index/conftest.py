"""Fixtures of the index tests: a few hundred generated images (bt_export.shapes) with one corrupt file, and one
local Ray for the whole module set (Ray takes seconds to start: docs/scale.md)."""

from __future__ import annotations

import pytest

GALLERY_SIZE = 300


@pytest.fixture(scope="session")
def gallery(tmp_path_factory):
    from bt_export.shapes.data import make_samples

    folder = tmp_path_factory.mktemp("gallery")
    for sample in make_samples(7, GALLERY_SIZE - 1, image_size=32):
        sample.image.save(folder / f"shape{sample.index:04d}.png")
    (folder / "shape_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return folder


@pytest.fixture(scope="session")
def runtime(tiny_export):
    from bt_runtime import BridgeTowerRuntime

    with BridgeTowerRuntime.load(tiny_export) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray bound to loopback, 2 CPUs, no dashboard; shut down after the tests."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("pyarrow")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             object_store_memory=256 * 2**20)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()
