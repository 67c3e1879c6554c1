"""The ONNX Runtime backend: providers, options, and the feed/output checks every run goes through."""

from __future__ import annotations

import numpy as np
import pytest

from bt_runtime import BridgeTowerRuntime
from bt_runtime.errors import BackendError, BackendInputError, ManifestError


def test_unknown_provider_lists_the_available_ones(tiny_export):
    with pytest.raises(BackendInputError, match=r"\['NoSuchExecutionProvider'\] not available.*CPUExecutionProvider"):
        BridgeTowerRuntime.load(tiny_export, providers=["NoSuchExecutionProvider"])


def test_unknown_precision_and_backend(tiny_export):
    with pytest.raises(ManifestError, match="precision 'int4'.*fp32"):
        BridgeTowerRuntime.load(tiny_export, precision="int4")
    with pytest.raises(ValueError, match="backend 'tvm'"):
        BridgeTowerRuntime.load(tiny_export, backend="tvm")


def test_threads_and_optimization_level_are_applied(tiny_export):
    runtime = BridgeTowerRuntime.load(tiny_export, intra_op_threads=1, graph_optimization_level="basic")
    session = runtime.backend.session("text_tower")
    assert session.get_session_options().intra_op_num_threads == 1
    with pytest.raises(BackendInputError, match="graph_optimization_level 'max'"):
        BridgeTowerRuntime.load(tiny_export, graph_optimization_level="max")


def test_feeds_are_checked_against_the_manifest(tiny_export):
    backend = BridgeTowerRuntime.load(tiny_export).backend
    ids = np.ones((2, 5), np.int64)
    with pytest.raises(BackendInputError, match="input 'input_ids' has dtype int32"):
        backend.run("text_tower", {"input_ids": ids.astype(np.int32), "attention_mask": ids})
    with pytest.raises(BackendInputError, match="expected exactly"):
        backend.run("text_tower", {"input_ids": ids})
    with pytest.raises(BackendInputError, match="axis 'batch' is 3 in 'attention_mask' but 2 in 'input_ids'"):
        backend.run("text_tower", {"input_ids": ids, "attention_mask": np.ones((3, 5), np.int64)})
    with pytest.raises(BackendInputError, match="axis 2 must be 96"):
        backend.run("vision_tower", {"pixel_values": np.zeros((1, 3, 95, 96), np.float32)})


def test_non_finite_outputs_are_reported(tiny_export):
    backend = BridgeTowerRuntime.load(tiny_export).backend
    pixels = np.full((1, 3, 96, 96), np.nan, np.float32)
    with pytest.raises(BackendError, match="NaN or Inf"):
        backend.run("vision_tower", {"pixel_values": pixels})
