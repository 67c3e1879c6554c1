"""bt_export.fused: exactly one fused attention node per attention, no Softmax left, parity unchanged (precision
variants: test_precision.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from bt_export.specs import SAME_MATH_ABS
from bt_runtime import BridgeTowerRuntime, read_manifest

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
        np.testing.assert_allclose(BridgeTowerRuntime.load(directory).itm_matrix(photos, texts), reference,
                                   atol=SAME_MATH_ABS)
