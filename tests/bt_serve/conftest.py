"""Fixtures of the bt-serve tests: one runtime and its TaskModels per module, the serving environment's Python."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bt_runtime import BridgeTowerRuntime
from bt_serve.models import TaskModels

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def runtime(tiny_export):
    with BridgeTowerRuntime.load(tiny_export) as runtime:
        yield runtime


@pytest.fixture(scope="module")
def models(runtime):
    return TaskModels(runtime)


@pytest.fixture(scope="module")
def serve_python() -> str:
    python = os.environ.get("BT_SERVE_PYTHON") or str(REPO / ".venv-serve" / "bin" / "python")
    ok = Path(python).exists() and subprocess.run([python, "-c", "import pytriton, bt_serve"],
                                                  check=False, capture_output=True).returncode == 0
    if not ok:
        message = (f"no serving environment at {python} (python3 -m venv .venv-serve && "
                   ".venv-serve/bin/pip install -e '.[serve]')")
        if os.environ.get("BT_REQUIRE_SERVE"):
            pytest.fail(message)
        pytest.skip(message)
    return python


def col(*values) -> np.ndarray:
    """One BYTES input column as Triton hands it over: (rows, 1) object array, str encoded as UTF-8."""
    return np.array([v.encode() if isinstance(v, str) else v for v in values], dtype=object).reshape(-1, 1)
