"""Golden vectors: what an export computes on one encoded image and a few texts, every step kept — decoded RGB,
resized RGB, the cropped uint8 image, pixel_values, input_ids/attention_mask, the image_index fed to cross_modal,
every graph output (mlm_logits at the <mask> positions only), and the task outputs (ITM probability, fill-mask top-5
ids) — as raw little-endian tensors beside the graphs (`golden.<name>.bin`, listed in the manifest with dtype, shape,
sha256 and tolerance); and the golden input suite (`golden.inputs`): small images in other modes and formats (alpha,
palette, grey, CMYK, EXIF-rotated and plain JPEG) with their preprocessing steps (`golden.input.<name>.<step>.bin`).
A port (C++, Node, another runtime) checks itself step by step against them (docs/ports.md); `bt-run verify EXPORT`
re-checks the export itself.

Written by bt-export from the fp32 graphs with bt_runtime (no torch), after the export passed parity against eager
transformers, so the goldens are the runtime's outputs on a validated export.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ManifestError
from .features import softmax
from .integrity import sha256_file, verify_sha256
from .manifest import FileRef, Golden, GoldenInput, GoldenTensor

PREFIX = "golden."
INPUT_PREFIX = "golden.input."
STEPS = ("decoded_rgb", "resized_rgb", "cropped", "pixel_values")  # preprocessing, in order (docs/preprocessing.md)
EXACT = ("decoded_rgb", "resized_rgb", "cropped", "input_ids", "attention_mask", "image_index", "fill_mask_top5")
# → the graph they come from: task outputs, and mlm_logits at the <mask> positions ((T, S, V) is too large to ship)
TASK_OUTPUTS = {"itm_probability": "cross_modal", "fill_mask_top5": "cross_modal", "mlm_logits_at_mask": "cross_modal"}
ITEM_SIZE = {"uint8": 1, "int64": 8, "float32": 4}


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
    feeds = _cross_feeds(text["text_bridge"], vision["image_bridge"], encoded.attention_mask)
    cross = run("cross_modal", feeds)
    tensors.update(vision)
    tensors.update(text)
    tensors["image_index"] = feeds["image_index"]
    mlm = cross.pop("mlm_logits", None)  # (T, S, V): shipped at the <mask> positions only
    tensors.update(cross)
    if "itm_logits" in cross:
        tensors["itm_probability"] = softmax(cross["itm_logits"])[:, 1]  # what itm_scores returns
    if mlm is not None:
        masked = encoded.input_ids == runtime.tokenizer.mask_token_id  # (T, S)
        if masked.any():
            tensors["mlm_logits_at_mask"] = mlm[masked]  # (M, V), masked positions in row-major (text, position) order
            tensors["fill_mask_top5"] = np.argsort(-mlm[masked], axis=-1, kind="stable")[:, :5].astype(np.int64)
    return {name: np.ascontiguousarray(array) for name, array in tensors.items()}


def compute_input(runtime, image) -> dict[str, np.ndarray]:
    """The preprocessing steps of one golden-suite image (a path or encoded bytes)."""
    steps = runtime.preprocess.stages(image, "golden input")
    return {name: np.ascontiguousarray(steps[name]) for name in STEPS}


def _cross_feeds(text_bridge: np.ndarray, image_bridge: np.ndarray, attention_mask: np.ndarray) -> dict:
    """Every text against the one golden image: image_index all zeros (shipped as the `image_index` golden)."""
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
    entries = _write_tensors(directory, PREFIX, tensors, tolerances, graphs)
    return Golden(image=FileRef(image_name, sha256_file(directory / image_name)), texts=list(texts), tensors=entries)


def write_input(directory: Path, name: str, image_file: Path, exercises: str, tensors: dict[str, np.ndarray],
                tolerances: dict[str, float]) -> GoldenInput:
    """One golden-suite entry: `image_file` (already in `directory`) and its preprocessing steps."""
    entries = _write_tensors(directory, f"{INPUT_PREFIX}{name}.", tensors, tolerances, {})
    return GoldenInput(name=name, image=FileRef(Path(image_file).name, sha256_file(image_file)), exercises=exercises,
                       tensors=entries)


def _write_tensors(directory: Path, prefix: str, tensors: dict[str, np.ndarray], tolerances: dict[str, float],
                   graphs: dict[str, str]) -> list[GoldenTensor]:
    entries = []
    for name, array in tensors.items():
        file = f"{prefix}{name}.bin"
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        (directory / file).write_bytes(little.tobytes(order="C"))
        tolerance = 0.0 if name in EXACT else float(tolerances["mlm_logits" if name == "mlm_logits_at_mask" else name])
        entries.append(GoldenTensor(name=name, file=file, dtype=array.dtype.name, shape=list(array.shape),
                                    sha256=sha256_file(directory / file), tolerance=tolerance,
                                    graph=graphs.get(name)))
    return entries


def check(golden: Golden | None, directory) -> Golden:
    """The golden section is usable: present, tensors listed, each tensor's shape, tolerance and name sound. A
    ManifestError (one line) names the first bad entry."""
    if golden is None:
        raise ManifestError(f"{str(directory)!r} has no golden vectors (exported with --no-validate, or by a "
                            "bt-export before them); re-export to get them")
    sections = [("golden.tensors", golden.tensors, None)]
    sections += [(f"golden.inputs[{i}].tensors", item.tensors, STEPS) for i, item in enumerate(golden.inputs)]
    if not golden.texts:
        raise ManifestError("manifest.golden.texts: empty; the goldens need the texts they were computed from; "
                            "re-export to regenerate them")
    for where, entries, valid_names in sections:
        if not entries:
            raise ManifestError(f"manifest.{where}: empty; a golden set lists at least one tensor; re-export to "
                                "regenerate the golden vectors")
        seen = set()
        for k, entry in enumerate(entries):
            at = f"manifest.{where}[{k}] ({entry.name!r})"
            if entry.name in seen:
                raise ManifestError(f"{at}: name listed twice")
            seen.add(entry.name)
            if valid_names is not None and entry.name not in valid_names:
                raise ManifestError(f"{at}: not a preprocessing step; valid: {list(valid_names)}")
            if not entry.shape or any(d < 0 for d in entry.shape):
                raise ManifestError(f"{at}: shape {entry.shape}; expected one or more dimensions, each ≥ 0")
            if not (np.isfinite(entry.tolerance) and entry.tolerance >= 0):
                raise ManifestError(f"{at}: tolerance {entry.tolerance}; expected a finite number ≥ 0")
    names = [item.name for item in golden.inputs]
    if len(set(names)) != len(names):
        raise ManifestError(f"manifest.golden.inputs: names {names} are not unique")
    return golden


def read(manifest, entry: GoldenTensor) -> np.ndarray:
    path = manifest.path(entry.file)
    verify_sha256(path, entry.sha256, "Re-export to regenerate the golden vectors.")
    expected = int(np.prod(entry.shape)) * ITEM_SIZE[entry.dtype]
    if path.stat().st_size != expected:
        raise ManifestError(f"{entry.file}: {path.stat().st_size} bytes; {entry.dtype} {entry.shape} needs "
                            f"{expected}. Re-export to regenerate the golden vectors.")
    return np.fromfile(path, dtype=np.dtype(entry.dtype).newbyteorder("<")).reshape(entry.shape)


def verify(runtime) -> list[VerifyRow]:
    """Recompute every golden tensor with `runtime` from the shipped image and texts, and every golden-suite step
    from its shipped image; one row per tensor (suite rows named `input:<name>:<step>`)."""
    golden = check(runtime.manifest.golden, runtime.manifest.directory)
    image = runtime.manifest.path(golden.image.file)
    verify_sha256(image, golden.image.sha256, "Re-export to regenerate the golden vectors.")
    actual = compute(runtime, image, golden.texts)
    rows = _compare(runtime.manifest, golden.tensors, actual, "")
    rows += _verify_substitutes(runtime, actual, {entry.name: entry for entry in golden.tensors})
    for item in golden.inputs:
        path = runtime.manifest.path(item.image.file)
        verify_sha256(path, item.image.sha256, "Re-export to regenerate the golden vectors.")
        rows += _compare(runtime.manifest, item.tensors, compute_input(runtime, path), f"input:{item.name}:")
    return rows


def _compare(manifest, entries: list[GoldenTensor], actual: dict[str, np.ndarray], label: str) -> list[VerifyRow]:
    """One row per entry: max |actual − golden| in float64 (inf when missing or shaped differently)."""
    rows = []
    for entry in entries:
        expected = read(manifest, entry)
        got = actual.get(entry.name)
        if got is None or got.shape != expected.shape:
            rows.append(VerifyRow(label + entry.name, float("inf"), entry.tolerance))
            continue
        diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
        rows.append(VerifyRow(label + entry.name, float(diff.max(initial=0.0)), entry.tolerance))
    return rows


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
