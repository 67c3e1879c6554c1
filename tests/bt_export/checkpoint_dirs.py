"""Build local checkpoint directories the way users get them: Hugging Face classes + save_pretrained."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import torch
from transformers import BridgeTowerConfig

from bt_export.configs import TINY_CONFIG, TINY_TOKENIZER_DIR


def small_config(vocab_size: int = 515, **overrides) -> BridgeTowerConfig:
    kwargs = copy.deepcopy(TINY_CONFIG)
    kwargs["text_config"]["vocab_size"] = vocab_size
    for tower in ("text_config", "vision_config"):  # merged into the tiny values, not replacing them
        kwargs[tower].update(overrides.pop(tower, {}))
    kwargs.update(overrides)
    return BridgeTowerConfig(**kwargs)


def copy_tokenizer_files(source: Path, directory: Path, layout: str = "hub") -> None:
    """hub: tokenizer.json + vocab.json (what the BridgeTower repos ship); vocab-merges: vocab.json + merges.txt."""
    names = {"hub": ["tokenizer.json", "vocab.json"], "vocab-merges": ["vocab.json", "merges.txt"]}[layout]
    for name in names:
        shutil.copy(source / name, directory / name)


def save_checkpoint(directory: Path, model_class, config: BridgeTowerConfig, tokenizer_dir: Path = TINY_TOKENIZER_DIR,
                    tokenizer_layout: str = "hub", weights: str = "safetensors", seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = model_class(config).eval()
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    if weights == "bin":  # older checkpoints: a pickled state dict, loaded with weights_only
        for file in directory.glob("*.safetensors"):
            file.unlink()
        torch.save(model.state_dict(), directory / "pytorch_model.bin")
    copy_tokenizer_files(tokenizer_dir, directory, tokenizer_layout)
    return directory


def edit_json(file: Path, edits: dict) -> None:
    """Hand-edit a JSON file as a user would: `edits` maps dotted keys ("text_config.type_vocab_size") to values;
    a missing file starts empty."""
    data = json.loads(file.read_text()) if file.exists() else {}
    for dotted, value in edits.items():
        *parents, key = dotted.split(".")
        target = data
        for parent in parents:
            target = target.setdefault(parent, {})
        target[key] = value
    file.write_text(json.dumps(data))
