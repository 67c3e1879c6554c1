"""bt_runtime must never import torch, transformers or bt_export, directly or through a dependency."""

import subprocess
import sys


def test_runtime_imports_no_torch_in_a_fresh_process(tiny_export):
    code = f"""
import sys, pkgutil, importlib
import bt_runtime
for module in pkgutil.walk_packages(bt_runtime.__path__, "bt_runtime."):
    importlib.import_module(module.name)
from bt_runtime import BridgeTowerRuntime
rt = BridgeTowerRuntime.load({str(tiny_export)!r})
rt.itm_scores(__import__("numpy").zeros((40, 60, 3), "uint8"), ["a cat", "a dog"])
rt.fill_mask(__import__("numpy").zeros((40, 60, 3), "uint8"), "a <mask>")
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "bt_export"))
print("LOADED", loaded)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout, result.stdout


def test_bt_serve_and_the_clis_help_import_no_torch():
    """bt_serve runs in an environment without torch; `bt-export --help` must not pay torch's import either."""
    code = """
import sys, pkgutil, importlib
import bt_serve
for module in pkgutil.walk_packages(bt_serve.__path__, "bt_serve."):
    importlib.import_module(module.name)
from typer.testing import CliRunner
from bt_export.cli import app
assert CliRunner().invoke(app, ["--help"]).exit_code == 0
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "pytriton"))
print("LOADED", loaded)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout, result.stdout
