"""bt-export where a careless user runs it (issue 22): a working directory that holds a file named like the
external data being written (onnx checked `location` against the cwd: FileExistsError after the whole export)."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("torch")


def test_saving_external_data_ignores_the_working_directory(tmp_path, monkeypatch):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from bt_export import onnx_export
    from bt_runtime.onnx_refs import external_data_locations

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "m.onnx.data").write_text("the user's file")
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_MIN_BYTES", 1024)
    weight = numpy_helper.from_array(np.full((64, 64), 0.5, np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [weight])
    out = tmp_path / "out"
    out.mkdir()
    onnx_export.save_model(helper.make_model(graph), out / "m.onnx")
    assert sorted(p.name for p in out.iterdir()) == ["m.onnx", "m.onnx.data"]
    assert external_data_locations(out / "m.onnx") == {"m.onnx.data"}
    assert (cwd / "m.onnx.data").read_text() == "the user's file"
    session = ort.InferenceSession(str(out / "m.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": np.ones((1, 64), np.float32)})[0], 32.0)
