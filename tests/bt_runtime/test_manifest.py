from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from bt_runtime import BridgeTowerRuntime, read_manifest
from bt_runtime.errors import BackendError, BackendInputError, ManifestError


@pytest.fixture
def export_copy(tiny_export, tmp_path):
    return shutil.copytree(tiny_export, tmp_path / "copy")


def _edit_manifest(directory, edit):
    path = directory / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_missing_directory_and_manifest(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "nope")
    with pytest.raises(ManifestError, match="has no manifest.json"):
        read_manifest(tmp_path)


def test_unknown_schema_version(export_copy):
    _edit_manifest(export_copy, lambda d: d.update(schema_version=99))
    with pytest.raises(ManifestError, match="schema_version 99"):
        read_manifest(export_copy)


def test_missing_graph_file(export_copy):
    (export_copy / "cross_modal.onnx").unlink()
    with pytest.raises(ManifestError, match="cross_modal.onnx"):
        BridgeTowerRuntime.load(export_copy)


def test_tampered_graph_is_refused_unless_opted_out(export_copy):
    _edit_manifest(export_copy, lambda d: d["variants"]["fp32"]["files"]["text_tower"].update(sha256="0" * 64))
    runtime = BridgeTowerRuntime.load(export_copy)
    with pytest.raises(ManifestError, match="does not match the sha256.*verify_checksums=False"):
        runtime.embed_texts(["a cat"])
    assert BridgeTowerRuntime.load(export_copy, verify_checksums=False).embed_texts(["a cat"]).shape == (1, 32)


def test_truncated_graph_is_refused(export_copy):
    path = export_copy / "vision_tower.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ManifestError, match="modified, replaced or truncated"):
        BridgeTowerRuntime.load(export_copy).embed_images([np.zeros((8, 8, 3), np.uint8)])


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
