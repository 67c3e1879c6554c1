"""bt_runtime.backends.trt_build on CPU: the build plan for TensorRT 10 and 11, the manifest's tensorrt section, and
`bt-run build-engines` without TensorRT. The GPU test (marked gpu) builds engines; it skips without tensorrt and a
GPU."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from bt_runtime import read_manifest
from bt_runtime.backends.trt_build import build_plan, write_tensorrt_section
from bt_runtime.errors import BackendError, BackendInputError
from bt_runtime.manifest import EngineFile, TensorRTEngines


def _manifest(variants):
    """The part of a typed manifest that build_plan reads."""
    from types import SimpleNamespace as Fields

    graphs = ("vision_tower", "text_tower", "cross_modal")
    return Fields(graphs={g: None for g in graphs},
                  variants={p: Fields(attention="onnx", files={g: Fields(file=f"{g}.{p}.onnx") for g in graphs})
                            for p in variants})


def test_build_plan_tensorrt_10_uses_builder_flags_on_the_fp32_graph():
    plan = build_plan(_manifest(["fp32", "fp16"]), "fp16", "10.14.1")
    assert plan["text_tower"] == {"onnx": "text_tower.fp32.onnx", "strongly_typed": False,
                                  "builder_flags": ["FP16"], "engine": "text_tower.fp16.engine"}
    assert build_plan(_manifest(["fp32"]), "bf16", "10.15.0")["vision_tower"]["builder_flags"] == ["BF16"]


def test_build_plan_tensorrt_11_is_strongly_typed_on_the_fp16_graph():
    plan = build_plan(_manifest(["fp32", "fp16"]), "fp16", "11.0.0")
    assert plan["cross_modal"]["onnx"] == "cross_modal.fp16.onnx"
    assert plan["cross_modal"]["strongly_typed"] and plan["cross_modal"]["builder_flags"] == []
    with pytest.raises(BackendInputError, match="re-export with --precision fp32,fp16"):
        build_plan(_manifest(["fp32"]), "fp16", "11.1.0")
    with pytest.raises(BackendInputError, match="needs a bf16 ONNX variant"):
        build_plan(_manifest(["fp32"]), "bf16", "11.1.0")


def test_build_plan_refuses_old_tensorrt_unfused_graphs_and_unknown_precision():
    with pytest.raises(BackendError, match="too old"):
        build_plan(_manifest(["fp32"]), "fp16", "8.6.1")
    unfused = _manifest(["fp32"])
    unfused.variants["fp32"].attention = "none"
    with pytest.raises(BackendInputError, match="--attention onnx"):
        build_plan(unfused, "fp16", "10.14.0")
    with pytest.raises(BackendInputError, match="TensorRT precision 'int4'"):
        build_plan(_manifest(["fp32"]), "int4", "10.14.0")


def test_tensorrt_section_round_trips_through_the_manifest(portable_export, tmp_path):
    copy = shutil.copytree(portable_export, tmp_path / "copy")
    section = TensorRTEngines(version="10.14.1", gpu="NVIDIA H100", compute_capability="9.0", precision="fp16",
                              strongly_typed=False, profiles={"batch": [1, 8, 32]}, workspace_gib=None,
                              timing_cache="tensorrt.timing_cache",
                              engines={"vision_tower": EngineFile("vision_tower.fp16.engine", "0" * 64,
                                                                  "vision_tower.onnx")})
    write_tensorrt_section(copy, "fp16", section)
    assert read_manifest(copy).tensorrt["fp16"] == section
    assert not list(copy.glob(".*partial"))
    assert json.loads((copy / "manifest.json").read_text())["variants"]  # the rest is intact


def _gpu_with_tensorrt():
    try:
        import tensorrt  # noqa: F401

        from bt_runtime.backends.tensorrt import gpu_identity

        gpu_identity()
        return True
    except Exception:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_with_tensorrt(), reason="needs the tensorrt package and a CUDA GPU")
def test_gpu_engines_build_and_match_eager(portable_export, tmp_path, photos_dir):
    from bt_export.eager import EagerBridgeTower
    from bt_export.specs import VARIANT_BOUNDS
    from bt_runtime import BridgeTowerRuntime
    from bt_runtime.backends.trt_build import build_engines

    copy = shutil.copytree(portable_export, tmp_path / "copy")
    build_engines(copy, "fp16", batch=(1, 4, 8), seq=(4, 16, 64))
    runtime = BridgeTowerRuntime.load(copy, backend="tensorrt", precision="fp16")
    photos = sorted(photos_dir.iterdir())
    texts = ["two cats on a couch", "a football player scoring a goal"]
    eager = EagerBridgeTower("tiny", copy)
    from PIL import Image

    expected = np.array([[eager.itm_probability(Image.open(p), t) for t in texts] for p in photos])
    assert np.abs(runtime.itm_matrix(photos, texts) - expected).max() <= VARIANT_BOUNDS["fp16"]["itm_probability_abs"]
    assert runtime.fill_mask(photos[0], "a <mask> on a couch").masks
    assert runtime.embed_images(photos).shape == (len(photos), 32)
    assert runtime.retrieve("two cats", photos, top_k=2)


def test_bt_run_build_engines_says_what_it_needs_without_tensorrt(portable_export):
    """Engines are built where they run: `bt-run build-engines` (no torch). Without TensorRT it fails with the
    install hint, exit 2, before touching the export."""
    import importlib.util

    from typer.testing import CliRunner

    from bt_runtime.cli import app

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    before = (portable_export / "manifest.json").read_bytes()
    result = CliRunner().invoke(app, ["build-engines", str(portable_export), "--precision", "fp16"])
    assert result.exit_code == 2 and "needs TensorRT" in result.output
    assert (portable_export / "manifest.json").read_bytes() == before
    bad = CliRunner().invoke(app, ["build-engines", str(portable_export), "--batch", "8,1,32"])
    assert bad.exit_code == 2 and "--batch" in bad.output
