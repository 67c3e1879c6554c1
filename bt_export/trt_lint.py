"""TensorRT compatibility lint for exported graphs; runs on CPU, without TensorRT.

Checks each graph against the ONNX-TensorRT parser's documented support (source: onnx/onnx-tensorrt
docs/operators.md, "TensorRT 10.15 supports operators in the inclusive range of opset 9 to opset 24"; the
Attention operator arrived in 10.14 per its changelog). TensorRT 11.x is assumed to accept at least this set
(its support matrix was not available to check against; re-verify when it is).

What is checked: every op and its domain against the table, the dtypes each op is used with, Attention's
restrictions (4-D Q/K/V/mask, single output, no past/present, no qk_matmul_output_mode/softcap,
no q/kv_num_heads attributes), LayerNormalization's single output, dtypes on every edge, the opset range, and that
every dynamic axis of the graph inputs is covered by an optimization profile.

    python3 -m bt_export.trt_lint exports/base        # or bt-export … --trt-check
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import onnx

from bt_runtime.errors import BtRuntimeError

TABLE_SOURCE = "onnx/onnx-tensorrt docs/operators.md (TensorRT 10.15), Attention since 10.14"
OPSET_RANGE = (9, 24)
MIN_VERSION_FOR = {"Attention": "10.14"}

T = onnx.TensorProto
FLOATS = {T.FLOAT, T.FLOAT16, T.BFLOAT16}
INTS = {T.INT32, T.INT64}
ANY = FLOATS | INTS | {T.BOOL}
# UINT8 only as network input/output; DOUBLE is cast down with clamping ("limited support"): both flagged.
EDGE_TYPES = FLOATS | INTS | {T.BOOL, T.INT8}

# op → element types TensorRT documents for it (the types of the op's first input).
SUPPORTED: dict[str, set[int]] = {
    **{op: FLOATS | INTS for op in ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Neg", "Abs", "Sum", "Mean",
                                    "Relu", "Sign", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual",
                                    "ArgMax", "ArgMin", "TopK", "Range", "DepthToSpace", "Mod",
                                    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL1", "ReduceL2",
                                    "ReduceProd", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp")},
    **{op: ANY for op in ("Reshape", "Transpose", "Concat", "Split", "Slice", "Gather", "GatherElements",
                          "GatherND", "Unsqueeze", "Squeeze", "Expand", "Shape", "Size", "Identity", "Flatten",
                          "Tile", "Where", "Trilu", "ReverseSequence", "ConstantOfShape", "Constant", "If")},
    **{op: FLOATS for op in ("MatMul", "Gemm", "Conv", "ConvTranspose", "LayerNormalization", "Softmax",
                             "LogSoftmax", "Sqrt", "Erf", "Exp", "Log", "Tanh", "Sigmoid", "Reciprocal", "Ceil",
                             "Floor", "Round", "Clip", "Einsum", "Elu", "LeakyRelu", "HardSigmoid", "Softplus",
                             "BatchNormalization", "InstanceNormalization", "GroupNormalization",
                             "RMSNormalization", "Dropout", "CumSum", "IsInf", "Sin", "Cos",
                             "GlobalAveragePool", "AveragePool", "MaxPool", "Resize", "Pad")},
    "Gelu": FLOATS | INTS | {T.INT8},
    "Attention": FLOATS | {T.INT8},
    "Cast": FLOATS | INTS | {T.UINT8, T.BOOL},
    "CastLike": FLOATS | INTS | {T.UINT8, T.BOOL},
    "IsNaN": FLOATS | INTS,
    "Not": {T.BOOL}, "And": {T.BOOL}, "Or": {T.BOOL}, "Xor": {T.BOOL},
    "QuantizeLinear": FLOATS, "DequantizeLinear": {T.INT8, T.INT4, T.FLOAT8E4M3FN},
}
UNSUPPORTED = {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv", "NonZero",
               "Unique", "Multinomial", "Hardmax", "Optional", "SequenceAt", "SequenceConstruct", "StringNormalizer"}


@dataclass
class Finding:
    graph: str
    where: str  # node name, tensor name or "model"
    problem: str

    def __str__(self) -> str:
        return f"{self.graph}: {self.where}: {self.problem}"


def _shapes(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    graph = inferred.graph
    types = {v.name: v.type for v in [*graph.value_info, *graph.input, *graph.output]}
    types.update({t.name: onnx.helper.make_tensor_type_proto(t.data_type, list(t.dims)) for t in graph.initializer})
    return types


def _elem(types, name):
    kind = types.get(name)
    return kind.tensor_type.elem_type if kind is not None and kind.HasField("tensor_type") else None


def _rank(types, name):
    kind = types.get(name)
    if kind is None or not kind.tensor_type.HasField("shape"):
        return None
    return len(kind.tensor_type.shape.dim)


def lint_model(model: onnx.ModelProto, graph: str, profile_axes: set[str] | None = None) -> list[Finding]:
    findings = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        findings.append(Finding(graph, "model", f"opset {opset} outside the parser's range {OPSET_RANGE}"))
    types = _shapes(model)
    used = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    for node in model.graph.node:
        where = node.name or node.op_type
        if node.domain not in ("", "ai.onnx"):
            findings.append(Finding(graph, where, f"{node.domain}::{node.op_type} is not an ONNX-standard op "
                                    "(TensorRT's parser has no contrib ops; export with --attention onnx)"))
            continue
        if node.op_type in UNSUPPORTED or node.op_type not in SUPPORTED:
            why = "unsupported by the parser" if node.op_type in UNSUPPORTED else "not in the checked support table"
            findings.append(Finding(graph, where, f"{node.op_type} is {why}"))
            continue
        elem = _elem(types, node.input[0]) if node.input and node.input[0] else None
        if elem is not None and elem not in SUPPORTED[node.op_type]:
            findings.append(Finding(graph, where, f"{node.op_type} on {onnx.TensorProto.DataType.Name(elem)} "
                                    "is not a supported type combination"))
        if node.op_type == "Attention":
            findings += _attention(graph, where, node, types, used)
        if node.op_type == "LayerNormalization" and any(o and o in used for o in node.output[1:]):
            findings.append(Finding(graph, where, "LayerNormalization: only the first output Y is supported"))
    for value in [*model.graph.input, *model.graph.output]:
        elem = value.type.tensor_type.elem_type
        if elem not in EDGE_TYPES | {T.UINT8}:
            findings.append(Finding(graph, value.name, f"graph IO of type {onnx.TensorProto.DataType.Name(elem)}"))
    for name, kind in types.items():
        elem = kind.tensor_type.elem_type if kind.HasField("tensor_type") else None
        if elem is not None and elem not in EDGE_TYPES and name in used:
            findings.append(Finding(graph, name, f"tensor of type {onnx.TensorProto.DataType.Name(elem)} "
                                    "(TensorRT: DOUBLE is clamped to FLOAT, UINT8 only at the network IO)"))
    if profile_axes is not None:
        for value in model.graph.input:
            for dim in value.type.tensor_type.shape.dim:
                if dim.dim_param and dim.dim_param not in profile_axes:
                    findings.append(Finding(graph, value.name, f"dynamic axis {dim.dim_param!r} has no "
                                            f"optimization-profile range (profiles cover {sorted(profile_axes)})"))
    return findings


def _attention(graph, where, node, types, used) -> list[Finding]:
    findings = []
    if len(node.input) > 4:
        findings.append(Finding(graph, where, "Attention: past_key/past_value/nonpad_kv_seqlen inputs unsupported"))
    if any(o and o in used for o in node.output[1:]) or len(node.output) > 1:
        findings.append(Finding(graph, where, "Attention: must have a single output (present_key, present_value "
                                "and qk_matmul_output are unsupported)"))
    for attribute in node.attribute:
        value = onnx.helper.get_attribute_value(attribute)
        if attribute.name in ("q_num_heads", "kv_num_heads") or (
                attribute.name in ("qk_matmul_output_mode", "softcap") and value):  # defaults (0) are harmless
            findings.append(Finding(graph, where, f"Attention: attribute {attribute.name}={value} unsupported "
                                    "(heads must be dim 1 of 4-D Q/K/V)"))
    for label, name in zip(("Q", "K", "V", "attn_mask"), node.input, strict=False):
        rank = _rank(types, name) if name else None
        if name and rank is not None and rank != 4:
            findings.append(Finding(graph, where, f"Attention: {label} is {rank}-D; TensorRT needs 4-D"))
    return findings


def lint_export(export_dir: Path, profile_axes: set[str] | None = None) -> dict[str, list[Finding]]:
    """Lint every TensorRT-eligible variant (fp32, fp16) of an export; int8 (ONNX Runtime dynamic quantization)
    is CPU-only by design and reported as such."""
    from bt_runtime.backends.trt_profiles import DEFAULT_PROFILE_AXES
    from bt_runtime.manifest import read_manifest

    manifest = read_manifest(export_dir)
    axes = profile_axes if profile_axes is not None else set(DEFAULT_PROFILE_AXES)
    results = {}
    for precision, variant in manifest.variants.items():
        if precision == "int8":
            results[precision] = [Finding("*", "variant", "int8 uses ONNX Runtime's dynamic quantization "
                                          "(DynamicQuantizeLinear/MatMulInteger): CPU only, not for TensorRT")]
            continue
        found = []
        for graph, entry in variant.files.items():
            found += lint_model(onnx.load(str(manifest.path(entry.file)), load_external_data=False),
                                f"{graph} ({precision})", axes)
        results[precision] = found
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python3 -m bt_export.trt_lint EXPORT_DIR", file=sys.stderr)
        return 2
    try:
        results = lint_export(Path(argv[0]))
    except BtRuntimeError as err:  # an unreadable export: one line and exit 2, as `bt-export --trt-check` says it
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = False
    for precision, findings in results.items():
        portable = precision != "int8"
        status = "ok" if not findings else ("would fail" if portable else "skipped")
        print(f"{precision}: {status} ({TABLE_SOURCE})")
        for finding in findings:
            print(f"  {finding}")
        failed |= portable and bool(findings)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
