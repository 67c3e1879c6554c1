"""Parity of exported graphs against eager PyTorch, per graph and end to end against Hugging Face's classes.

References are computed before export (exporting can disturb an in-memory model). Every output is compared, all
failures are collected with their max difference, and the caller decides once whether to raise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .model import hf_reference
from .specs import GraphSpec
from .towers import CrossModalStack, TextTower, VisionTower

# End-to-end rows: (HF class, its output attribute, our output name, the head it needs: None = base model)
HF_OUTPUTS = (
    ("BridgeTowerModel", "pooler_output", "pooler_output", None),
    ("BridgeTowerForImageAndTextRetrieval", "logits", "itm_logits", "itm"),
    ("BridgeTowerForMaskedLM", "logits", "mlm_logits", "mlm"),
    ("BridgeTowerForContrastiveLearning", "text_embeds", "text_embeds", "itc"),
    ("BridgeTowerForContrastiveLearning", "image_embeds", "image_embeds", "itc"),
    ("BridgeTowerForContrastiveLearning", "cross_embeds", "cross_embeds", "itc"),
)


@dataclass
class ParityRow:
    check: str  # "graph:<name>" (graph vs the same torch sub-computation) or "e2e:<HF class>.<attribute>"
    output: str
    max_abs_diff: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_abs_diff) and self.max_abs_diff <= self.tolerance)

    def to_json(self) -> dict:
        return {**asdict(self), "passed": self.passed}


@dataclass
class EagerReferences:
    graph_inputs: dict[str, dict[str, np.ndarray]]  # graph name → input name → array
    graph_outputs: dict[str, dict[str, np.ndarray]]  # graph name → output name → array
    hf_outputs: dict[tuple[str, str], np.ndarray]  # (HF class, attribute) → array


def _named(outputs, spec: GraphSpec) -> dict[str, np.ndarray]:
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    return {t.name: o.numpy() for t, o in zip(spec.outputs, outputs)}


@torch.no_grad()
def eager_references(model, samples, specs: dict[str, GraphSpec], heads: tuple[str, ...]) -> EagerReferences:
    pixel_values, input_ids, attention_mask = samples.pixel_values, samples.input_ids, samples.attention_mask
    vision = _named(VisionTower(model)(pixel_values), specs["vision_tower"])
    text = _named(TextTower(model)(input_ids, attention_mask), specs["text_tower"])
    image_index = torch.arange(input_ids.shape[0], dtype=torch.int64)
    cross_inputs = {"text_bridge": text["text_bridge"], "image_bridge": vision["image_bridge"],
                    "attention_mask": attention_mask.numpy(), "image_index": image_index.numpy()}
    cross = _named(CrossModalStack(model)(*(torch.from_numpy(v) for v in cross_inputs.values())),
                   specs["cross_modal"])
    hf_outputs, references = {}, {}
    for class_name, attribute, _, head in HF_OUTPUTS:
        if head is not None and head not in heads:
            continue
        if head not in references:
            references[head] = hf_reference(model, head)(
                input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
        hf_outputs[(class_name, attribute)] = getattr(references[head], attribute).numpy()
    return EagerReferences(
        graph_inputs={"vision_tower": {"pixel_values": pixel_values.numpy()},
                      "text_tower": {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()},
                      "cross_modal": cross_inputs},
        graph_outputs={"vision_tower": vision, "text_tower": text, "cross_modal": cross},
        hf_outputs=hf_outputs,
    )


def _max_abs_diff(actual: np.ndarray, expected: np.ndarray) -> float:
    if actual.shape != expected.shape:
        return float("inf")
    return float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64)), initial=0.0))


def check_parity(graph_dir: Path, specs: dict[str, GraphSpec], refs: EagerReferences,
                 files: dict[str, str] | None = None) -> list[ParityRow]:
    """Run each graph with ONNX Runtime on the eager inputs, then chain all three; compare every output."""
    import onnxruntime as ort

    files = files or {name: spec.file for name, spec in specs.items()}
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sessions = {name: ort.InferenceSession(str(graph_dir / files[name]), options, providers=["CPUExecutionProvider"])
                for name in specs}

    def run(name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [t.name for t in specs[name].outputs]
        return dict(zip(names, sessions[name].run(names, feeds)))

    rows = []
    for name, spec in specs.items():
        got = run(name, refs.graph_inputs[name])
        rows += [ParityRow(f"graph:{name}", t.name, _max_abs_diff(got[t.name], refs.graph_outputs[name][t.name]),
                           t.tolerance) for t in spec.outputs]

    vision = run("vision_tower", refs.graph_inputs["vision_tower"])
    text = run("text_tower", refs.graph_inputs["text_tower"])
    feeds = dict(refs.graph_inputs["cross_modal"], text_bridge=text["text_bridge"],
                 image_bridge=vision["image_bridge"])
    chained = {**vision, **text, **run("cross_modal", feeds)}
    tolerances = {t.name: t.tolerance for spec in specs.values() for t in spec.outputs}
    for class_name, attribute, output, _ in HF_OUTPUTS:
        if (class_name, attribute) in refs.hf_outputs:
            rows.append(ParityRow(f"e2e:{class_name}.{attribute}", output,
                                  _max_abs_diff(chained[output], refs.hf_outputs[(class_name, attribute)]),
                                  tolerances[output]))
    return rows


def parity_table(rows: list[ParityRow], title: str = "Parity against eager PyTorch (fp32)"):
    from rich.table import Table

    table = Table(title=title)
    for column in ("check", "output", "max abs diff", "tolerance", "pass"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.check, row.output, f"{row.max_abs_diff:.3g}", f"{row.tolerance:.0e}",
                      "[green]yes[/green]" if row.passed else "[red]NO[/red]")
    return table
