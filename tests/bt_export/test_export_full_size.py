"""Full-size base architecture (random init): the export CI runs once, behind the `slow` marker. Every assertion
holds on any x86-64 CPU: int8 is judged on the CPU that runs the suite and recorded either way."""

from __future__ import annotations

import pytest

from bt_export.specs import FP32_TOLERANCES, VARIANT_BOUNDS
from bt_runtime.cpu import isa_class
from bt_runtime.manifest import read_manifest

pytestmark = pytest.mark.slow


def test_full_size_base_export_passes_parity(base_export):
    manifest = read_manifest(base_export)
    assert manifest.config.num_image_tokens == 325 and manifest.config.hidden_size == 768
    assert manifest.checkpoint.heads == ["itm", "mlm"]
    rows = manifest.variants["fp32"].parity.rows
    for row in rows:
        print(f"{row['check']:<50} {row['output']:<14} {row['value']:.3g}")
        assert row["passed"] and row["value"] <= row["bound"] <= FP32_TOLERANCES[row["output"]]
    e2e = {r["output"] for r in rows if r["check"].startswith("e2e:")}
    assert e2e == {"pooler_output", "itm_logits", "mlm_logits"}
    assert any(r["check"] == "runtime:itm_scores" for r in rows)  # loaded by bt_runtime before the commit


def test_full_size_base_has_one_fused_attention_node_per_attention_in_every_variant(base_export):
    variants = read_manifest(base_export).variants
    assert {"fp32", "fp16"} <= set(variants)
    for precision, variant in variants.items():
        counts = variant.fused_attention_nodes
        assert {g: c["Attention"] for g, c in counts.items()} == {
            "vision_tower": 12, "text_tower": 12, "cross_modal": 24,  # 12 + 12 + 6 × 4 = 48
            "cross_modal_pooled": 24}, precision  # the head-specific graph: the same attentions
        assert all(c["Softmax"] == 0 for c in counts.values()), precision


def _metrics(parity) -> dict:
    assert len(parity.inputs["texts"]) == 16  # 4 real photos × 4 captions
    metrics = {row["metric"]: row for row in parity.rows}
    assert set(metrics) == {"itm_probability_abs", "itm_decision_agreement", "mlm_top1_agreement"}
    for row in parity.rows:
        print(row["metric"], row["value"], row["bound"])
    return metrics


def test_full_size_fp16_task_parity(base_export):
    for row in _metrics(read_manifest(base_export).variants["fp16"].parity).values():
        assert row["passed"] and row["bound"] == VARIANT_BOUNDS["fp16"][row["metric"]]


def test_full_size_int8_is_judged_on_this_cpu_and_recorded_either_way(base_export):
    """Random weights put the MLM top-1 bound out of reach on some CPUs (docs/export.md, "int8 on every CPU"): the
    variant is then left out and recorded as rejected, with its rows; the ITM probability it serves stays in bound."""
    manifest = read_manifest(base_export)
    if "int8" in manifest.variants:
        variant = manifest.variants["int8"]
        assert variant.validated_isa == isa_class() and variant.parity.passed
        parity = variant.parity
    else:
        rejected = manifest.rejected_variants["int8"]
        assert isa_class() in rejected.reason and rejected.parity.passed is False
        assert not list(base_export.glob("*.int8.onnx*"))  # nor their weights
        parity = rejected.parity
    metrics = _metrics(parity)
    for row in metrics.values():
        assert row["bound"] == VARIANT_BOUNDS["int8"][row["metric"]]
    assert metrics["itm_probability_abs"]["passed"] and metrics["itm_decision_agreement"]["passed"]


def test_full_size_portable_graphs_pass_the_tensorrt_lint(base_export):
    from bt_export.trt_lint import lint_export

    results = lint_export(base_export)
    assert results["fp32"] == [] and results["fp16"] == []
