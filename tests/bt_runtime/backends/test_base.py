"""The backend interface: per-backend options objects, refusal of options a backend would ignore, one run path."""

from __future__ import annotations

import numpy as np
import pytest

from bt_runtime import BackendInputError, BridgeTowerRuntime
from bt_runtime.backends.base import Backend, OnnxRuntimeOptions, TensorRTOptions, options_for


def test_options_come_as_an_object_or_as_keywords():
    assert options_for("onnxruntime", None, {"intra_op_threads": 1}) == OnnxRuntimeOptions(intra_op_threads=1)
    given = OnnxRuntimeOptions(device="cpu")
    assert options_for("onnxruntime", given, {}) is given
    assert options_for("tensorrt") == TensorRTOptions()


@pytest.mark.parametrize("backend, options, given, says", [
    ("tensorrt", None, {"providers": ["CPUExecutionProvider"]}, r"\['providers'\] do not apply to backend 'tensorrt'"),
    ("onnxruntime", None, {"intra_op_thread": 1}, r"\['intra_op_thread'\] do not apply.*intra_op_threads"),
    ("onnxruntime", TensorRTOptions(), {}, "TensorRTOptions given for backend 'onnxruntime'"),
    ("onnxruntime", OnnxRuntimeOptions(), {"device": "cpu"}, "not both"),
    ("openvino", None, {}, r"backend 'openvino' is not available; valid: \['onnxruntime', 'tensorrt'\]"),
])
def test_options_a_backend_would_ignore_are_refused(backend, options, given, says):
    with pytest.raises(BackendInputError, match=says):
        options_for(backend, options, given)


def test_load_refuses_an_option_of_the_other_backend_before_reading_anything(tmp_path):
    with pytest.raises(BackendInputError, match="do not apply to backend 'tensorrt'"):
        BridgeTowerRuntime.load(tmp_path / "absent", backend="tensorrt", device="cuda")


@pytest.mark.parametrize("given, says", [
    ({"intra_op_threads": "2"}, "intra_op_threads must be an integer or None, got '2'"),
    ({"intra_op_threads": True}, "intra_op_threads must be an integer or None, got True"),
    ({"graph_optimization_level": ["all"]}, r"graph_optimization_level must be a string, got \['all'\]"),
    ({"device": 0}, "device must be a string, got 0"),
    ({"prepack_weights": 1}, "prepack_weights must be True or False"),
    ({"providers": "CPUExecutionProvider"}, "providers must be a list of provider names or None"),
])
def test_option_types_are_named_errors(given, says):
    with pytest.raises(BackendInputError, match=f"^{says}"):
        options_for("onnxruntime", None, given)
    assert options_for("onnxruntime", None, {"intra_op_threads": np.int64(1)}).intra_op_threads == 1


@pytest.mark.parametrize("args, kwargs, says", [
    ((None,), {}, "export_dir must be a path .* got NoneType"), ((b"/x",), {}, "got bytes"),
    (("x",), {"precision": ["fp32"]}, r"precision must be a string, got \['fp32'\]"),
    (("x",), {"verify_checksums": "no"}, "verify_checksums must be True or False, got 'no'"),
    (("x",), {"exif_transpose": "yes"}, "exif_transpose must be True or False or None, got 'yes'"),
])
def test_load_argument_types_are_named_errors_before_reading_anything(args, kwargs, says):
    from bt_runtime.errors import BtRuntimeError

    with pytest.raises(BtRuntimeError, match=says):
        BridgeTowerRuntime.load(*args, **kwargs)


class Doubling(Backend):
    name = "doubling"

    def _infer(self, graph, feeds, outputs):
        return {name: feeds["x"] * 2 for name in outputs}


def test_run_checks_feeds_and_outputs_once_for_every_backend(tiny_export):
    from bt_runtime import read_manifest

    manifest = read_manifest(tiny_export)
    with Doubling(manifest, "fp32", ("vision_tower",)) as backend:
        with pytest.raises(BackendInputError, match="graph 'text_tower'; valid: \\['vision_tower'\\]"):
            backend.run("text_tower", {})
        with pytest.raises(BackendInputError, match="expected exactly"):
            backend.run("vision_tower", {"x": np.ones(1, np.float32)})
        assert backend.device == "cpu"
