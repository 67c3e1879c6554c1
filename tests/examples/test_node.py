"""The Node example (examples/node, onnxruntime-node) reproduces the tiny export's golden vectors. CI installs its
node_modules and sets BT_REQUIRE_NODE_EXAMPLE=1, so there it fails instead of skipping."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node"


def test_node_example_matches_the_golden_vectors(tiny_export):
    ready = shutil.which("node") and (EXAMPLE / "node_modules" / "onnxruntime-node").is_dir()
    if not ready:
        if os.environ.get("BT_REQUIRE_NODE_EXAMPLE") == "1":
            pytest.fail("node or examples/node/node_modules missing (npm install --prefix examples/node "
                        "--onnxruntime-node-install=skip)")
        pytest.skip("node and `npm install --prefix examples/node --onnxruntime-node-install=skip` needed")
    result = subprocess.run(["node", str(EXAMPLE / "verify_itm.mjs"), str(tiny_export)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok   itm_logits" in result.stdout and "FAIL" not in result.stdout
