"""Shared fixtures. Real test data lives in ../shared/assets (relative to the repo root); tests that need it skip
cleanly when it is absent."""

from __future__ import annotations

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
        pytest.skip(f"shared test assets not found at {SHARED_ASSETS}")
    return SHARED_ASSETS


@pytest.fixture(scope="session")
def photos_dir(assets) -> Path:
    return assets / "images"


@pytest.fixture(scope="session")
def roberta_dir(assets) -> Path:
    return assets / "roberta-base"


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory) -> Path:
    """One offline `tiny` export shared by the tests that only read it (real photos for parity when present)."""
    pytest.importorskip("torch")
    from bt_export import export_checkpoint

    images = [SHARED_ASSETS / "images"] if SHARED_ASSETS.is_dir() else None
    out = tmp_path_factory.mktemp("exports") / "tiny"
    export_checkpoint("tiny", out, parity_images=images)
    return out


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
    except VariantsRejected as rejected:  # written without them; tests/bt_export/test_full_size.py looks at why
        result = rejected.result
    print(f"\nfull-size base-itm-mlm export: {time.perf_counter() - started:.1f} s, {result.disk_bytes / 1e6:.0f} MB")
    return out
