"""Read, check and write `manifest.json`: the schema version, types (bt_runtime.manifest.codec), what types cannot
say (graph names, shapes, wiring ends), and the files it names (confined, present, nothing stray).

Every error is a one-line ManifestError that names the field. An export of an older schema is refused with the way
forward (docs/manifest.md, "Versions"): a manifest cannot be upgraded without the checkpoint, because checksums,
goldens and the graphs themselves change.
"""

from __future__ import annotations

import json
import os
import typing
from pathlib import Path

import numpy as np

from ..errors import ManifestError
from ..integrity import confined_path
from .codec import from_json, schema_of, to_json
from .schema import GRAPH_NAMES, MANIFEST_NAME, OPTIONAL_GRAPH_NAMES, SCHEMA_VERSION, GoldenDtype, Manifest

SCHEMA_FILE = Path(__file__).parents[1] / "manifest.schema.json"
# what golden files may hold: the schema's dtypes, with their item sizes for the file-size check
GOLDEN_ITEMSIZE = {dtype: np.dtype(dtype).itemsize for dtype in typing.get_args(GoldenDtype)}
# BridgeTower resizes to at most 1333/800 × the crop (479 px for 288); 4× leaves room for other processors while a
# resize stays far below a MemoryError (a 10^9-px edge was one)
MAX_RESIZE_FACTOR = 4
_REEXPORT = "re-export the checkpoint with this bt-export (golden vectors and checksums are regenerated with it)."
_OLDER = {
    1: "Version 1 exports cannot be upgraded in place (checksums of every file and the HF reference must be "
       "measured): " + _REEXPORT,
    2: "Version 2 exports put the layer axis first in the bridges ((C, batch, …)); later graphs are batch first "
       "((batch, C, …)) so servers can batch requests: " + _REEXPORT,
    3: "Version 3 exports record TensorRT engines untyped and the broadcast rule twice, and name no graph per "
       "golden tensor: " + _REEXPORT,
}


def json_schema() -> dict:
    """The JSON Schema of manifest.json, published as bt_runtime/manifest.schema.json (a test keeps them equal)."""
    schema = schema_of(Manifest)
    schema["properties"]["schema_version"] = {"const": SCHEMA_VERSION}
    schema["properties"]["graphs"]["propertyNames"] = {"enum": list(GRAPH_NAMES + OPTIONAL_GRAPH_NAMES)}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "bt-toolkit export manifest",
            **schema}


def dump(manifest: Manifest) -> str:
    return json.dumps(to_json(manifest), indent=2, ensure_ascii=False) + "\n"


def write_manifest(directory: str | Path, manifest: Manifest) -> None:
    """Write `directory/manifest.json` atomically (a reader sees the old file or the new one, never half)."""
    path = Path(directory) / MANIFEST_NAME
    partial = path.with_name(f".{MANIFEST_NAME}.partial")
    partial.write_text(dump(manifest), encoding="utf-8")
    os.replace(partial, path)


def from_dict(data, where: str = MANIFEST_NAME) -> Manifest:
    """Validate a parsed manifest (version, types and required fields, then meaning); errors name the field."""
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != SCHEMA_VERSION:
        hint = (_OLDER.get(version) if type(version) is int else None) or \
            "Re-export with the matching bt-export, or upgrade bt-toolkit."
        raise ManifestError(f"{where} has schema_version {version!r}; this bt-toolkit reads {SCHEMA_VERSION}. {hint}")
    manifest = from_json(Manifest, data, "manifest")
    check_meaning(manifest)
    return manifest


def check_meaning(m: Manifest) -> None:
    """What the types cannot say: the graph set, shapes, variants' files, wiring ends, value ranges."""
    def fail(message):
        raise ManifestError(f"manifest.{message}")

    missing = [g for g in GRAPH_NAMES if g not in m.graphs]
    unknown = [g for g in m.graphs if g not in GRAPH_NAMES + OPTIONAL_GRAPH_NAMES]
    if missing or unknown:
        fail(f"graphs: has {sorted(m.graphs)}; expected {list(GRAPH_NAMES)}, and optionally "
             f"{list(OPTIONAL_GRAPH_NAMES)}")
    for graph, io in m.graphs.items():
        for kind, tensors in (("inputs", io.inputs), ("outputs", io.outputs)):
            for i, t in enumerate(tensors):
                if any(isinstance(d, int) and d < 1 for d in t.shape):
                    fail(f"graphs.{graph}.{kind}[{i}].shape: {t.shape} has a fixed dimension < 1")
    if not m.variants:
        fail("variants: empty; an export has at least its fp32 graphs")
    for precision, variant in m.variants.items():
        if sorted(variant.files) != sorted(m.graphs):
            fail(f"variants.{precision}.files: has {sorted(variant.files)}; expected the graphs {sorted(m.graphs)}")
        for i, recipe in enumerate(variant.recipes):
            if sorted(recipe.files) != sorted(m.graphs):
                fail(f"variants.{precision}.recipes[{i}].files: has {sorted(recipe.files)}; expected the graphs "
                     f"{sorted(m.graphs)}")
    p, r = m.preprocessing, m.preprocessing.resize
    for name, value in (("image_size", p.image_size), ("resize.shortest_edge", r.shortest_edge),
                        ("resize.longest_edge", r.longest_edge), ("resize.size_divisor", r.size_divisor),
                        ("center_crop.height", p.center_crop.height), ("center_crop.width", p.center_crop.width)):
        if value < 1:
            fail(f"preprocessing.{name}: {value}; must be ≥ 1")
    crop = p.center_crop
    if (crop.height, crop.width, crop.pad_value) != (p.image_size, p.image_size, 0.0):
        fail(f"preprocessing.center_crop: height {crop.height}, width {crop.width}, pad_value {crop.pad_value}; "
             f"expected height = width = image_size ({p.image_size}) and pad_value 0 (what bt_runtime implements)")
    if len(p.mean) != 3 or len(p.std) != 3 or any(s == 0 for s in p.std):
        fail(f"preprocessing.mean/std: {p.mean} / {p.std}; expected three values each, std non-zero")
    if not 0 < p.rescale_factor <= 1:
        fail(f"preprocessing.rescale_factor: {p.rescale_factor}; must be in (0, 1]")
    _check_bounds(m, fail)
    if m.wiring is not None:
        _check_wiring(m, fail)
        for graph in m.wiring.broadcast.graphs:
            if graph not in m.graphs:
                fail(f"wiring.broadcast.graphs: {graph!r}; valid: graphs of this export {sorted(m.graphs)}")
    if m.golden is not None:
        for i, tensor in enumerate(m.golden.tensors):
            if tensor.graph is not None and tensor.graph not in m.graphs:
                fail(f"golden.tensors[{i}].graph: {tensor.graph!r}; valid: null or one of {sorted(m.graphs)}")
    if m.tokenizer.max_length < 3:
        fail(f"tokenizer.max_length: {m.tokenizer.max_length}; must be ≥ 3")
    if m.golden is not None:
        for i, tensor in enumerate(m.golden.tensors):
            if tensor.dtype not in GOLDEN_ITEMSIZE:
                fail(f"golden.tensors[{i}].dtype: {tensor.dtype!r}; valid: {sorted(GOLDEN_ITEMSIZE)}")
            if any(d < 0 for d in tensor.shape):
                fail(f"golden.tensors[{i}].shape: {tensor.shape} has a negative dimension")


def _check_bounds(m: Manifest, fail) -> None:
    """Values the graphs bound, checked here so that a hand-edited manifest is a one-line error naming the field
    instead of ONNX Runtime's InvalidArgument mid-run or a MemoryError (docs/limits.md, "Manifests")."""
    t, c = m.tokenizer, m.config
    if t.max_length > c.max_text_length:
        fail(f"tokenizer.max_length: {t.max_length}; the text tower has positions for at most {c.max_text_length} "
             "tokens (config.max_text_length)")
    for name in ("pad_token_id", "bos_token_id", "eos_token_id", "mask_token_id"):
        value = getattr(t, name)
        if not 0 <= value < min(t.vocab_size, c.vocab_size):
            fail(f"tokenizer.{name}: {value}; must be a token id in [0, {min(t.vocab_size, c.vocab_size)})")
    embeds = [(g, x) for g, io in m.graphs.items() for x in io.outputs if x.name.endswith("_embeds")]
    for graph, x in embeds:  # the index job sizes its buffers from config; the graph gives the vectors
        if isinstance(x.shape[-1], int) and x.shape[-1] != c.contrastive_hidden_size:
            fail(f"config.contrastive_hidden_size: {c.contrastive_hidden_size}; {graph}'s {x.name} is {x.shape}")
    p, r = m.preprocessing, m.preprocessing.resize
    pixels = next((x for x in m.graphs["vision_tower"].inputs if x.name == "pixel_values"), None)
    if pixels is not None and [d for d in pixels.shape[-2:] if isinstance(d, int)] not in ([], [p.image_size] * 2):
        fail(f"preprocessing.image_size: {p.image_size}; the vision tower's pixel_values is {pixels.shape}")
    if r.enabled and not r.size_divisor <= r.shortest_edge <= r.longest_edge <= MAX_RESIZE_FACTOR * p.image_size:
        fail(f"preprocessing.resize: shortest_edge {r.shortest_edge}, longest_edge {r.longest_edge}, size_divisor "
             f"{r.size_divisor}; need size_divisor ≤ shortest_edge ≤ longest_edge ≤ {MAX_RESIZE_FACTOR} × image_size "
             f"({MAX_RESIZE_FACTOR * p.image_size})")


def _check_wiring(m: Manifest, fail) -> None:
    for i, wire in enumerate(m.wiring.wires):
        ends = [(wire.graph, wire.input, "inputs"),
                (wire.source_graph, wire.source, "outputs" if wire.source_kind == "output" else "inputs")]
        for graph, name, kind in ends:
            if graph not in m.graphs or name not in [t.name for t in getattr(m.graphs[graph], kind)]:
                fail(f"wiring.wires[{i}]: {graph}.{name} is not one of that graph's {kind}")
    for i, sub in enumerate(m.wiring.substitutes):
        if sub.graph not in m.graphs or sub.replaces not in m.graphs:
            fail(f"wiring.substitutes[{i}]: {sub.graph} → {sub.replaces}: both must be graphs of this export")
        given = set(m.graphs[sub.graph].output_names)
        if given | set(sub.omits) != set(m.graphs[sub.replaces].output_names):
            fail(f"wiring.substitutes[{i}]: {sub.graph}'s outputs and omits {sorted(sub.omits)} must make up "
                 f"{sub.replaces}'s outputs")


def check_files(manifest: Manifest, directory: Path) -> Manifest:
    """Every file `manifest` names is a bare name, present in `directory`, and every external-data file there is
    listed; sets manifest.directory. For a manifest just built in memory as well as one read from disk."""
    path = directory / MANIFEST_NAME
    listed = {ref.file for ref in manifest.files}
    names = [(f"files[{i}]", ref.file) for i, ref in enumerate(manifest.files)]
    names.append(("tokenizer.file", manifest.tokenizer.file))
    if manifest.golden is not None:
        names.append(("golden.image.file", manifest.golden.image.file))
        names += [(f"golden.tensors[{i}].file", t.file) for i, t in enumerate(manifest.golden.tensors)]
        for i, item in enumerate(manifest.golden.inputs):
            names.append((f"golden.inputs[{i}].image.file", item.image.file))
            names += [(f"golden.inputs[{i}].tensors[{k}].file", t.file) for k, t in enumerate(item.tensors)]
    for precision, variant in manifest.variants.items():
        sets = [(f"variants.{precision}.files", variant.files)] + [
            (f"variants.{precision}.recipes[{i}].files", r.files) for i, r in enumerate(variant.recipes)]
        for where, files in sets:
            for graph, entry in files.items():
                names.append((f"{where}.{graph}.file", entry.file))
                names += [(f"{where}.{graph}.external_data[{i}].file", ref.file)
                          for i, ref in enumerate(entry.external_data)]
                listed |= {entry.file, *(ref.file for ref in entry.external_data)}
    for precision, section in manifest.tensorrt.items():  # engines may be absent: the backend says how to rebuild
        for graph, engine in section.engines.items():
            confined_path(directory, engine.file, f"{path}: tensorrt.{precision}.engines.{graph}.file")
    absent, odd = [], []
    for where, name in names:
        file = confined_path(directory, name, f"{path}: {where}")
        if not file.is_file():
            (odd if file.exists() else absent).append(name)  # a FIFO would block its read
    if absent:
        raise ManifestError(f"export directory {str(directory)!r} is missing file(s) named in its manifest: "
                            f"{sorted(set(absent))}")
    if odd:
        raise ManifestError(f"export directory {str(directory)!r}: file(s) named in its manifest are not regular "
                            f"files: {sorted(set(odd))}; re-export, or copy the export again")
    for i, tensor in enumerate(manifest.golden.tensors if manifest.golden is not None else []):
        size, expected = (directory / tensor.file).stat().st_size, GOLDEN_ITEMSIZE[tensor.dtype]
        for d in tensor.shape:
            expected *= d
        if size != expected:
            raise ManifestError(f"{str(path)!r}: golden.tensors[{i}] ({tensor.name}): {tensor.file} holds {size} "
                                f"bytes; {tensor.shape} × {tensor.dtype} is {expected}")
    if manifest.tokenizer.file not in {ref.file for ref in manifest.files}:
        raise ManifestError(f"{str(path)!r}: tokenizer.file {manifest.tokenizer.file!r} is not listed under `files` "
                            "with a sha256")
    stray = sorted(p.name for p in directory.glob("*.data") if p.name not in listed)
    if stray:
        raise ManifestError(f"export directory {str(directory)!r} holds external-data file(s) its manifest does not "
                            f"list: {stray}; an export reads only listed files. Remove them or re-export.")
    manifest.directory = directory
    return manifest


def checked(manifest: Manifest, directory: str | Path) -> Manifest:
    """A manifest built in memory, checked as `read_manifest` checks one on disk (types and meaning through a JSON
    round trip, then its files in `directory`): the checked copy, its `directory` set."""
    return check_files(from_dict(json.loads(dump(manifest))), Path(directory))


def read_manifest(directory: str | Path) -> Manifest:
    """Read, validate and check `directory/manifest.json`: schema, confined names, every listed file present."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        raise ManifestError(f"export directory {str(directory)!r} {what}")
    if path.is_symlink():  # as for every file it lists (integrity.confined_path): the contract is the export's own
        raise ManifestError(f"{str(path)!r} is a symbolic link; an export holds regular files only (copy the export "
                            "rather than linking its files; a link to the whole directory is fine)")
    if not path.is_file():
        if path.exists():  # a FIFO would block the read, a directory fail it
            raise ManifestError(f"{str(path)!r} is not a regular file (was the export directory made by bt-export?)")
        raise ManifestError(f"export directory {str(directory)!r} has no {MANIFEST_NAME} (was it made by bt-export?)")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ManifestError(f"{str(path)!r} is not UTF-8 text (byte {err.start}): the file is damaged") from err
    except (OSError, json.JSONDecodeError, RecursionError) as err:
        raise ManifestError(f"{str(path)!r} is not readable JSON: {err}") from err
    return check_files(from_dict(data, repr(str(path))), directory)
