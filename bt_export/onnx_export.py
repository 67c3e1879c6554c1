"""Trace the tower modules into ONNX graphs with torch.onnx's dynamo exporter (names and axes from the specs)."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import uuid
import warnings
from pathlib import Path

import onnx
import torch
from torch.export import Dim

from .attention import FUSED_ATTENTION_OP, attention_implementation, fused_attention, reference_attention
from .fused import ATTENTION_MODES, attention_to_multihead, onnx_attention, single_output_attention
from .specs import BATCH, IMAGE_BATCH, POOLED_GRAPH, SEQ, GraphSpec
from .towers import CrossModalStack, TextTower, VisionTower

DEFAULT_OPSET = 23  # first opset with the standard Attention operator, used by the fused variants
MIN_OPSET = 17  # `--attention none --opset 17`, the portable recipe (torch.onnx writes it as 18)
# Every graph keeps its weights in `<file>.data` beside it. ONNX Runtime maps that file instead of copying weights
# out of a parsed protobuf: measured on the base text tower (499 MB of weights), peak RSS of a session after one run
# 754 MB inline → 397 MB external; with prepacking off the weights stay file pages (shared between processes, and
# untouched embedding rows are never read in). Tensors under 1 KiB stay inline.
EXTERNAL_DATA_MIN_BYTES = 1024
PROTOBUF_LIMIT = 1_800_000_000  # protobuf's hard limit is 2 GiB: torch.onnx writes bigger modules external itself

TOWER_MODULES = {"vision_tower": VisionTower, "text_tower": TextTower, "cross_modal": CrossModalStack,
                 POOLED_GRAPH: lambda model: CrossModalStack(model, mlm=False)}


def example_inputs(spec: GraphSpec, samples, bridges: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Tracing inputs for `spec`. Dynamic axes need sizes ≥ 2 in the examples (torch.export specializes 1)."""
    if spec.name == "vision_tower":
        return (samples.pixel_values,)
    if spec.name == "text_tower":
        return (samples.input_ids, samples.attention_mask)
    batch = samples.input_ids.shape[0]
    return (bridges["text_bridge"], bridges["image_bridge"], samples.attention_mask,
            torch.arange(batch, dtype=torch.int64))


def dynamic_shapes(spec: GraphSpec, max_seq: int) -> dict[str, dict[int, Dim]]:
    dims = {BATCH: Dim(BATCH), SEQ: Dim(SEQ, max=max_seq), IMAGE_BATCH: Dim(IMAGE_BATCH)}
    return {t.name: {axis: dims[s] for axis, s in enumerate(t.shape) if isinstance(s, str)} for t in spec.inputs}


def parameter_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def export_graph(model: torch.nn.Module, spec: GraphSpec, inputs: tuple[torch.Tensor, ...], out_dir: Path,
                 opset: int = DEFAULT_OPSET, attention: str = "none") -> Path:
    """Export one graph to `out_dir/spec.file`, its weights in `out_dir/spec.file.data`.

    attention: "none" (MatMul/Softmax written out), "onnx" (ONNX Attention) or "ort" (com.microsoft
    MultiHeadAttention): one fused node per attention, see bt_export.fused."""
    if attention not in ATTENTION_MODES:
        raise ValueError(f"attention {attention!r}; valid: {list(ATTENTION_MODES)}")
    if attention != "none" and opset < 23:
        raise ValueError(f"--attention {attention} needs opset ≥ 23 (ONNX Attention); got --opset {opset}")
    module = TOWER_MODULES[spec.name](model).eval()
    max_seq = model.config.text_config.max_position_embeddings - 2  # RoBERTa positions start after padding_idx
    path = out_dir / spec.file
    implementation = reference_attention if attention == "none" else fused_attention
    with quiet(), torch.no_grad(), attention_implementation(implementation):
        torch.onnx.export(
            module, inputs, str(path),
            input_names=[t.name for t in spec.inputs], output_names=[t.name for t in spec.outputs],
            dynamic_shapes=dynamic_shapes(spec, max_seq), opset_version=opset,
            dynamo=True, external_data=parameter_bytes(module) > PROTOBUF_LIMIT, verbose=False,
            custom_translation_table={FUSED_ATTENTION_OP: onnx_attention},
        )
    graph = onnx.load(str(path))
    if attention != "none":
        single_output_attention(graph)
        if attention == "ort":
            attention_to_multihead(graph)
    save_model(graph, path)  # rewritten with its weights as external data
    return path


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """Save a fully loaded model with its weights in `<file>.data` (same permissions as the graph file)."""
    from onnx.external_data_helper import _get_all_tensors, convert_model_to_external_data, uses_external_data

    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()
    # onnx refuses a `location` that exists relative to the *working directory* (FileExistsError when bt-export
    # runs where a vision_tower.onnx.data lies): convert under a name no directory holds, then name the file
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location=f".{uuid.uuid4().hex}.data",
                                   size_threshold=EXTERNAL_DATA_MIN_BYTES)
    for tensor in _get_all_tensors(model):  # private in onnx, but the only walk that reaches every tensor
        if uses_external_data(tensor):
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = data.name
    onnx.save_model(model, str(path))
    if data.exists():
        shutil.copymode(path, data)  # onnx writes it 0600; a server running as another user must read it


@contextlib.contextmanager
def quiet():
    """Exporters and quantizers narrate on stdout and the root logger; keep errors only."""
    loggers = [logging.getLogger(name) for name in ("", "torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
