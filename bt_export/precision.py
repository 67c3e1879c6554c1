"""Precision variants of exported fp32 graphs, written side by side: `<graph>.fp16.onnx`, `<graph>.int8.onnx`.

- fp16 (for GPUs): onnxruntime.transformers' float16 converter with float32 inputs/outputs kept (the runtime and
  the bridges between graphs stay float32). LayerNormalization keeps its float32 accumulation (stash_type=1, the
  default) and every Attention node computes its softmax in float32 (softmax_precision=1). Constants beyond fp16
  range (the padding bias) are clamped to ±65504 by the converter, so masking stays finite.
- int8 (CPU): onnxruntime.quantization's dynamic quantization of MatMul/Gemm weights (8-bit weights per output
  channel, uint8 activations quantized per call). Attention itself stays float32 (it has no weights).
  Weights are *unsigned* (asymmetric, with a zero point per channel). Why: with signed weights ONNX Runtime runs
  u8×s8 products, which CPUs without VNNI compute with pmaddubsw, summing two products into a saturating int16
  (255·127·2 = 64770 > 32767): the same graph gives other numbers on AVX2 than on VNNI (measured: ITM |Δp| 0.018
  on AVX2, 0.011 on AVX-512 VNNI). u8×u8 products go through kernels that widen to 16 bits before multiplying
  and accumulate in 32 bits on every x86 ISA, so the integer results do not depend on the CPU. 7-bit signed
  weights (reduce_range) avoid saturation too but cost accuracy (measured: |Δp| 0.022–0.024, MLM top-1 0.76–0.85).
  Table and commands: docs/export.md, "int8 on every CPU".
  MatMul/Gemm nodes whose "<graph>/<module path>" matches a pattern in `int8_excluded` stay float32; a graph with
  every node excluded is not duplicated, the int8 variant uses its fp32 file. The default was decided by
  measurement on the full-size base architecture (docs/export.md, "Attention modes and precisions").
"""

from __future__ import annotations

import ast
import re
import tempfile
from pathlib import Path

import onnx

from .onnx_export import quiet, save_model
from .specs import computes

PRECISIONS = ("fp32", "fp16", "int8")

# Regular expressions over "<graph>/<module path>" (e.g. "cross_modal/text_layers.3.output.dense") kept float32.
# Measured (full-size base, random init, 4 photos × 4 captions, vs fp32 eager): int8 text tower → ITM |Δp| 0.11,
# MLM top-1 0.71; int8 cross-modal stack → |Δp| 0.015, top-1 0.94 (0.98 without the MLM decoder); both with the
# vision tower → |Δp| 0.05, top-1 0.90; vision tower alone, per channel → |Δp| 0.008, top-1 1.0: the only one
# within every int8 bound. Random weights saturate attention, which makes them more fragile than trained ones in
# some places and less in others (no activation outliers): re-measure on a trained checkpoint (`--int8-exclude`).
INT8_EXCLUDED: tuple[str, ...] = (r"^text_tower/", r"^cross_modal/")


def variant_file(graph_file: str, precision: str) -> str:
    return graph_file if precision == "fp32" else graph_file.replace(".onnx", f".{precision}.onnx")


def write_fp16(src: Path, dst: Path) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    for node in model.graph.node:
        if node.op_type == "Attention" and node.domain in ("", "ai.onnx"):
            node.attribute.append(onnx.helper.make_attribute("softmax_precision", onnx.TensorProto.FLOAT))
    with quiet():
        converted = convert_float_to_float16(model, keep_io_types=True)
    save_model(converted, dst)


def module_path(node: onnx.NodeProto) -> str:
    """The torch module a node came from, as recorded by torch.onnx's dynamo exporter ("" if unknown)."""
    scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "[]")
    return ".".join(s for s in ast.literal_eval(scopes)[:-1] if s)


def attributed_paths(nodes: list[onnx.NodeProto]) -> list[str]:
    """module_path of each node; a node traced outside any submodule (the vision blocks' packed in_proj, called
    as F.linear) takes the path of the next node that has one — the block it belongs to."""
    paths = [module_path(n) for n in nodes]
    following = ""
    for index in range(len(paths) - 1, -1, -1):
        if paths[index]:
            following = paths[index]
        else:
            paths[index] = following
    return paths


def int8_nodes(model: onnx.ModelProto, graph: str, excluded_patterns: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(every MatMul/Gemm node of `graph`'s model, those of them `excluded_patterns` keep float32), by name."""
    weighted = [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm")]
    paths = dict(zip((n.name for n in model.graph.node), attributed_paths(list(model.graph.node)), strict=True))
    excluded = [name for name in weighted
                if any(re.search(p, f"{computes(graph)}/{paths[name]}") for p in excluded_patterns)]
    return weighted, excluded


def quantizer_source(src: Path, tmp: Path) -> Path:
    """A copy of `src` in `tmp` without value_info, for ONNX Runtime's quantizers: they re-run ONNX shape inference,
    which refuses value_info annotations it would infer otherwise (seen with torch 2.11's exporter: "Inferred shape
    and existing shape differ … (1536) vs (2)"). They are optional hints."""
    source = tmp / f"source.{src.name}"
    full = onnx.load(str(src))
    del full.graph.value_info[:]
    save_model(full, source)
    return source


def write_int8(src: Path, dst: Path, graph: str, excluded_patterns: tuple[str, ...] = INT8_EXCLUDED,
               reduce_range: bool = False, per_channel: bool = True, weight_type: str = "uint8") -> dict | None:
    """Quantize `src` into `dst`; None (nothing written) when every MatMul/Gemm of `graph` is excluded."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    weighted, excluded = int8_nodes(onnx.load(str(src), load_external_data=False), graph, excluded_patterns)
    if len(excluded) == len(weighted):
        return None
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp, quiet():  # quantize_dynamic writes files beside it
        source = quantizer_source(src, Path(tmp))
        staged = Path(tmp) / dst.name
        quantize_dynamic(str(source), str(staged), weight_type=QuantType.QUInt8 if weight_type == "uint8" else
                         QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
                         nodes_to_exclude=excluded, per_channel=per_channel, reduce_range=reduce_range,
                         # DefaultTensorType: ONNX shape inference cannot type the outputs of com.microsoft ops
                         # (`--attention ort`); without it the quantizer stops at the first MatMul after one
                         extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
                         use_external_data_format=False)
        save_model(onnx.load(str(staged)), dst)
    return {"quantized_nodes": len(weighted) - len(excluded), "excluded_nodes": len(excluded)}


def write_variant(precision: str, graph: str, src: Path, dst: Path,
                  int8_excluded: tuple[str, ...] = INT8_EXCLUDED) -> dict | None:
    """Write `graph`'s `precision` variant. Returns per-graph details ({} if none), or None when the variant
    would equal the fp32 graph (nothing written: use that file)."""
    if precision == "fp16":
        write_fp16(src, dst)
        return {}
    if precision == "int8":
        return write_int8(src, dst, graph, int8_excluded)
    raise ValueError(f"precision {precision!r}; valid: {list(PRECISIONS)}")


def variant_details(precision: str, int8_excluded: tuple[str, ...] = INT8_EXCLUDED) -> dict:
    if precision == "fp16":
        return {"io_dtype": "float32", "compute_dtype": "float16",
                "kept_float32": ["graph inputs/outputs", "LayerNormalization accumulation (stash_type=1)",
                                 "Attention softmax (softmax_precision=1)"]}
    if precision == "int8":
        return {"io_dtype": "float32", "weights": "uint8, asymmetric (zero point per output channel), per channel",
                "activations": "uint8, dynamic (per call)", "quantized_ops": ["MatMul", "Gemm"],
                "excluded_patterns": list(int8_excluded)}
    return {"io_dtype": "float32"}
