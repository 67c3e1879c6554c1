"""Golden vectors: what an export computes on one encoded image and a few texts, every step kept — decoded RGB,
resized RGB, the cropped uint8 image, pixel_values, input_ids/attention_mask, every graph output, and the task
outputs (ITM probability, fill-mask top-5 ids) — as raw little-endian tensors beside the graphs
(`golden.<name>.bin`, listed in the manifest with dtype, shape, sha256 and tolerance). A port (C++, Node, another
runtime) checks itself step by step against them; `bt-run verify EXPORT` re-checks the export itself.

Written by bt-export from the fp32 graphs with bt_runtime (no torch), after the export passed parity against eager
transformers, so the goldens are the runtime's outputs on a validated export.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .features import softmax
from .integrity import sha256_file, verify_sha256
from .manifest import FileRef, Golden, GoldenTensor

PREFIX = "golden."
EXACT = ("decoded_rgb", "resized_rgb", "cropped", "input_ids", "attention_mask", "fill_mask_top5")
TASK_OUTPUTS = {"itm_probability": "cross_modal", "fill_mask_top5": "cross_modal"}  # → the graph they come from


@dataclass
class VerifyRow:
    name: str
    max_abs_diff: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_abs_diff) and self.max_abs_diff <= self.tolerance)


def compute(runtime, image, texts: list[str]) -> dict[str, np.ndarray]:
    """Every golden tensor for `image` (a path or encoded bytes) and `texts`, computed by `runtime`."""
    steps = runtime.preprocess.stages(image, "golden image")
    encoded = runtime.tokenizer(texts, "golden texts")
    run = runtime.backend.run
    tensors = dict(steps, input_ids=encoded.input_ids, attention_mask=encoded.attention_mask)
    vision = run("vision_tower", {"pixel_values": steps["pixel_values"][None]})
    text = run("text_tower", {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask})
    cross = run("cross_modal", _cross_feeds(text["text_bridge"], vision["image_bridge"], encoded.attention_mask))
    tensors.update(vision)
    tensors.update(text)
    mlm = cross.pop("mlm_logits", None)  # (T, S, V): too large to ship; its task output below is
    tensors.update(cross)
    if "itm_logits" in cross:
        tensors["itm_probability"] = softmax(cross["itm_logits"])[:, 1]  # what itm_scores returns
    if mlm is not None:
        masked = encoded.input_ids == runtime.tokenizer.mask_token_id  # (T, S)
        if masked.any():
            tensors["fill_mask_top5"] = np.argsort(-mlm[masked], axis=-1, kind="stable")[:, :5].astype(np.int64)
    return {name: np.ascontiguousarray(array) for name, array in tensors.items()}


def _cross_feeds(text_bridge: np.ndarray, image_bridge: np.ndarray, attention_mask: np.ndarray) -> dict:
    """Every text against the one golden image (image_index all zeros)."""
    return {"text_bridge": text_bridge, "image_bridge": image_bridge, "attention_mask": attention_mask,
            "image_index": np.zeros(text_bridge.shape[0], np.int64)}


def producers(manifest) -> dict[str, str]:
    """Golden tensor name → the graph whose run produced it (the graphs `compute` runs, and task outputs)."""
    graphs = {name: graph for graph in ("vision_tower", "text_tower", "cross_modal")
              for name in manifest.graph_io(graph).output_names}
    return {**graphs, **TASK_OUTPUTS}


def write(directory: Path, image_file: Path, texts: list[str], tensors: dict[str, np.ndarray],
          tolerances: dict[str, float], graphs: dict[str, str]) -> Golden:
    """Write the tensors and a copy of the encoded image into `directory`; the manifest's `golden` section. Float
    tensors get `tolerances`[name] (the exporter's specs), integer ones are exact; `graphs`: name → producing graph."""
    image_name = f"{PREFIX}image{Path(image_file).suffix.lower()}"
    (directory / image_name).write_bytes(Path(image_file).read_bytes())
    entries = []
    for name, array in tensors.items():
        file = f"{PREFIX}{name}.bin"
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        (directory / file).write_bytes(little.tobytes(order="C"))
        entries.append(GoldenTensor(name=name, file=file, dtype=array.dtype.name, shape=list(array.shape),
                                    sha256=sha256_file(directory / file),
                                    tolerance=0.0 if name in EXACT else float(tolerances[name]),
                                    graph=graphs.get(name)))
    return Golden(image=FileRef(image_name, sha256_file(directory / image_name)), texts=list(texts), tensors=entries)


def read(manifest, entry: GoldenTensor) -> np.ndarray:
    path = manifest.path(entry.file)
    verify_sha256(path, entry.sha256, "Re-export to regenerate the golden vectors.")
    return np.fromfile(path, dtype=np.dtype(entry.dtype).newbyteorder("<")).reshape(entry.shape)


def verify(runtime) -> list[VerifyRow]:
    """Recompute every golden tensor with `runtime` from the shipped image and texts; one row per tensor."""
    from .errors import ManifestError

    golden = runtime.manifest.golden
    if golden is None:
        raise ManifestError(f"{str(runtime.manifest.directory)!r} has no golden vectors (exported with "
                            "--no-validate, or by a bt-export before them); re-export to get them")
    image = runtime.manifest.path(golden.image.file)
    verify_sha256(image, golden.image.sha256, "Re-export to regenerate the golden vectors.")
    actual = compute(runtime, image, golden.texts)
    rows = []
    for entry in golden.tensors:
        expected = read(runtime.manifest, entry)
        got = actual.get(entry.name)
        if got is None or got.shape != expected.shape:
            rows.append(VerifyRow(entry.name, float("inf"), entry.tolerance))
            continue
        diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
        rows.append(VerifyRow(entry.name, float(diff.max(initial=0.0)), entry.tolerance))
    return rows + _verify_substitutes(runtime, actual, {entry.name: entry for entry in golden.tensors})


def _verify_substitutes(runtime, actual: dict[str, np.ndarray], entries: dict) -> list[VerifyRow]:
    """Head-specific graphs (wiring.substitutes) against the golden outputs of the graph they replace, on the
    same bridges: one row per output, named `<graph>:<output>`."""
    wiring, rows = runtime.manifest.wiring, []
    for sub in wiring.substitutes if wiring is not None else []:
        if sub.replaces != "cross_modal":
            continue
        out = runtime.backend.run(sub.graph, _cross_feeds(actual["text_bridge"], actual["image_bridge"],
                                                          actual["attention_mask"]))
        for name, got in out.items():
            if name in entries:
                diff = np.abs(got.astype(np.float64) - read(runtime.manifest, entries[name]).astype(np.float64))
                rows.append(VerifyRow(f"{sub.graph}:{name}", float(diff.max(initial=0.0)), entries[name].tolerance))
    return rows
