"""Fused attention for export: `bt::attention` → one ONNX node per attention.

- `onnx`: the standard `Attention` operator (opset 23) on 4-D Q/K/V (B, H, L, Dh) with a single output: the form
  TensorRT's ONNX parser accepts (≥ 10.14: "Q, K, V and attn_mask must be 4D", heads given by dim 1, no optional
  outputs; onnx-tensorrt docs/operators.md). The key-padding bias is expanded to (B, 1, Lq, Lk): ONNX Runtime's CPU
  kernel rejects a mask that is not broadcast to the query length.
- `ort`: ONNX Runtime's contrib `com.microsoft::MultiHeadAttention`. onnxscript carries no schemas for contrib ops,
  so the exporter cannot emit them directly; the graph is exported as `onnx` and each Attention node is rewritten
  in place (same Q/K/V; the mask becomes `attention_bias`, input 5). That is a one-node rename, not a pattern match.
"""

from __future__ import annotations

import onnx
from onnxscript import opset23 as op

ATTENTION_MODES = ("none", "onnx", "ort")
FUSED_OP_TYPES = {"onnx": ("", "Attention"), "ort": ("com.microsoft", "MultiHeadAttention")}


def _split_heads(x, num_heads: int):
    """(B, L, D) → (B, H, L, Dh)."""
    return op.Transpose(op.Reshape(x, op.Constant(value_ints=[0, 0, num_heads, -1])), perm=[0, 2, 1, 3])


def onnx_attention(query, key, value, key_bias, num_heads: int):
    """Translation of bt::attention into ONNX Attention (opset 23). query (B, Lq, D), key/value (B, Lk, D).

    torch's graph builder gives the node all four declared outputs; `single_output_attention` trims the three
    optional, unused ones after export."""
    q, k, v = (_split_heads(t, num_heads) for t in (query, key, value))  # (B, H, L, Dh)
    if key_bias is None:
        attended = op.Attention(q, k, v)[0]
    else:
        bias = op.Unsqueeze(key_bias, [1, 2])  # (B, Lk) → (B, 1, 1, Lk)
        shape = op.Concat(op.Shape(query, start=0, end=1), op.Constant(value_ints=[1]),
                          op.Shape(query, start=1, end=2), op.Shape(key, start=1, end=2), axis=0)
        attended = op.Attention(q, k, v, op.Expand(bias, shape))[0]  # mask (B, 1, Lq, Lk)
    merged = op.Transpose(attended, perm=[0, 2, 1, 3])  # (B, Lq, H, Dh)
    return op.Reshape(merged, op.Constant(value_ints=[0, 0, -1]))  # (B, Lq, D)


def single_output_attention(model: onnx.ModelProto) -> None:
    """Drop the unused optional outputs (present_key, present_value, qk_matmul_output) of Attention nodes."""
    used = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    for node in model.graph.node:
        if node.op_type == "Attention" and node.domain in ("", "ai.onnx"):
            if any(name in used for name in node.output[1:]):
                raise AssertionError(f"Attention node {node.name} has an optional output in use")
            del node.output[1:]


def attention_to_multihead(model: onnx.ModelProto) -> int:
    """Rewrite every 4-D ONNX Attention node into com.microsoft MultiHeadAttention on the 3-D tensors around it.

    The exported pattern is x (B, L, D) → Reshape → Transpose → Attention → Transpose → Reshape → (B, Lq, D);
    MultiHeadAttention takes the 3-D x directly (num_heads attribute), so the node is rewired to the Reshapes'
    inputs and its result to the last Reshape's output. The now-dead reshapes are removed."""
    producers = {out: node for node in model.graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    dead, count = set(), 0
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type != "Attention":
            continue
        q, k, v, *mask = node.input
        sources = []  # per q/k/v: (3-D input, its head-splitting Reshape, the Transpose after it)
        for name in (q, k, v):
            transpose = producers[name]
            reshape = producers[transpose.input[0]]
            sources.append((reshape.input[0], reshape, transpose))
        heads = _heads_of(model, sources[0][1])
        (after_transpose,) = consumers[node.output[0]]
        (after_reshape,) = consumers[after_transpose.output[0]]
        node.ClearField("input")
        node.input.extend([sources[0][0], sources[1][0], sources[2][0], "", "", *mask])
        node.ClearField("attribute")
        node.attribute.append(onnx.helper.make_attribute("num_heads", heads))
        node.op_type, node.domain = "MultiHeadAttention", "com.microsoft"
        del node.output[1:]
        node.output[0] = after_reshape.output[0]
        dead.update(id(n) for n in (after_transpose, after_reshape))
        dead.update(id(n) for _, reshape, transpose in sources for n in (reshape, transpose))
        count += 1
    kept = [n for n in model.graph.node if id(n) not in dead]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    if count and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return count


def _heads_of(model: onnx.ModelProto, reshape: onnx.NodeProto) -> int:
    """H from the [0, 0, H, -1] shape constant of a head-splitting Reshape."""
    from onnx import numpy_helper

    name = reshape.input[1]
    for init in model.graph.initializer:
        if init.name == name:
            return int(numpy_helper.to_array(init)[2])
    for node in model.graph.node:
        if name in node.output and node.op_type == "Constant":
            return int(numpy_helper.to_array(node.attribute[0].t)[2])
    raise AssertionError(f"head count of reshape {reshape.name} is not a constant")


def count_attention(model: onnx.ModelProto) -> dict[str, int]:
    """Fused attention nodes by kind, and Softmax nodes (an unfused attention leaves one behind)."""
    counts = {"Attention": 0, "MultiHeadAttention": 0, "Softmax": 0}
    for node in model.graph.node:
        if node.op_type in counts:
            counts[node.op_type] += 1
    return counts
