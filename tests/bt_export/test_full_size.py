"""Full-size base architecture (random init): the export CI runs once, behind the `slow` marker."""

from __future__ import annotations

import pytest

from bt_export.specs import FP32_TOLERANCES, VARIANT_BOUNDS
from bt_runtime.manifest import read_manifest

pytestmark = pytest.mark.slow


def test_full_size_base_export_passes_parity(base_export):
    data = read_manifest(base_export).data
    assert data["config"]["num_image_tokens"] == 325 and data["config"]["hidden_size"] == 768
    assert data["checkpoint"]["heads"] == ["itm", "mlm"]
    rows = data["variants"]["fp32"]["parity"]["rows"]
    for row in rows:
        print(f"{row['check']:<50} {row['output']:<14} {row['value']:.3g}")
        assert row["passed"] and row["value"] <= FP32_TOLERANCES[row["output"]]
    e2e = {r["output"] for r in rows if r["check"].startswith("e2e:")}
    assert e2e == {"pooler_output", "itm_logits", "mlm_logits"}


def test_full_size_base_has_48_fused_attention_nodes_in_every_variant(base_export):
    variants = read_manifest(base_export).data["variants"]
    assert set(variants) == {"fp32", "fp16", "int8"}
    for precision, variant in variants.items():
        counts = variant["fused_attention_nodes"]
        assert {g: c["Attention"] for g, c in counts.items()} == {
            "vision_tower": 12, "text_tower": 12, "cross_modal": 24}, precision  # 12 + 12 + 6 × 4 = 48
        assert all(c["Softmax"] == 0 for c in counts.values()), precision


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_full_size_reduced_precision_task_parity(base_export, precision):
    parity = read_manifest(base_export).data["variants"][precision]["parity"]
    assert len(parity["inputs"]["texts"]) == 16  # 4 real photos × 4 captions
    metrics = {row["metric"]: row for row in parity["rows"]}
    assert set(metrics) == {"itm_probability_abs", "itm_decision_agreement", "mlm_top1_agreement"}
    for row in parity["rows"]:
        print(precision, row["metric"], row["value"])
        assert row["passed"] and row["bound"] == VARIANT_BOUNDS[precision][row["metric"]]


def test_full_size_portable_graphs_pass_the_tensorrt_lint(base_export):
    from bt_export.trt_lint import lint_export

    results = lint_export(base_export)
    assert results["fp32"] == [] and results["fp16"] == []
