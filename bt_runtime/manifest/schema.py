"""The schema of `manifest.json` as dataclasses: they *are* the schema (bt_runtime.manifest.codec derives the
JSON Schema and reads and writes JSON from them; bt_runtime.manifest.load checks what types cannot say).

Closed sets of values are `Literal` types, so the published JSON Schema lists them as `enum` and a reader in any
language can check them. File names are bare names inside the export directory (bt_runtime.integrity.confined_path).
Schema history and how older exports are refused: docs/manifest.md.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Union

from ..cpu import CpuClass
from ..errors import ManifestError
from ..integrity import confined_path
from .wiring import Wiring

SCHEMA_VERSION = 4
MANIFEST_NAME = "manifest.json"
GRAPH_NAMES = ("vision_tower", "text_tower", "cross_modal")  # in every export
# Head-specific graphs, in exports where they apply (see Wiring.substitutes): cross_modal_pooled, written beside a
# cross_modal that has mlm_logits, computes the other heads without the MLM head and the last layer's other positions
OPTIONAL_GRAPH_NAMES = ("cross_modal_pooled",)

Head = Literal["itm", "mlm", "itc"]  # ImageAndTextRetrieval, MaskedLM, ContrastiveLearning
TensorDtype = Literal["float32", "float16", "int64", "int32"]
Resample = Literal["nearest", "lanczos", "bilinear", "bicubic", "box", "hamming"]  # index = PIL's integer code
AlphaRule = Literal["composite_on_white", "drop_alpha"]
# shapes: the trained reference checkpoint shipped in the package; tiny: random weights, tiny config
CheckpointKind = Literal["tiny", "alias", "hub", "local", "shapes"]
TrtPrecision = Literal["fp16", "bf16", "fp32"]
GoldenDtype = Literal["uint8", "int64", "float32"]  # what golden tensors are stored as (little-endian, C order)

HEAD_NAMES: tuple[str, ...] = typing.get_args(Head)
RESAMPLE_NAMES: tuple[str, ...] = typing.get_args(Resample)
ALPHA_RULES: tuple[str, ...] = typing.get_args(AlphaRule)
TENSOR_DTYPES: tuple[str, ...] = typing.get_args(TensorDtype)


@dataclass
class TensorInfo:
    name: str
    dtype: TensorDtype  # numpy dtype name
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
class RecipeMeasurement:
    """What one int8 recipe measured on one machine (at export, or by scripts/int8_recipes.py)."""
    cpu_class: CpuClass  # bt_runtime.cpu.cpu_class of the machine
    machine: str  # CPU model, logical cores, and whether it was shared
    checkpoint: str  # what the numbers are of (alias, `shapes`, …; random init said so)
    passed: bool  # within every int8 task bound of the export (bt_export.specs.VARIANT_BOUNDS["int8"])
    accuracy: dict[str, float]  # task metric → value (ITM |Δp|, decision agreement, MLM top-1, … vs eager fp32)
    speed: dict[str, float]  # e.g. {"pair_ms": …, "fp32_pair_ms": …}: medians, fp32 timed interleaved with it


@dataclass
class Int8Recipe:
    """One way to make the int8 variant, meant for some CPU classes (docs/int8.md). The runtime uses a recipe's
    files on a CPU whose class it lists *and* was measured on with every bound passed; elsewhere the variant's own
    `files` (the safe recipe, whose integer results do not depend on the ISA)."""
    name: str  # e.g. "s8-all"
    cpu_classes: list[CpuClass]  # the classes it is meant for
    weights: Literal["int8", "uint8"]  # weight type; activations are uint8, quantized per call
    per_channel: bool
    reduce_range: bool  # 7-bit weights
    excluded_patterns: list[str]  # "<graph>/<module path>" patterns kept float32 (bt_export.precision)
    files: dict[str, GraphFile]  # graph name → file, as Variant.files
    measured: list[RecipeMeasurement] = field(default_factory=list)  # empty: never measured

    def measured_on(self, cpu_class: str) -> Union[RecipeMeasurement, None]:
        """The passing measurement on `cpu_class`, if the recipe is meant for it and has one."""
        if cpu_class not in self.cpu_classes:
            return None
        return next((m for m in self.measured if m.cpu_class == cpu_class and m.passed), None)


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
    # int8: recipes for other CPU classes than the safe one in `files` (schema 4, optional; empty or absent: `files`
    # is the only recipe, used on every CPU)
    recipes: list[Int8Recipe] = field(default_factory=list)

    def recipe_for(self, cpu_class: str) -> tuple[Union[Int8Recipe, None], str]:
        """(the recipe to use on a CPU of `cpu_class`, None for the safe one in `files`; why, in one line)."""
        for recipe in self.recipes:
            measurement = recipe.measured_on(cpu_class)
            if measurement is not None:
                return recipe, (f"int8 recipe {recipe.name!r} for {cpu_class} (measured on {measurement.machine}: "
                                f"{_speed_words(measurement.speed)})")
        meant = [r.name for r in self.recipes if cpu_class in r.cpu_classes]
        if meant:
            return None, (f"int8: recipe(s) {meant} are meant for {cpu_class} but were not measured within the "
                          f"bounds on a {cpu_class} CPU: the safe recipe (the variant's own files) is used; export "
                          f"on this machine to measure them")
        if self.recipes:
            return None, f"int8: no recipe for {cpu_class} was measured: the safe recipe (the variant's own files)"
        return None, "int8: the export has one recipe (the variant's own files)"


def _speed_words(speed: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in speed.items()) or "no timing"


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
    resample: Resample
    rounding: str


@dataclass
class CenterCrop:
    enabled: bool
    height: int  # = image_size (checked at load: the runtime crops to image_size × image_size)
    width: int  # = image_size
    pad_value: float  # 0: the uint8 value padding takes before rescaling (docs/preprocessing.md §4)


@dataclass
class Preprocessing:
    image_size: int
    alpha: AlphaRule  # how transparency becomes RGB (differs between transformers versions)
    resize: Resize
    center_crop: CenterCrop
    rescale_factor: float
    normalize: bool
    mean: list[float]
    std: list[float]
    layout: Literal["NCHW"]  # pixel_values (batch, 3, height, width)
    dtype: Literal["float32"]  # of pixel_values, whatever the variant's io_dtype (the graphs cast inside)
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
    """One raw little-endian tensor of the golden set (C order), and how close a port must come to it: the
    element-wise maximum absolute difference, max over all elements of |computed − golden| (in float64), must be at
    most `tolerance` (0 = exact). `graph` names the graph whose run produced it (its output, or a task output
    computed from that output); null for preprocessing steps and tokenizer outputs."""
    name: str
    file: str
    dtype: GoldenDtype
    shape: list[int]
    sha256: str
    tolerance: float
    graph: Union[str, None] = None


@dataclass
class GoldenInput:
    """One image of the golden input suite: a small encoded file in a mode or format the main golden image does not
    cover (alpha, palette with transparency, grey, CMYK, EXIF orientation, JPEG), with its preprocessing steps
    (decoded_rgb, resized_rgb, cropped, pixel_values) as golden tensors."""
    name: str  # short id, e.g. "rgba", "jpeg_exif_rotated"
    image: FileRef  # the encoded file as shipped
    exercises: str  # what a port must get right to match it
    tensors: list[GoldenTensor]


@dataclass
class Golden:
    """What this export computes on one encoded image and a few texts, step by step (bt-run verify), and on the
    golden input suite (`inputs`: preprocessing only; absent in exports made before the suite)."""
    image: FileRef  # the encoded image file as shipped (decoding is part of what is checked)
    texts: list[str]
    tensors: list[GoldenTensor]
    inputs: list[GoldenInput] = field(default_factory=list)


@dataclass
class Checkpoint:
    kind: CheckpointKind
    heads: list[Head]
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
class EngineFile:
    file: str  # bare file name of the serialized engine
    sha256: str
    onnx: str  # the ONNX file it was built from


@dataclass
class TensorRTEngines:
    """TensorRT engines of one precision, built on one machine: they run only with the same TensorRT major.minor
    version and GPU compute capability (bt_runtime.backends.tensorrt checks both before deserializing)."""
    version: str  # TensorRT version that built them
    gpu: str
    compute_capability: str  # "major.minor"
    precision: TrtPrecision
    strongly_typed: bool  # TensorRT ≥ 11: the precision comes from the ONNX variant, not from builder flags
    profiles: dict[str, list[int]]  # symbolic axis → [min, opt, max]
    workspace_gib: Union[float, None]
    timing_cache: str
    engines: dict[str, EngineFile]  # graph → engine


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
    versions: dict[str, str]
    rejected_variants: dict[str, RejectedVariant] = field(default_factory=dict)
    tensorrt: dict[str, TensorRTEngines] = field(default_factory=dict)  # precision → engines (`bt-run build-engines`)
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


