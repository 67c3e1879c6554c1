"""Fused attention: exactly one fused node per attention, no Softmax left, parity unchanged; precision variants."""

from __future__ import annotations

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

# one per tower layer; 4 per cross layer (the pooled graph's last layer too: its queries are the class positions)
TINY_ATTENTIONS = {"vision_tower": 3, "text_tower": 3, "cross_modal": 2 * 4, "cross_modal_pooled": 2 * 4}


@pytest.fixture(scope="module")
def exports(tiny_exports):
    return {mode: tiny_exports(attention=mode, precisions=("fp32", "int8") if mode == "ort" else ("fp32",))
            for mode in ("none", "ort")}


def test_onnx_attention_is_the_default_with_single_output_nodes(tiny_export):
    variant = read_manifest(tiny_export).variants["fp32"]
    assert variant.attention == "onnx"
    for graph, expected in TINY_ATTENTIONS.items():
        assert variant.fused_attention_nodes[graph] == {"Attention": expected, "MultiHeadAttention": 0, "Softmax": 0}
        model = onnx.load(str(tiny_export / f"{graph}.onnx"))
        nodes = [n for n in model.graph.node if n.op_type == "Attention"]
        assert all(len(n.output) == 1 for n in nodes)  # TensorRT parses single-output Attention only
        masked = [n for n in nodes if len(n.input) == 4]
        # text padding masks: text self-attention, and image→text cross-attention; never on image keys
        assert len(masked) == {"vision_tower": 0, "text_tower": 3, "cross_modal": 4, "cross_modal_pooled": 4}[graph]


def test_ort_mode_uses_multihead_attention_and_none_mode_is_unfused(exports):
    ort_counts = exports["ort"].manifest.variants["fp32"].fused_attention_nodes
    none_counts = exports["none"].manifest.variants["fp32"].fused_attention_nodes
    assert all(entry.contrib_ops for entry in exports["ort"].manifest.variants["fp32"].files.values())
    for graph, expected in TINY_ATTENTIONS.items():
        assert ort_counts[graph] == {"Attention": 0, "MultiHeadAttention": expected, "Softmax": 0}
        assert none_counts[graph] == {"Attention": 0, "MultiHeadAttention": 0, "Softmax": expected}
    for result in exports.values():
        assert all(row.passed for row in result.parity["fp32"])


def test_int8_quantizes_through_contrib_attention(exports):
    """The quantizer cannot type com.microsoft outputs by shape inference; it used to stop with "Unable to find
    data type for weight_name" (DefaultTensorType fixes it)."""
    manifest = read_manifest(exports["ort"].output)
    assert "int8" in manifest.variants or "int8" in manifest.rejected_variants
    model = onnx.load(str(exports["ort"].output / "vision_tower.int8.onnx")) if "int8" in manifest.variants else None
    if model is not None:
        ops = {n.op_type for n in model.graph.node}
        assert "MultiHeadAttention" in ops and ops & {"MatMulInteger", "DynamicQuantizeMatMul"}


def test_fused_and_unfused_exports_score_alike(tiny_export, exports, photos_dir):
    photos = sorted(photos_dir.iterdir())
    texts = ["two cats on a couch", "a football player"]
    reference = BridgeTowerRuntime.load(exports["none"].output).itm_matrix(photos, texts)
    for directory in (tiny_export, exports["ort"].output):
        np.testing.assert_allclose(BridgeTowerRuntime.load(directory).itm_matrix(photos, texts), reference, atol=1e-5)


@pytest.fixture(scope="module")
def all_precisions(tiny_exports, photos_dir):  # photos_dir: parity on the real photos (skips without them)
    return tiny_exports(precisions=("int8", "fp16", "fp32"))


def test_precision_variants_are_written_side_by_side_and_pass(all_precisions):
    manifest = read_manifest(all_precisions.output)
    assert manifest.precisions == ("fp32", "fp16", "int8")
    for precision in ("fp16", "int8"):
        variant = manifest.variants[precision]
        assert variant.files["vision_tower"].file == f"vision_tower.{precision}.onnx"
        rows = variant.parity.rows
        assert {r["metric"] for r in rows} == set(VARIANT_BOUNDS[precision])
        assert all(r["passed"] and r["bound"] == VARIANT_BOUNDS[precision][r["metric"]] for r in rows)
        assert len(variant.parity.inputs["texts"]) == 16  # 4 photos × 4 captions
    assert manifest.variants["int8"].validated_isa == isa_class() and manifest.variants["fp16"].validated_isa is None
    graph = onnx.load(str(all_precisions.output / "vision_tower.fp16.onnx"))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.graph.initializer)
    assert all(a.i == onnx.TensorProto.FLOAT for n in graph.graph.node if n.op_type == "Attention"
               for a in n.attribute if a.name == "softmax_precision")
    quantized = onnx.load(str(all_precisions.output / "vision_tower.int8.onnx"))
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
    fp32 = BridgeTowerRuntime.load(all_precisions.output).itm_matrix(photos, texts)
    reduced = BridgeTowerRuntime.load(all_precisions.output, precision=precision).itm_matrix(photos, texts)
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
