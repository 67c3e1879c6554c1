"""bt_export.trt_lint: the TensorRT compatibility lint on real exports and on broken graphs (CPU only; engine
building is tests/bt_runtime/backends/test_trt_build.py)."""

from __future__ import annotations

from onnx import TensorProto, helper

from bt_export.trt_lint import lint_export, lint_model


def test_portable_export_passes_the_lint(portable_export):
    results = lint_export(portable_export)
    assert results["fp32"] == [] and results["fp16"] == []
    assert "CPU only" in results["int8"][0].problem


def test_contrib_attention_fails_the_lint(tiny_exports):
    out = tiny_exports(attention="ort", precisions=("fp32", "int8")).output  # the lint reads the fp32 graphs
    problems = [f.problem for f in lint_export(out)["fp32"]]
    assert len(problems) == 22 and all("com.microsoft::MultiHeadAttention" in p for p in problems)


def _model(nodes, inputs, outputs, opset=23, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_lint_catches_each_attention_restriction():
    q = helper.make_tensor_value_info("q", TensorProto.FLOAT, ["batch", 7, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 7, 64])
    three_d = helper.make_node("Attention", ["q", "q", "q"], ["y", "present_k"], q_num_heads=4, kv_num_heads=4,
                               softcap=2.0)
    problems = [f.problem for f in lint_model(_model([three_d], [q], [y]), "g", {"batch"})]
    assert any("Q is 3-D" in p for p in problems)
    assert any("q_num_heads" in p for p in problems) and any("softcap=2.0" in p for p in problems)
    assert any("single output" in p for p in problems)


def test_lint_catches_ops_dtypes_opset_and_uncovered_axes():
    x = helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", "seq"])
    d = helper.make_tensor_value_info("d", TensorProto.DOUBLE, ["batch", "seq"])
    nodes = [helper.make_node("CumSum", ["x", "axis"], ["c"]), helper.make_node("Cast", ["c"], ["d"], to=11),
             helper.make_node("MatMulInteger", ["x", "x"], ["m"])]
    axis = helper.make_tensor("axis", TensorProto.INT64, [], [1])
    problems = [str(f) for f in lint_model(_model(nodes, [x], [d], opset=25, initializers=[axis]), "g", {"batch"})]
    assert any("opset 25" in p for p in problems)
    assert any("CumSum on INT64" in p for p in problems)
    assert any("MatMulInteger is unsupported" in p for p in problems)
    assert any("DOUBLE" in p for p in problems)
    assert any("dynamic axis 'seq'" in p for p in problems)


def test_the_module_entry_point_refuses_an_unreadable_export_in_one_line(tmp_path, capsys):
    """`python3 -m bt_export.trt_lint DIR` (docs/tensorrt.md): exit 2 and one line, as `bt-export --trt-check`."""
    from bt_export.trt_lint import main

    assert main([str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"error: export directory '{tmp_path / 'nope'}' does not exist"
    (tmp_path / "manifest.json").write_text("{not json")
    assert main([str(tmp_path)]) == 2
    assert "is not readable JSON" in capsys.readouterr().err
