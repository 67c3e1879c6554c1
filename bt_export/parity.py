"""Parity of exported graphs against eager PyTorch, per graph and end to end against Hugging Face's classes.

References are computed before export (exporting can disturb an in-memory model). Every output is compared, all
failures are collected with their max difference, and the caller decides once whether to raise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from bt_runtime.backends.onnxruntime import cpu_session  # the runtime's options: parity checks what it runs
from bt_runtime.features import softmax

from .model import hf_reference
from .specs import POOLED_GRAPH, GraphSpec
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


HIGHER_IS_BETTER = ("agreement", "cosine_min")  # other metrics are differences: lower is better


@dataclass
class ParityRow:
    check: str  # "graph:<name>" (graph vs the same torch sub-computation) or "e2e:<HF class>.<attribute>"
    output: str
    value: float
    bound: float
    metric: str = "max_abs_diff"  # or itm_probability_abs, itm_decision_agreement, top1_agreement, cosine_min

    @property
    def passed(self) -> bool:
        if not np.isfinite(self.value):
            return False
        return self.value >= self.bound if self.metric.endswith(HIGHER_IS_BETTER) else self.value <= self.bound

    def to_json(self) -> dict:
        return {**asdict(self), "passed": self.passed}


@dataclass
class EagerReferences:
    graph_inputs: dict[str, dict[str, np.ndarray]]  # graph name → input name → array
    graph_outputs: dict[str, dict[str, np.ndarray]]  # graph name → output name → array
    hf_outputs: dict[tuple[str, str], np.ndarray]  # (HF class, attribute) → array


def _named(outputs, spec: GraphSpec) -> dict[str, np.ndarray]:
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    return {t.name: o.numpy() for t, o in zip(spec.outputs, outputs, strict=True)}


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
    graph_inputs = {"vision_tower": {"pixel_values": pixel_values.numpy()},
                    "text_tower": {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()},
                    "cross_modal": cross_inputs}
    graph_outputs = {"vision_tower": vision, "text_tower": text, "cross_modal": cross}
    if POOLED_GRAPH in specs:  # judged against the full stack's outputs: it must compute the same numbers
        graph_inputs[POOLED_GRAPH] = cross_inputs
        graph_outputs[POOLED_GRAPH] = {t.name: cross[t.name] for t in specs[POOLED_GRAPH].outputs}
    return EagerReferences(graph_inputs, graph_outputs, hf_outputs)


def _max_abs_diff(actual: np.ndarray, expected: np.ndarray) -> float:
    if actual.shape != expected.shape:
        return float("inf")
    return float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64)), initial=0.0))


def _runner(graph_dir: Path, specs: dict[str, GraphSpec], files: dict[str, str]):
    sessions = {name: cpu_session(graph_dir / files[name]) for name in specs}

    def run(name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [t.name for t in specs[name].outputs]
        return dict(zip(names, sessions[name].run(names, feeds), strict=True))

    return run


def _chain(run, refs: EagerReferences, specs: dict[str, GraphSpec]) -> dict[str, np.ndarray]:
    """vision → text → cross-modal on the eager inputs, as bt_runtime runs them: the heads other than MLM from
    the pooled graph where there is one (its outputs win), mlm_logits from cross_modal."""
    vision = run("vision_tower", refs.graph_inputs["vision_tower"])
    text = run("text_tower", refs.graph_inputs["text_tower"])
    feeds = dict(refs.graph_inputs["cross_modal"], text_bridge=text["text_bridge"],
                 image_bridge=vision["image_bridge"])
    pooled = run(POOLED_GRAPH, feeds) if POOLED_GRAPH in specs else {}
    return {**vision, **text, **run("cross_modal", feeds), **pooled}


def check_parity(graph_dir: Path, specs: dict[str, GraphSpec], refs: EagerReferences,
                 files: dict[str, str] | None = None) -> list[ParityRow]:
    """fp32: run each graph with ONNX Runtime on the eager inputs, then chain all three; max |Δ| of every output."""
    run = _runner(graph_dir, specs, files or {name: spec.file for name, spec in specs.items()})
    rows = []
    for name, spec in specs.items():
        got = run(name, refs.graph_inputs[name])
        rows += [ParityRow(f"graph:{name}", t.name, _max_abs_diff(got[t.name], refs.graph_outputs[name][t.name]),
                           t.tolerance) for t in spec.outputs]
    chained = _chain(run, refs, specs)
    tolerances = {t.name: t.tolerance for spec in specs.values() for t in spec.outputs}
    for class_name, attribute, output, _ in HF_OUTPUTS:
        if (class_name, attribute) in refs.hf_outputs:
            rows.append(ParityRow(f"e2e:{class_name}.{attribute}", output,
                                  _max_abs_diff(chained[output], refs.hf_outputs[(class_name, attribute)]),
                                  tolerances[output]))
    return rows


def check_task_parity(graph_dir: Path, specs: dict[str, GraphSpec], refs: EagerReferences, files: dict[str, str],
                      bounds: dict[str, float], run=None) -> list[ParityRow]:
    """Reduced precision: the graphs chained vs fp32 eager transformers, in task terms (bounds from specs).
    `run(name, feeds)` replaces the default runner over `files` (the int8 search passes one that reuses work)."""
    chained = _chain(run or _runner(graph_dir, specs, files), refs, specs)
    hf, rows = refs.hf_outputs, []
    if ("BridgeTowerForImageAndTextRetrieval", "logits") in hf:
        ours, theirs = chained["itm_logits"], hf[("BridgeTowerForImageAndTextRetrieval", "logits")]
        check = "e2e:BridgeTowerForImageAndTextRetrieval.logits"
        rows.append(ParityRow(check, "itm_logits", _max_abs_diff(softmax(ours)[:, 1], softmax(theirs)[:, 1]),
                              bounds["itm_probability_abs"], "itm_probability_abs"))
        rows.append(ParityRow(check, "itm_logits", float(np.mean(ours.argmax(-1) == theirs.argmax(-1))),
                              bounds["itm_decision_agreement"], "itm_decision_agreement"))
    if ("BridgeTowerForMaskedLM", "logits") in hf:
        attended = refs.graph_inputs["text_tower"]["attention_mask"].astype(bool)  # (B, S): real tokens only
        same = chained["mlm_logits"].argmax(-1) == hf[("BridgeTowerForMaskedLM", "logits")].argmax(-1)
        rows.append(ParityRow("e2e:BridgeTowerForMaskedLM.logits", "mlm_logits", float(same[attended].mean()),
                              bounds["mlm_top1_agreement"], "mlm_top1_agreement"))
    for attribute in ("text_embeds", "image_embeds", "cross_embeds"):
        if ("BridgeTowerForContrastiveLearning", attribute) in hf:
            ours, theirs = chained[attribute], hf[("BridgeTowerForContrastiveLearning", attribute)]
            cosine = np.sum(ours * theirs, -1) / (np.linalg.norm(ours, axis=-1) * np.linalg.norm(theirs, axis=-1))
            rows.append(ParityRow(f"e2e:BridgeTowerForContrastiveLearning.{attribute}", attribute,
                                  float(cosine.min()), bounds["embedding_cosine_min"], "embedding_cosine_min"))
    return rows


def check_runtime_loads(manifest, samples, refs: EagerReferences, heads: tuple[str, ...]):
    """The last step before an export is committed: bt_runtime (no torch) opens the staged export (`manifest`, checked
    but not yet written), preprocesses
    sample 0 from its decoded image and raw text with its own image pipeline and tokenizer, and must agree with
    eager transformers on that pair (ITM probability, else the pooled output); then it writes the golden vectors
    (bt_runtime.golden) from the same runtime. Returns (the parity row, the manifest's golden section); raises
    ParityError otherwise."""
    from bt_runtime import BridgeTowerRuntime
    from bt_runtime.errors import USER_FACING

    from .errors import ParityError

    try:
        with BridgeTowerRuntime.load(manifest) as runtime:
            row = _score_first_pair(runtime, samples, refs, heads)
            golden = _write_golden(runtime, manifest.directory, samples, heads) if row.passed else None
    except USER_FACING as err:
        raise ParityError(f"bt_runtime refuses the export about to be written ({err}); nothing was written") from err
    if not row.passed:
        raise ParityError(f"bt_runtime, with its own preprocessing and tokenizer, disagrees with eager transformers "
                          f"on {samples.image_names[0]!r} + {samples.texts[0]!r}: {row.metric}={row.value:.3g} "
                          f"(bound {row.bound:.3g}); nothing was written", rows={"runtime": [row]})
    return row, golden


def _score_first_pair(runtime, samples, refs: EagerReferences, heads: tuple[str, ...]) -> ParityRow:
    from .specs import FP32_TOLERANCES, RUNTIME_FP32_BOUNDS

    image, text = samples.images[0], samples.texts[0]
    if "itm" in heads:
        ours = float(runtime.itm_scores(image, [text])[0])
        theirs = float(softmax(refs.hf_outputs[("BridgeTowerForImageAndTextRetrieval", "logits")][:1])[0, 1])
        return ParityRow("runtime:itm_scores", "itm_logits", abs(ours - theirs),
                         RUNTIME_FP32_BOUNDS["itm_probability_abs"], "itm_probability_abs")
    images, texts = runtime.encode_images([image]), runtime.encode_texts([text])
    pooled = runtime.cross_modal(texts, images, np.zeros(1, np.int64), np.zeros(1, np.int64),
                                 ["pooler_output"])["pooler_output"][0]
    reference = refs.hf_outputs[("BridgeTowerModel", "pooler_output")][:1]
    return ParityRow("runtime:pooler_output", "pooler_output", _max_abs_diff(pooled, reference),
                     FP32_TOLERANCES["pooler_output"])


def _write_golden(runtime, staging: Path, samples, heads: tuple[str, ...]):
    """Golden vectors on sample 0's image (saved as PNG: lossless, so decoding is part of the check) and two texts,
    one with <mask> when the export has an MLM head; then the golden input suite (bt_export.golden_inputs), each
    image with its preprocessing steps."""
    from bt_runtime import golden

    from .golden_inputs import write_suite
    from .specs import GOLDEN_TOLERANCES

    mask = runtime.tokenizer.mask_token
    texts = [samples.texts[0], next((t for t in samples.texts if mask in t), samples.texts[-1])]
    if "mlm" in heads and mask not in texts[1]:
        texts[1] = f"a {mask} on a couch"
    image_file = staging / "golden-source.png"
    samples.images[0].save(image_file)
    try:
        section = golden.write(staging, image_file, texts, golden.compute(runtime, image_file, texts),
                               GOLDEN_TOLERANCES, golden.producers(runtime.manifest))
    finally:
        image_file.unlink()
    section.inputs = [golden.write_input(staging, item.name, path, item.exercises, golden.compute_input(runtime, path),
                                         GOLDEN_TOLERANCES)
                      for item, path in write_suite(staging, golden.INPUT_PREFIX)]
    return section


def parity_table(rows: list[ParityRow], title: str = "Parity against eager PyTorch (fp32)"):
    from rich.table import Table

    table = Table(title=title)
    for column in ("check", "output", "metric", "value", "bound", "pass"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.check, row.output, row.metric, f"{row.value:.6g}", f"{row.bound:.6g}",
                      "[green]yes[/green]" if row.passed else "[red]NO[/red]")
    return table
