"""Full-size base architecture (random init): the export CI runs once, behind the `slow` marker."""

from __future__ import annotations

import pytest

from bt_export.specs import FP32_TOLERANCES
from bt_runtime.manifest import read_manifest

pytestmark = pytest.mark.slow


def test_full_size_base_export_passes_parity(base_export):
    data = read_manifest(base_export).data
    assert data["config"]["num_image_tokens"] == 325 and data["config"]["hidden_size"] == 768
    assert data["checkpoint"]["heads"] == ["itm", "mlm"]
    rows = data["variants"]["fp32"]["parity"]["rows"]
    for row in rows:
        print(f"{row['check']:<50} {row['output']:<14} {row['max_abs_diff']:.3g}")
        assert row["passed"] and row["max_abs_diff"] <= FP32_TOLERANCES[row["output"]]
    e2e = {r["output"] for r in rows if r["check"].startswith("e2e:")}
    assert e2e == {"pooler_output", "itm_logits", "mlm_logits"}
