"""The Node example (examples/node, onnxruntime-node) reproduces the tiny export's golden vectors — graph outputs,
mlm_logits at the mask, the pooled substitute — and, in plain JavaScript, the preprocessing of the golden image and
of the golden input suite (PNG decoding and alpha compositing included; JPEG decoding is left to a libjpeg-turbo
decoder, docs/ports.md). CI installs its node_modules and sets BT_REQUIRE_NODE_EXAMPLE=1, so there it fails instead
of skipping."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import edit_manifest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node"
SUITE = ("rgba", "la", "p_transparency", "l", "cmyk", "jpeg_exif_rotated", "jpeg")


@pytest.fixture(scope="module")
def node():
    ready = shutil.which("node") and (EXAMPLE / "node_modules" / "onnxruntime-node").is_dir()
    if not ready:
        if os.environ.get("BT_REQUIRE_NODE_EXAMPLE") == "1":
            pytest.fail("node or examples/node/node_modules missing (npm install --prefix examples/node "
                        "--onnxruntime-node-install=skip)")
        pytest.skip("node and `npm install --prefix examples/node --onnxruntime-node-install=skip` needed")
    return lambda export: subprocess.run(["node", str(EXAMPLE / "verify_itm.mjs"), str(export)], capture_output=True,
                                         text=True, timeout=300)


def test_node_example_matches_the_golden_vectors_and_the_suite(node, tiny_export):
    result = node(tiny_export)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line.split()[1]: line.split()[0] for line in result.stdout.splitlines() if line[:4] in ("ok  ", "FAIL")}
    for name in ("itm_logits", "mlm_logits_at_mask", "cross_modal_pooled:itm_logits", "itm_probability",
                 "decoded_rgb", "pixel_values"):
        assert lines.get(name) == "ok", name
    for name in SUITE:
        assert lines.get(f"input:{name}:pixel_values") == "ok", name
        assert lines.get(f"input:{name}:decoded_rgb") == ("ok" if name in SUITE[:4] else None), name
    assert "FAIL" not in result.stdout


@pytest.mark.filterwarnings("ignore")
def test_node_example_fails_when_the_alpha_rule_differs(node, export_copy):
    edit_manifest(export_copy, lambda d: d["preprocessing"].update(alpha="drop_alpha"))
    result = node(export_copy)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL input:rgba:decoded_rgb" in result.stdout and "ok   input:l:decoded_rgb" in result.stdout
