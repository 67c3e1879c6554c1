"""Shared fixtures. Real test data lives in ../shared/assets (relative to the repo root); tests that need it skip
cleanly when it is absent."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_ASSETS = REPO_ROOT.parent / "shared" / "assets"


@pytest.fixture(scope="session", autouse=True)
def digest_cache(tmp_path_factory):
    """The verified-digest cache of this test session, never the user's (bt_runtime.digests); subprocesses the
    tests start inherit it."""
    import os

    path = tmp_path_factory.mktemp("digests") / "verified-digests.json"
    previous = os.environ.get("BT_DIGEST_CACHE")
    os.environ["BT_DIGEST_CACHE"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("BT_DIGEST_CACHE", None)
    else:
        os.environ["BT_DIGEST_CACHE"] = previous


@pytest.fixture(scope="session")
def assets() -> Path:
    if not SHARED_ASSETS.is_dir():
        if os.environ.get("BT_REQUIRE_ASSETS"):  # CI where the assets exist: ~90 tests must not skip unnoticed
            pytest.fail(f"shared test assets not found at {SHARED_ASSETS} (BT_REQUIRE_ASSETS is set)")
        pytest.skip(f"shared test assets not found at {SHARED_ASSETS}")
    return SHARED_ASSETS


@pytest.fixture(scope="session")
def photos_dir(assets) -> Path:
    return assets / "images"


@pytest.fixture(scope="session")
def roberta_dir(assets) -> Path:
    return assets / "roberta-base"


CANONICAL_PRECISIONS = ("fp32", "fp16", "int8")  # the order an export records them in


@pytest.fixture(scope="session")
def tiny_exports(tmp_path_factory):
    """Offline `tiny` exports made once per session and shared, keyed by (attention, precisions): call
    `tiny_exports(attention="ort", precisions=("fp32", "int8"))` for its ExportResult. Real photos for parity when
    present. Shared exports are read only: a test that changes one works on a copy (`export_copy`)."""
    pytest.importorskip("torch")
    from bt_export import export_checkpoint

    cache = {}

    def get(attention: str = "onnx", precisions: tuple[str, ...] = ("fp32",)):
        key = (attention, tuple(p for p in CANONICAL_PRECISIONS if p in precisions))
        if key not in cache:
            images = [SHARED_ASSETS / "images"] if SHARED_ASSETS.is_dir() else None
            out = tmp_path_factory.mktemp("exports") / f"tiny-{attention}-{'-'.join(key[1])}"
            cache[key] = export_checkpoint("tiny", out, attention=attention, precisions=key[1], parity_images=images)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def tiny_export(tiny_exports) -> Path:
    """The default `tiny` export (ONNX Attention, fp32), shared by the tests that only read it."""
    return tiny_exports().output


@pytest.fixture(scope="session")
def portable_export(tiny_exports) -> Path:
    """The tiny export in every precision, ONNX Attention (the graphs TensorRT parses): shared by the TensorRT lint,
    engine-build and precision tests."""
    return tiny_exports(precisions=CANONICAL_PRECISIONS).output


@pytest.fixture
def export_copy(tiny_export, tmp_path) -> Path:
    """A private copy of the default tiny export, for tests that change or damage it."""
    import shutil

    return shutil.copytree(tiny_export, tmp_path / "copy")


def manifest_data(directory: Path) -> dict:
    """The raw JSON of `directory/manifest.json` (for tests that edit it as a third party would)."""
    import json

    return json.loads((directory / "manifest.json").read_text())


def write_manifest_data(directory: Path, data: dict) -> None:
    import json

    (directory / "manifest.json").write_text(json.dumps(data))


def edit_manifest(directory: Path, edit) -> None:
    """Apply `edit(data)` to the raw JSON of `directory/manifest.json` in place."""
    data = manifest_data(directory)
    edit(data)
    write_manifest_data(directory, data)


@pytest.fixture(scope="session")
def base_export(tmp_path_factory):
    """Full-size base-itm-mlm architecture, random init, fp32 + fp16 + int8 (slow: ~5 min, 2.6 GB). Real tokenizer
    and photos if present. A reduced precision that misses its bounds on this CPU is left out (and recorded)."""
    pytest.importorskip("torch")
    import time

    from bt_export import export_checkpoint

    roberta = SHARED_ASSETS / "roberta-base"
    images = [SHARED_ASSETS / "images"] if SHARED_ASSETS.is_dir() else None
    out = tmp_path_factory.mktemp("exports") / "base-itm-mlm"
    from bt_export.errors import VariantsRejected

    started = time.perf_counter()
    try:
        result = export_checkpoint("base-itm-mlm", out, random_init=True, parity_images=images,
                                   tokenizer=roberta if roberta.is_dir() else None,
                                   precisions=("fp32", "fp16", "int8"))
    except VariantsRejected as rejected:  # written without them; tests/bt_export/test_export_full_size.py looks at why
        result = rejected.result
    print(f"\nfull-size base-itm-mlm export: {time.perf_counter() - started:.1f} s, {result.disk_bytes / 1e6:.0f} MB")
    return out


@pytest.fixture
def mode_bits_access(monkeypatch):
    """os.access answers W_OK as the owner's mode bits say, also for root (CI runs as root, who may write anywhere):
    the "is not writable" checks are then tested everywhere instead of skipped."""
    if os.geteuid() == 0:
        real = os.access
        monkeypatch.setattr(os, "access", lambda path, mode, **kw: real(path, mode, **kw) and not (
            mode & os.W_OK and not os.stat(path).st_mode & stat.S_IWUSR))
