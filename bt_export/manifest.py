"""Build the manifest.json dict of an export (schema documented in bt_runtime.manifest)."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
from pathlib import Path

from bt_runtime.manifest import SCHEMA_VERSION, sha256_file

from .model import HF_HEAD_CLASSES
from .specs import GraphSpec, num_image_tokens

CROSS_MODAL_BROADCAST = ("graph: cross_modal gathers image_bridge[:, image_index[b]] for pair b, so one vision run "
                         "serves many texts (image_bridge batch 1, image_index all zeros) and paired batches use "
                         "image_index = arange(batch)")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("bt-toolkit", "torch", "transformers", "onnx", "onnxscript", "onnxruntime", "tokenizers"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def file_entry(directory: Path, file: str) -> dict:
    entry = {"file": file, "sha256": sha256_file(directory / file)}
    data = directory / f"{file}.data"
    if data.is_file():
        entry["external_data"] = {"file": data.name, "sha256": sha256_file(data)}
    return entry


def config_summary(config) -> dict:
    text, vision = config.text_config, config.vision_config
    summary = {
        "hidden_size": config.hidden_size,
        "num_cross_layers": config.num_hidden_layers,
        "num_cross_attention_heads": text.num_attention_heads,
        "link_tower_type": config.link_tower_type,
        "share_cross_modal_transformer_layers": config.share_cross_modal_transformer_layers,
        "text": {"hidden_size": text.hidden_size, "num_layers": text.num_hidden_layers,
                 "num_attention_heads": text.num_attention_heads, "intermediate_size": text.intermediate_size,
                 "vocab_size": text.vocab_size, "max_position_embeddings": text.max_position_embeddings},
        "vision": {"hidden_size": vision.hidden_size, "num_layers": vision.num_hidden_layers,
                   "num_attention_heads": vision.hidden_size // 64, "patch_size": vision.patch_size,
                   "image_size": vision.image_size},
        "image_size": vision.image_size,
        "num_image_tokens": num_image_tokens(config),
        "vocab_size": text.vocab_size,
        "max_text_length": text.max_position_embeddings - 2,
    }
    if getattr(config, "contrastive_hidden_size", None) is not None:
        summary["contrastive_hidden_size"] = config.contrastive_hidden_size
        summary["logit_scale_init_value"] = config.logit_scale_init_value
    return summary


def preprocessing_summary(processor) -> dict:
    """What bt_runtime's NumPy preprocessor needs to reproduce transformers' BridgeTowerImageProcessor."""
    shortest = processor.size["shortest_edge"]
    crop = processor.crop_size["shortest_edge"] if processor.crop_size else shortest
    resample = getattr(processor.resample, "name", None) or str(processor.resample)
    return {
        "image_size": crop,
        "convert_rgb": "alpha composited on white (transformers' convert_to_rgb); other modes via PIL convert('RGB')",
        "resize": {"enabled": bool(processor.do_resize), "shortest_edge": shortest,
                   "longest_edge": int(1333 / 800 * shortest), "size_divisor": processor.size_divisor,
                   "rounding": "int(x + 0.5), then floor to a multiple of size_divisor",
                   "resample": resample.lower()},
        "center_crop": {"enabled": bool(processor.do_center_crop), "height": crop, "width": crop,
                        "pad_value": 0.0},
        "rescale_factor": float(processor.rescale_factor) if processor.do_rescale else 1.0,
        "normalize": bool(processor.do_normalize),
        "mean": [float(v) for v in processor.image_mean],
        "std": [float(v) for v in processor.image_std],
        "layout": "NCHW",
        "dtype": "float32",
        "exif_transpose": False,
    }


def tokenizer_summary(tokenizer, files: list[str]) -> dict:
    return {"file": "tokenizer.json", "files": files, "max_length": tokenizer.model_max_length,
            "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "mask_token": tokenizer.mask_token,
            "mask_token_id": tokenizer.mask_token_id, "vocab_size": len(tokenizer)}


def build_manifest(loaded, specs: dict[str, GraphSpec], directory: Path, processor, tokenizer_files: list[str],
                   variants: dict[str, dict], opset: int) -> dict:
    heads = list(loaded.heads)
    checkpoint = dict(loaded.source)
    checkpoint.update(heads=heads, head_classes=["BridgeTowerModel"] + [HF_HEAD_CLASSES[h].__name__ for h in heads])
    return {
        "schema_version": SCHEMA_VERSION,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": checkpoint,
        "config": config_summary(loaded.config),
        "preprocessing": preprocessing_summary(processor.image_processor),
        "tokenizer": tokenizer_summary(processor.tokenizer, tokenizer_files),
        "graphs": {name: {"inputs": [t.to_json() for t in spec.inputs],
                          "outputs": [t.to_json() for t in spec.outputs]} for name, spec in specs.items()},
        "variants": variants,
        "cross_modal_broadcast": CROSS_MODAL_BROADCAST,
        "opset": opset,
        "versions": library_versions(),
    }
