"""Build the typed manifest of an export (schema: bt_runtime.manifest)."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
from pathlib import Path

import numpy as np
import onnx

from bt_runtime.integrity import sha256_file
from bt_runtime.manifest import (
    RESAMPLE_NAMES,
    SCHEMA_VERSION,
    AxisLink,
    Broadcast,
    CenterCrop,
    Checkpoint,
    ConfigSummary,
    FileRef,
    GraphFile,
    GraphIO,
    Manifest,
    Preprocessing,
    Reference,
    Resize,
    Substitute,
    TensorInfo,
    TokenizerInfo,
    Wire,
    Wiring,
)

from .errors import CheckpointError
from .model import HF_HEAD_CLASSES
from .specs import GraphSpec, computes, num_image_tokens

CROSS_MODAL_BROADCAST = ("graph: cross_modal (and cross_modal_pooled) gathers image_bridge[image_index[b]] for "
                         "pair b, so one vision run serves many texts (image_bridge batch 1, image_index all zeros) "
                         "and paired batches use image_index = arange(batch)")


OUTPUT_MEANINGS = {
    "image_bridge": "(batch, C, N, D): batch first, then one row per cross-modal layer: what BridgeTowerModel "
                    "feeds the cross-modal stack from each image; token 0 is the class token",
    "text_bridge": "(batch, C, seq, D): batch first, then one row per cross-modal layer, from each text; padding "
                   "positions are computed but masked downstream",
    "image_embeds": "L2-normalized contrastive image embedding (BridgeTowerForContrastiveLearning.image_embeds)",
    "text_embeds": "L2-normalized contrastive text embedding (BridgeTowerForContrastiveLearning.text_embeds)",
    "pooler_output": "concat(text pooler, image pooler) (BridgeTowerModel.pooler_output)",
    "itm_logits": "[no match, match] logits: softmax column 1 is the match probability",
    "mlm_logits": "logits over the tokenizer's vocabulary at every text position (argmax at <mask> fills it)",
    "cross_embeds": "L2-normalized cross-modal embedding (BridgeTowerForContrastiveLearning.cross_embeds)",
}


POOLED_RULE = ("same inputs as cross_modal; the last cross-modal layer is computed at the class positions only "
               "(all the poolers read) and the MLM head not at all: the other outputs equal cross_modal's within the "
               "fp32 tolerances, for less work and memory")


def wiring(specs: dict[str, GraphSpec]) -> Wiring:
    outputs = {t.name: OUTPUT_MEANINGS[t.name] for spec in specs.values() for t in spec.outputs}
    cross_graphs = [name for name in specs if computes(name) == "cross_modal"]
    substitutes = [Substitute(name, "cross_modal", [o.name for o in specs["cross_modal"].outputs
                                                    if o.name not in specs[name].output_names], POOLED_RULE)
                   for name in cross_graphs if name != "cross_modal"]
    return Wiring(
        wires=[wire for graph in cross_graphs for wire in (
            Wire(graph, "text_bridge", "text_tower", "text_bridge", "output"),
            Wire(graph, "image_bridge", "vision_tower", "image_bridge", "output"),
            Wire(graph, "attention_mask", "text_tower", "attention_mask", "input"))],
        axes=[link for graph in cross_graphs for link in (
            AxisLink(graph, "image_batch", "vision_tower", "batch"),
            AxisLink(graph, "batch", "text_tower", "batch"),
            AxisLink(graph, "seq", "text_tower", "seq"))],
        broadcast=Broadcast("cross_modal", "image_index", "image_bridge", 0, CROSS_MODAL_BROADCAST, cross_graphs),
        outputs=outputs, substitutes=substitutes)


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("bt-toolkit", "torch", "transformers", "onnx", "onnxscript", "onnxruntime", "tokenizers"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def graph_file_entry(directory: Path, file: str) -> GraphFile:
    """The file's sha256, the default-domain opset actually written in it, and every external-data file its
    initializers reference (read from the graph itself, not guessed from names)."""
    model = onnx.load(str(directory / file), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    locations = sorted({entry.value for tensor in model.graph.initializer
                        if tensor.data_location == onnx.TensorProto.EXTERNAL
                        for entry in tensor.external_data if entry.key == "location"})
    return GraphFile(file=file, sha256=sha256_file(directory / file), opset=opset,
                     contrib_ops=any(node.domain == "com.microsoft" for node in model.graph.node),
                     external_data=[FileRef(name, sha256_file(directory / name)) for name in locations])


def config_summary(config) -> ConfigSummary:
    text, vision = config.text_config, config.vision_config
    itc = getattr(config, "contrastive_hidden_size", None) is not None
    return ConfigSummary(
        hidden_size=config.hidden_size, num_cross_layers=config.num_hidden_layers,
        num_cross_attention_heads=text.num_attention_heads, link_tower_type=config.link_tower_type,
        share_cross_modal_transformer_layers=config.share_cross_modal_transformer_layers,
        text={"hidden_size": text.hidden_size, "num_layers": text.num_hidden_layers,
              "num_attention_heads": text.num_attention_heads, "intermediate_size": text.intermediate_size,
              "vocab_size": text.vocab_size, "max_position_embeddings": text.max_position_embeddings},
        vision={"hidden_size": vision.hidden_size, "num_layers": vision.num_hidden_layers,
                "num_attention_heads": vision.hidden_size // 64, "patch_size": vision.patch_size,
                "image_size": vision.image_size},
        image_size=vision.image_size, num_image_tokens=num_image_tokens(config), vocab_size=text.vocab_size,
        max_text_length=text.max_position_embeddings - 2,
        contrastive_hidden_size=config.contrastive_hidden_size if itc else None,
        logit_scale_init_value=float(config.logit_scale_init_value) if itc else None)


def resample_name(value) -> str:
    """A preprocessor_config.json `resample` (PIL's integer code, as transformers writes it, an enum or a name)."""
    if isinstance(value, bool):
        raise CheckpointError(f"preprocessor_config.json resample {value!r}; expected a PIL resampling code "
                              f"0–5 or a name ({', '.join(RESAMPLE_NAMES)})")
    code = getattr(value, "value", value)
    if isinstance(code, int) and 0 <= code < len(RESAMPLE_NAMES):
        return RESAMPLE_NAMES[code]
    name = str(getattr(value, "name", value)).lower()
    if name in RESAMPLE_NAMES:
        return name
    raise CheckpointError(f"preprocessor_config.json resample {value!r}; expected a PIL resampling code 0–5 or a name "
                          f"({', '.join(RESAMPLE_NAMES)})")


def alpha_convention(image_processor) -> str:
    """How this transformers version turns transparency into RGB, observed on a fully transparent black pixel:
    5.18+ composite it on white; earlier 5.x drop the alpha band (PIL convert('RGB'))."""
    from PIL import Image

    converted = np.asarray(image_processor.convert_to_rgb(Image.new("RGBA", (1, 1), (0, 0, 0, 0))))
    return "composite_on_white" if converted.max() >= 200 else "drop_alpha"


def longest_edge(shortest_edge: int) -> int:
    """BridgeTowerImageProcessor's cap on the long side of a resize to `shortest_edge` (transformers'
    get_resize_output_image_size: int(1333 / 800 · shortest_edge))."""
    return int(1333 / 800 * shortest_edge)


def preprocessing_summary(processor) -> Preprocessing:
    """What bt_runtime's NumPy preprocessor needs to reproduce transformers' BridgeTowerImageProcessor."""
    shortest = processor.size["shortest_edge"]
    crop = processor.crop_size["shortest_edge"] if processor.crop_size else shortest
    return Preprocessing(
        image_size=crop, alpha=alpha_convention(processor),
        resize=Resize(enabled=bool(processor.do_resize), shortest_edge=shortest,
                      longest_edge=longest_edge(shortest), size_divisor=processor.size_divisor,
                      rounding="int(x + 0.5), then floor to a multiple of size_divisor",
                      resample=resample_name(processor.resample)),
        center_crop=CenterCrop(enabled=bool(processor.do_center_crop), height=crop, width=crop, pad_value=0.0),
        rescale_factor=float(processor.rescale_factor) if processor.do_rescale else 1.0,
        normalize=bool(processor.do_normalize), mean=[float(v) for v in processor.image_mean],
        std=[float(v) for v in processor.image_std], layout="NCHW", dtype="float32", exif_transpose=False)


def reference_summary(processor, preprocessing: Preprocessing) -> Reference:
    versions = library_versions()
    return Reference(transformers=versions["transformers"], torch=versions["torch"],
                     image_processor=type(processor).__name__, image_backend="pil",
                     conventions={"alpha": preprocessing.alpha,
                                  "resize": f"pil-{preprocessing.resize.resample} on uint8 (Image.resize)",
                                  "rescale": "uint8 → float64 × rescale_factor → float32",
                                  "normalize": "(x − mean) / std in float32"})


def tokenizer_summary(tokenizer) -> TokenizerInfo:
    return TokenizerInfo(file="tokenizer.json", max_length=tokenizer.model_max_length,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, mask_token=tokenizer.mask_token,
                         mask_token_id=tokenizer.mask_token_id, vocab_size=len(tokenizer))


def build_manifest(loaded, specs: dict[str, GraphSpec], directory: Path, processor, tokenizer_files: list[str],
                   variants: dict, rejected: dict) -> Manifest:
    heads = list(loaded.heads)
    source = {k: v for k, v in loaded.source.items() if k in ("kind", "alias", "hub_id", "path", "revision", "seed",
                                                              "random_init")}
    preprocessing = preprocessing_summary(processor.image_processor)
    return Manifest(
        schema_version=SCHEMA_VERSION,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        checkpoint=Checkpoint(heads=heads, head_classes=["BridgeTowerModel"] + [HF_HEAD_CLASSES[h].__name__
                                                                                for h in heads], **source),
        config=config_summary(loaded.config),
        preprocessing=preprocessing,
        tokenizer=tokenizer_summary(processor.tokenizer),
        graphs={name: GraphIO([TensorInfo(t.name, t.dtype, list(t.shape)) for t in spec.inputs],
                              [TensorInfo(t.name, t.dtype, list(t.shape)) for t in spec.outputs])
                for name, spec in specs.items()},
        variants=variants,
        rejected_variants=rejected,
        files=[FileRef(name, sha256_file(directory / name)) for name in tokenizer_files],
        reference=reference_summary(processor.image_processor, preprocessing),
        versions=library_versions(),
        wiring=wiring(specs),
    )
