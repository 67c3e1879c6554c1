"""bt_export.precision: fp16 and int8 variants written beside fp32, judged in task terms, served by the runtime; a
variant that fails its checks is left out and recorded, not fatal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from bt_export.export import export_checkpoint
from bt_export.fused import count_attention
from bt_export.precision import INT8_EXCLUDED
from bt_export.specs import VARIANT_BOUNDS
from bt_runtime import BridgeTowerRuntime, ManifestError, read_manifest
from bt_runtime.cpu import isa_class

from .graph_edits import flip_itm_head


@pytest.fixture(scope="module")
def all_precisions(portable_export, photos_dir) -> Path:  # photos_dir: parity on the real photos (skips without)
    return portable_export


def test_precision_variants_are_written_side_by_side_and_pass(all_precisions):
    manifest = read_manifest(all_precisions)
    assert manifest.precisions == ("fp32", "fp16", "int8")
    for precision in ("fp16", "int8"):
        variant = manifest.variants[precision]
        assert variant.files["vision_tower"].file == f"vision_tower.{precision}.onnx"
        rows = variant.parity.rows
        assert {r["metric"] for r in rows} == set(VARIANT_BOUNDS[precision])
        assert all(r["passed"] and r["bound"] == VARIANT_BOUNDS[precision][r["metric"]] for r in rows)
        assert len(variant.parity.inputs["texts"]) == 16  # 4 photos × 4 captions
    assert manifest.variants["int8"].validated_isa == isa_class() and manifest.variants["fp16"].validated_isa is None
    graph = onnx.load(str(all_precisions / "vision_tower.fp16.onnx"))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.graph.initializer)
    assert all(a.i == onnx.TensorProto.FLOAT for n in graph.graph.node if n.op_type == "Attention"
               for a in n.attribute if a.name == "softmax_precision")
    quantized = onnx.load(str(all_precisions / "vision_tower.int8.onnx"))
    assert count_attention(quantized)["Attention"] == 3
    assert any(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in quantized.graph.node)
    int8 = manifest.variants["int8"]
    # measured default: vision tower quantized; text tower and cross-modal stack share their fp32 files
    assert int8.details["excluded_patterns"] == list(INT8_EXCLUDED)
    assert {g: e.file for g, e in int8.files.items()} == {
        "vision_tower": "vision_tower.int8.onnx", "text_tower": "text_tower.onnx", "cross_modal": "cross_modal.onnx",
        "cross_modal_pooled": "cross_modal_pooled.onnx"}  # `^cross_modal/` keeps the pooled form float32 too
    # 3 layers × (in_proj, out_proj, c_fc, c_proj) + 2 bridge transforms + the ITC image head
    assert int8.details["graphs"]["vision_tower"] == {"quantized_nodes": 15, "excluded_nodes": 0}


@pytest.mark.parametrize("precision,bound", [("fp16", VARIANT_BOUNDS["fp16"]["itm_probability_abs"]),
                                             ("int8", VARIANT_BOUNDS["int8"]["itm_probability_abs"])])
def test_runtime_serves_every_precision(all_precisions, photos_dir, precision, bound):
    photos = sorted(photos_dir.iterdir())
    texts = ["two cats on a couch", "a football player"]
    fp32 = BridgeTowerRuntime.load(all_precisions).itm_matrix(photos, texts)
    reduced = BridgeTowerRuntime.load(all_precisions, precision=precision).itm_matrix(photos, texts)
    assert np.abs(reduced - fp32).max() <= bound


def test_everything_quantized_on_request_and_a_broken_variant_is_rejected_not_fatal(tmp_path, monkeypatch):
    """int8 of every graph (int8_excluded=()), then the ITM head's scale flipped: its checks must fail, the int8
    variant is left out and recorded as rejected, and fp32 is still written."""
    from bt_export import precision as precision_module
    from bt_export.errors import VariantsRejected

    real = precision_module.write_int8

    def broken(src, dst, graph, excluded_patterns):
        details = real(src, dst, graph, excluded_patterns)
        flip_itm_head(dst)
        return details

    monkeypatch.setattr(precision_module, "write_int8", broken)
    with pytest.raises(VariantsRejected, match=r"\['int8'\]"):
        export_checkpoint("tiny", tmp_path / "t", precisions=("fp32", "int8"), int8_excluded=())
    manifest = read_manifest(tmp_path / "t")
    assert manifest.precisions == ("fp32",) and manifest.variants["fp32"].parity.passed
    rejected = manifest.rejected_variants["int8"]
    assert "e2e:BridgeTowerForImageAndTextRetrieval.logits" in rejected.reason and rejected.parity.passed is False
    assert not list((tmp_path / "t").glob("*.int8.onnx*"))  # the rejected files (weights too) are not left behind
    with pytest.raises(ManifestError, match="rejected at export"):
        BridgeTowerRuntime.load(tmp_path / "t", precision="int8")
    monkeypatch.setattr(precision_module, "write_int8", real)
    result = export_checkpoint("tiny", tmp_path / "u", precisions=("int8",), int8_excluded=(), validate=False)
    assert {e.file for e in result.manifest.variants["int8"].files.values()} == {
        "vision_tower.int8.onnx", "text_tower.int8.onnx", "cross_modal.int8.onnx", "cross_modal_pooled.int8.onnx"}
