"""Build local checkpoint directories the way users get them: Hugging Face classes + save_pretrained."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import torch
from transformers import BridgeTowerConfig

from bt_export.configs import TINY_CONFIG, TINY_TOKENIZER_DIR


def small_config(vocab_size: int = 515, **overrides) -> BridgeTowerConfig:
    kwargs = copy.deepcopy(TINY_CONFIG)
    kwargs["text_config"]["vocab_size"] = vocab_size
    text_overrides = overrides.pop("text_config", {})
    kwargs["text_config"].update(text_overrides)
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
