"""`manifest.json`, schema version 3: the one typed contract between the exporter and everything that reads an export.

The dataclasses below *are* the schema. `load()` reads and validates a manifest once (types, required fields,
graph names, confined file names, files present) and every error names the field (`variants.int8.files.
cross_modal.sha256: expected a string, got 12`); `dump()` writes one; `json_schema()` derives the JSON Schema
published as `bt_runtime/manifest.schema.json` for readers in other languages (a test keeps the two in sync).
The exporter writes through `dump()`; the runtime, benchmarks and tests read the typed objects, never raw dicts.

Version 2 (vs 1): every file the runtime reads is listed with its sha256 (`files`, and external data per graph);
each graph file records the opset actually written in it; the HF reference the parity was measured against and
the preprocessing conventions that differ between transformers versions (`reference`); precision variants that
missed their bounds are recorded under `rejected_variants` instead of destroying the export; an int8 variant
records the CPU instruction-set class it was validated on. Version-1 exports are refused with a clear message
(re-export them: a manifest cannot be upgraded without the checkpoint, because the new checksums and the
reference must be measured).

Version 3 (vs 2): the graphs' bridges are batch first — `image_bridge` (batch, C, N, D), `text_bridge` (batch, C,
seq, D) — so servers can concatenate requests along axis 0 (the broadcast gathers along axis 0); each variant
records `min_onnxruntime`. Version-2 exports are refused with the way forward (re-export: the graphs change). An
export with an MLM head and ITM or ITC adds the head-specific graph `cross_modal_pooled` (`wiring.substitutes` says
what it replaces and what it leaves out).

File names are bare names inside the export directory: no path separators, no `..`, no leading dot, no symbolic
links; anything else is refused before a byte of it is read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from . import digests
from .errors import ManifestError

SCHEMA_VERSION = 3
MANIFEST_NAME = "manifest.json"
SCHEMA_FILE = Path(__file__).with_name("manifest.schema.json")
GRAPH_NAMES = ("vision_tower", "text_tower", "cross_modal")  # in every export
# Head-specific graphs, in exports where they apply (see Wiring.substitutes): cross_modal_pooled, written beside a
# cross_modal that has mlm_logits, computes the other heads without the MLM head and the last layer's other positions
OPTIONAL_GRAPH_NAMES = ("cross_modal_pooled",)
HEAD_NAMES = ("itm", "mlm", "itc")
RESAMPLE_NAMES = ("nearest", "lanczos", "bilinear", "bicubic", "box", "hamming")  # index = PIL's integer code
ALPHA_RULES = ("composite_on_white", "drop_alpha")
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


# ---------------------------------------------------------------------------------------------------- the schema

@dataclass
class TensorInfo:
    name: str
    dtype: str  # numpy dtype name: float32, int64
    shape: list[Union[int, str]]  # str: a symbolic axis (per graph), int: fixed by the checkpoint


@dataclass
class GraphIO:
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


@dataclass
class FileRef:
    file: str  # bare file name inside the export directory
    sha256: str


@dataclass
class GraphFile:
    file: str
    sha256: str
    opset: int  # the default-domain opset written in this file (read back from it at export)
    contrib_ops: bool = False  # uses com.microsoft operators (ONNX Runtime only)
    external_data: list[FileRef] = field(default_factory=list)  # every external-data file the graph references


@dataclass
class Parity:
    validated: bool
    passed: Union[bool, None]
    inputs: dict  # {"texts": […], "images": […]}
    rows: list[dict]  # ParityRow.to_json(): check, output, metric, value, bound, passed


@dataclass
class Variant:
    attention: str  # onnx | ort | none
    io_dtype: str
    files: dict[str, GraphFile]  # graph name → file
    parity: Parity
    fused_attention_nodes: dict[str, dict[str, int]] = field(default_factory=dict)
    details: dict = field(default_factory=dict)  # precision-specific facts (int8 recipe, fp16 kept-float32 list)
    validated_isa: Union[str, None] = None  # int8: CPU class the parity was measured on (bt_runtime.cpu.isa_class)
    # Lowest ONNX Runtime release measured to load and run this variant (scripts/ort_floor.py); None: not measured
    # for the opset this variant was written with
    min_onnxruntime: Union[str, None] = None


@dataclass
class RejectedVariant:
    reason: str
    parity: Parity


@dataclass
class Resize:
    enabled: bool
    shortest_edge: int
    longest_edge: int
    size_divisor: int
    resample: str  # one of RESAMPLE_NAMES
    rounding: str


@dataclass
class CenterCrop:
    enabled: bool
    height: int
    width: int
    pad_value: float


@dataclass
class Preprocessing:
    image_size: int
    alpha: str  # ALPHA_RULES: how transparency becomes RGB (differs between transformers versions)
    resize: Resize
    center_crop: CenterCrop
    rescale_factor: float
    normalize: bool
    mean: list[float]
    std: list[float]
    layout: str
    dtype: str
    exif_transpose: bool


@dataclass
class TokenizerInfo:
    file: str
    max_length: int
    pad_token_id: int
    bos_token_id: int
    eos_token_id: int
    mask_token: str
    mask_token_id: int
    vocab_size: int


@dataclass
class Reference:
    """What the parity was measured against, so that a reader can reproduce the same inputs."""
    transformers: str
    torch: str
    image_processor: str  # the transformers class that made the reference pixel_values
    image_backend: str  # pil | torchvision
    conventions: dict[str, str]  # convention → value, e.g. {"alpha": "composite_on_white", "resize": "pil-bicubic"}


@dataclass
class GoldenTensor:
    """One raw little-endian tensor of the golden set (C order), and how close a port must come to it."""
    name: str
    file: str
    dtype: str  # uint8, int64, float32
    shape: list[int]
    sha256: str
    tolerance: float  # max |Δ| allowed; 0 = exact


@dataclass
class Golden:
    """What this export computes on one encoded image and a few texts, step by step (bt-run verify)."""
    image: FileRef  # the encoded image file as shipped (decoding is part of what is checked)
    texts: list[str]
    tensors: list[GoldenTensor]


@dataclass
class Wire:
    """`graph`.`input` takes `source_graph`.`source` (an output, or an input shared with that graph)."""
    graph: str
    input: str
    source_graph: str
    source: str
    source_kind: str  # output | input


@dataclass
class AxisLink:
    """Symbolic axes are per graph: `graph`.`axis` has the size of `same_as_graph`.`same_as_axis`."""
    graph: str
    axis: str
    same_as_graph: str
    same_as_axis: str


@dataclass
class Broadcast:
    """Pair b of `graph` uses row `index_input`[b] of `gathered_input` along `axis` (one image, many texts)."""
    graph: str
    index_input: str
    gathered_input: str
    axis: int
    rule: str


@dataclass
class Substitute:
    """`graph` takes the inputs of `replaces` and gives the same numbers for its outputs, all but `omits`, for less
    work: run it instead whenever none of `omits` is needed."""
    graph: str
    replaces: str
    omits: list[str]
    rule: str


@dataclass
class Wiring:
    """How the graphs connect and what their outputs mean, as data (for readers in any language)."""
    wires: list[Wire]
    axes: list[AxisLink]
    broadcast: Broadcast
    outputs: dict[str, str]  # output name → meaning (label order, normalization, layout)
    substitutes: list[Substitute] = field(default_factory=list)

    def substitute_for(self, graph: str, outputs: list[str]) -> str:
        """The cheapest listed graph that gives `outputs` in place of `graph` (else `graph` itself)."""
        return next((s.graph for s in self.substitutes
                     if s.replaces == graph and not set(outputs) & set(s.omits)), graph)


@dataclass
class Checkpoint:
    kind: str  # tiny | alias | hub | local
    heads: list[str]
    head_classes: list[str]
    random_init: bool
    alias: Union[str, None] = None
    hub_id: Union[str, None] = None
    path: Union[str, None] = None
    revision: Union[str, None] = None
    seed: Union[int, None] = None


@dataclass
class ConfigSummary:
    hidden_size: int
    num_cross_layers: int
    num_cross_attention_heads: int
    link_tower_type: str
    share_cross_modal_transformer_layers: bool
    text: dict
    vision: dict
    image_size: int
    num_image_tokens: int
    vocab_size: int
    max_text_length: int
    contrastive_hidden_size: Union[int, None] = None
    logit_scale_init_value: Union[float, None] = None


@dataclass
class Manifest:
    schema_version: int
    created: str
    checkpoint: Checkpoint
    config: ConfigSummary
    preprocessing: Preprocessing
    tokenizer: TokenizerInfo
    graphs: dict[str, GraphIO]
    variants: dict[str, Variant]
    files: list[FileRef]  # every non-graph file the runtime reads (tokenizer.json), hashed
    reference: Reference
    cross_modal_broadcast: str
    versions: dict[str, str]
    rejected_variants: dict[str, RejectedVariant] = field(default_factory=dict)
    tensorrt: dict = field(default_factory=dict)  # precision → engines section (bt_runtime.backends.trt_build)
    golden: Union[Golden, None] = None  # golden vectors (bt_runtime.golden), written at export
    wiring: Union[Wiring, None] = None  # written by every bt-export since schema 2's wiring field
    directory: Union[Path, None] = field(default=None, metadata={"json": False})  # where it was loaded from

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(self.checkpoint.heads)

    @property
    def precisions(self) -> tuple[str, ...]:
        return tuple(self.variants)

    def graph_io(self, graph: str) -> GraphIO:
        return self.graphs[graph]

    def variant(self, precision: str) -> Variant:
        if precision not in self.variants:
            rejected = (f"; {precision} was rejected at export: {self.rejected_variants[precision].reason}"
                        if precision in self.rejected_variants else "")
            raise ManifestError(f"precision {precision!r} is not in this export; available: "
                                f"{list(self.precisions)}{rejected}")
        return self.variants[precision]

    def graph_file(self, graph: str, precision: str = "fp32") -> GraphFile:
        return self.variant(precision).files[graph]

    def graph_path(self, graph: str, precision: str = "fp32") -> Path:
        return self.path(self.graph_file(graph, precision).file)

    def path(self, name: str) -> Path:
        return confined_path(self.directory, name, name)

    def listed_file(self, name: str) -> FileRef:
        for ref in self.files:
            if ref.file == name:
                return ref
        raise ManifestError(f"{MANIFEST_NAME}: {name!r} is not listed under `files` (every file the runtime reads "
                            "must be listed with its sha256)")


# ------------------------------------------------------------------------------------- generic (de)serialisation

def _union_args(tp) -> tuple | None:
    origin = typing.get_origin(tp)
    return typing.get_args(tp) if origin is Union or origin is types.UnionType else None


def _describe(value) -> str:
    text = json.dumps(value)[:60] if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return {"dict": "an object", "list": "an array"}.get(text, text)


def _from_json(tp, value, where: str):
    if tp is Any:
        return value
    if (args := _union_args(tp)) is not None:
        if value is None and type(None) in args:
            return None
        for option in args:
            if option is type(None):
                continue
            try:
                return _from_json(option, value, where)
            except ManifestError:
                continue
        raise ManifestError(f"{where}: expected {_type_name(tp)}, got {_describe(value)}")
    origin = typing.get_origin(tp)
    if origin is list or tp is list:
        if not isinstance(value, list):
            raise ManifestError(f"{where}: expected an array, got {_describe(value)}")
        item = typing.get_args(tp)[0] if typing.get_args(tp) else Any
        return [_from_json(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ManifestError(f"{where}: expected an object, got {_describe(value)}")
        item = typing.get_args(tp)[1] if typing.get_args(tp) else Any
        return {k: _from_json(item, v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ManifestError(f"{where}: expected an object, got {_describe(value)}")
        hints, kwargs = typing.get_type_hints(tp), {}
        fields = [f for f in dataclasses.fields(tp) if f.metadata.get("json", True)]
        unknown = sorted(set(value) - {f.name for f in fields})
        if unknown:
            raise ManifestError(f"{where}: unknown field(s) {unknown}")
        for f in fields:
            if f.name in value:
                kwargs[f.name] = _from_json(hints[f.name], value[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ManifestError(f"{where}.{f.name}: required field missing")
        return tp(**kwargs)
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - a schema type this function does not know is a bug here, not bad input
        raise TypeError(f"unsupported schema type {tp!r}")
    if not ok:
        raise ManifestError(f"{where}: expected {_type_name(tp)}, got {_describe(value)}")
    return value


def _type_name(tp) -> str:
    if (args := _union_args(tp)) is not None:
        return " or ".join(_type_name(a) for a in args)
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


def _to_json(value):
    if dataclasses.is_dataclass(value):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.metadata.get("json", True)}
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    return value


def _schema(tp) -> dict:
    if tp is Any:
        return {}
    if (args := _union_args(tp)) is not None:
        return {"anyOf": [_schema(a) for a in args]}
    origin = typing.get_origin(tp)
    if origin is list or tp is list:
        args = typing.get_args(tp)
        return {"type": "array", **({"items": _schema(args[0])} if args else {})}
    if origin is dict or tp is dict:
        args = typing.get_args(tp)
        return {"type": "object", **({"additionalProperties": _schema(args[1])} if args else {})}
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        fields = [f for f in dataclasses.fields(tp) if f.metadata.get("json", True)]
        schema = {"type": "object", "additionalProperties": False,
                  "properties": {f.name: _schema(hints[f.name]) for f in fields},
                  "required": [f.name for f in fields
                               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]}
        if tp.__doc__ and not tp.__doc__.startswith(tp.__name__ + "("):
            schema["description"] = " ".join(tp.__doc__.split())
        return schema
    return {"type": {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}[tp]}


def json_schema() -> dict:
    """The JSON Schema of manifest.json, derived from the dataclasses above."""
    schema = _schema(Manifest)
    schema["properties"]["schema_version"] = {"const": SCHEMA_VERSION}
    schema["properties"]["graphs"]["propertyNames"] = {"enum": list(GRAPH_NAMES + OPTIONAL_GRAPH_NAMES)}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "bt-toolkit export manifest",
            **schema}


# ------------------------------------------------------------------------------------------------ files, hashes

def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str, remedy: str) -> None:
    """Refuse a file whose content no longer matches the sha256 the manifest recorded; `remedy` says what to do.
    A file verified before and unchanged since (same inode, size, mtime and ctime) is not hashed again
    (bt_runtime.digests says exactly what that trusts; BT_DIGEST_CACHE=off hashes every time)."""
    if digests.known(path, expected):
        return
    before = digests.stat_token(path)
    try:
        actual = sha256_file(path)
    except OSError as err:
        raise ManifestError(f"{str(path)!r} cannot be read: {err.strerror or err}") from err
    if actual != expected:
        raise ManifestError(f"{str(path)!r} does not match the sha256 recorded in {MANIFEST_NAME}: the file was "
                            f"modified, replaced or truncated. {remedy}")
    digests.remember(path, actual, before)


def confined_path(directory: Path, name, where: str) -> Path:
    """`directory/name` for a bare file name that stays inside `directory`; anything else is a ManifestError."""
    if not isinstance(name, str) or not _FILE_NAME.match(name) or name in (".", ".."):
        raise ManifestError(f"{where}: file name {name!r} is not a bare file name inside the export directory "
                            "(no path separators, '..', absolute paths or leading dots)")
    path = directory / name
    if path.is_symlink():
        raise ManifestError(f"{where}: {name!r} is a symbolic link; an export holds regular files only")
    return path


# ---------------------------------------------------------------------------------------------------- load/dump

def dump(manifest: Manifest) -> str:
    return json.dumps(_to_json(manifest), indent=2, ensure_ascii=False) + "\n"


def from_dict(data, where: str = MANIFEST_NAME) -> Manifest:
    """Validate a parsed manifest (types and required fields, then meaning); errors name the field."""
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != SCHEMA_VERSION:
        hint = (" Version 1 exports cannot be upgraded in place (checksums of every file and the HF reference must "
                "be measured): re-export the checkpoint with this bt-export." if version == 1 else
                " Version 2 exports put the layer axis first in the bridges ((C, batch, …)); version 3 graphs are "
                "batch first ((batch, C, …)) so servers can batch requests: re-export the checkpoint with this "
                "bt-export (golden vectors and checksums are regenerated with it)." if version == 2 else
                " Re-export with the matching bt-export, or upgrade bt-toolkit.")
        raise ManifestError(f"{where} has schema_version {version!r}; this bt-toolkit reads {SCHEMA_VERSION}.{hint}")
    manifest = _from_json(Manifest, data, "manifest")
    _check_meaning(manifest)
    return manifest


def _check_meaning(m: Manifest) -> None:
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
                if t.dtype not in ("float32", "float16", "int64", "int32"):
                    fail(f"graphs.{graph}.{kind}[{i}].dtype: {t.dtype!r}; valid: float32, float16, int64, int32")
                if any(isinstance(d, int) and d < 1 for d in t.shape):
                    fail(f"graphs.{graph}.{kind}[{i}].shape: {t.shape} has a fixed dimension < 1")
    if not m.variants:
        fail("variants: empty; an export has at least its fp32 graphs")
    for precision, variant in m.variants.items():
        if sorted(variant.files) != sorted(m.graphs):
            fail(f"variants.{precision}.files: has {sorted(variant.files)}; expected the graphs {sorted(m.graphs)}")
    unknown = [h for h in m.checkpoint.heads if h not in HEAD_NAMES]
    if unknown:
        fail(f"checkpoint.heads: unknown head(s) {unknown}; valid: {list(HEAD_NAMES)}")
    p, r = m.preprocessing, m.preprocessing.resize
    if r.resample not in RESAMPLE_NAMES:
        fail(f"preprocessing.resize.resample: {r.resample!r}; valid: {list(RESAMPLE_NAMES)}")
    if p.alpha not in ALPHA_RULES:
        fail(f"preprocessing.alpha: {p.alpha!r}; valid: {list(ALPHA_RULES)}")
    for name, value in (("image_size", p.image_size), ("resize.shortest_edge", r.shortest_edge),
                        ("resize.longest_edge", r.longest_edge), ("resize.size_divisor", r.size_divisor),
                        ("center_crop.height", p.center_crop.height), ("center_crop.width", p.center_crop.width)):
        if value < 1:
            fail(f"preprocessing.{name}: {value}; must be ≥ 1")
    if len(p.mean) != 3 or len(p.std) != 3 or any(s == 0 for s in p.std):
        fail(f"preprocessing.mean/std: {p.mean} / {p.std}; expected three values each, std non-zero")
    if not 0 < p.rescale_factor <= 1:
        fail(f"preprocessing.rescale_factor: {p.rescale_factor}; must be in (0, 1]")
    if m.wiring is not None:
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
    t = m.tokenizer
    if t.max_length < 3:
        fail(f"tokenizer.max_length: {t.max_length}; must be ≥ 3")


def load(directory: str | Path) -> Manifest:
    """Read, validate and check `directory/manifest.json`: schema, confined names, every listed file present."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise ManifestError(f"export directory {str(directory)!r} does not exist")
    if not path.is_file():
        raise ManifestError(f"export directory {str(directory)!r} has no {MANIFEST_NAME} (was it made by bt-export?)")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ManifestError(f"{str(path)!r} is not UTF-8 text (byte {err.start}): the file is damaged") from err
    except (OSError, json.JSONDecodeError, RecursionError) as err:
        raise ManifestError(f"{str(path)!r} is not readable JSON: {err}") from err
    manifest = from_dict(data, repr(str(path)))
    manifest.directory = directory
    listed = {ref.file for ref in manifest.files}
    names = [(f"files[{i}]", ref.file) for i, ref in enumerate(manifest.files)]
    names.append(("tokenizer.file", manifest.tokenizer.file))
    if manifest.golden is not None:
        names.append(("golden.image.file", manifest.golden.image.file))
        names += [(f"golden.tensors[{i}].file", t.file) for i, t in enumerate(manifest.golden.tensors)]
    for precision, variant in manifest.variants.items():
        for graph, entry in variant.files.items():
            names.append((f"variants.{precision}.files.{graph}.file", entry.file))
            names += [(f"variants.{precision}.files.{graph}.external_data[{i}].file", ref.file)
                      for i, ref in enumerate(entry.external_data)]
            listed |= {entry.file, *(ref.file for ref in entry.external_data)}
    absent = []
    for where, name in names:
        if not confined_path(directory, name, f"{path}: {where}").is_file():
            absent.append(name)
    if absent:
        raise ManifestError(f"export directory {str(directory)!r} is missing file(s) named in its manifest: "
                            f"{sorted(set(absent))}")
    if manifest.tokenizer.file not in {ref.file for ref in manifest.files}:
        raise ManifestError(f"{str(path)!r}: tokenizer.file {manifest.tokenizer.file!r} is not listed under `files` "
                            "with a sha256")
    stray = sorted(p.name for p in directory.glob("*.data") if p.name not in listed)
    if stray:
        raise ManifestError(f"export directory {str(directory)!r} holds external-data file(s) its manifest does not "
                            f"list: {stray}; an export reads only listed files. Remove them or re-export.")
    return manifest


read_manifest = load  # the name the rest of the code base and users know
