"""The accuracy tests' export: the shipped shapes checkpoint when its weights are in the tree, else `tiny` (random
weights: the pipeline runs, the trained-model bars skip). Made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

SHAPES_WEIGHTS = Path(__file__).resolve().parents[2] / "bt_export" / "assets" / "shapes"


def shapes_weights_present() -> bool:
    return SHAPES_WEIGHTS.is_dir() and any(SHAPES_WEIGHTS.glob("*.safetensors"))


@pytest.fixture(scope="session")
def accuracy_export(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    from bt_export import export_checkpoint
    from bt_export.errors import VariantsRejected

    checkpoint = "shapes" if shapes_weights_present() else "tiny"
    out = tmp_path_factory.mktemp("exports") / checkpoint
    try:
        export_checkpoint(checkpoint, out, precisions=("fp32", "fp16", "int8"))
    except VariantsRejected:  # written without them; the tests run the precisions that passed, and say so
        pass
    return out
