from __future__ import annotations

import json
import time

import pytest
import torch
from transformers import (
    BridgeTowerForContrastiveLearning,
    BridgeTowerForImageAndTextRetrieval,
    BridgeTowerForMaskedLM,
    BridgeTowerModel,
)

from bt_export.checkpoints import load_checkpoint
from bt_export.configs import KNOWN_CHECKPOINTS
from bt_export.errors import CheckpointError, UnsupportedConfigError

from .checkpoint_dirs import save_checkpoint, small_config

HEAD_CLASSES = [
    (BridgeTowerModel, ()),
    (BridgeTowerForImageAndTextRetrieval, ("itm",)),
    (BridgeTowerForMaskedLM, ("mlm",)),
    (BridgeTowerForContrastiveLearning, ("itc",)),
]


@pytest.mark.parametrize("model_class,heads", HEAD_CLASSES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_local_directory_loads_exactly_the_heads_it_holds(tmp_path, model_class, heads):
    directory = save_checkpoint(tmp_path / "ckpt", model_class, small_config())
    loaded = load_checkpoint(str(directory))
    assert loaded.heads == heads
    assert loaded.source == {"kind": "local", "path": str(directory.resolve()), "random_init": False}
    # the weights really are the saved ones, not a fresh random init
    torch.manual_seed(0)
    saved = model_class(small_config()).state_dict()
    mine = loaded.model.state_dict() if heads else loaded.model.bridgetower.state_dict()
    key = "bridgetower.text_model.embeddings.word_embeddings.weight" if heads else \
        "text_model.embeddings.word_embeddings.weight"
    assert torch.equal(mine[key], saved[key])


def test_local_directory_with_real_roberta_tokenizer_and_bin_weights(tmp_path, roberta_dir):
    directory = save_checkpoint(tmp_path / "ckpt", BridgeTowerForMaskedLM, small_config(vocab_size=50265),
                                tokenizer_dir=roberta_dir, tokenizer_layout="vocab-merges", weights="bin")
    assert not list(directory.glob("*.safetensors"))
    loaded = load_checkpoint(str(directory))
    assert loaded.heads == ("mlm",)
    assert loaded.config.text_config.vocab_size == 50265


def test_bin_weights_are_loaded_with_weights_only(tmp_path, monkeypatch):
    directory = save_checkpoint(tmp_path / "ckpt", BridgeTowerForImageAndTextRetrieval, small_config(), weights="bin")
    calls = []
    real_load = torch.load

    def spying_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spying_load)
    load_checkpoint(str(directory))
    assert calls and all(flag is True for flag in calls)


def test_local_directory_missing_files_are_named(tmp_path):
    directory = tmp_path / "empty"
    directory.mkdir()
    with pytest.raises(CheckpointError, match=r"config\.json.*weights.*tokenizer"):
        load_checkpoint(str(directory))


def test_missing_weights_are_refused_not_randomly_initialized(tmp_path):
    directory = save_checkpoint(tmp_path / "ckpt", BridgeTowerForImageAndTextRetrieval, small_config())
    from safetensors.torch import load_file, save_file

    tensors = load_file(directory / "model.safetensors")
    del tensors["bridgetower.cross_modal_text_pooler.dense.weight"]
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="cross_modal_text_pooler"):
        load_checkpoint(str(directory))


@pytest.mark.parametrize("override,field", [
    ({"link_tower_type": "concat"}, "link_tower_type"),
    ({"share_link_tower_layers": True}, "share_link_tower_layers"),
    ({"num_hidden_layers": 5}, "num_hidden_layers"),
])
def test_unsupported_config_names_the_field(tmp_path, override, field):
    config = json.loads(small_config().to_json_string())
    config.update(override)
    directory = save_checkpoint(tmp_path / "ckpt", BridgeTowerModel, small_config())
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedConfigError, match=field):
        load_checkpoint(str(directory))


def test_contrastive_heads_with_unshared_transforms_are_refused(tmp_path):
    directory = save_checkpoint(tmp_path / "ckpt", BridgeTowerForContrastiveLearning, small_config())
    config = json.loads((directory / "config.json").read_text())
    config["share_cross_modal_transformer_layers"] = False
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedConfigError, match="share_cross_modal_transformer_layers=False with contrastive"):
        load_checkpoint(str(directory))


def test_unknown_name_lists_the_valid_aliases():
    with pytest.raises(CheckpointError) as err:
        load_checkpoint("bridgetower-huge")
    for alias in ["tiny", *KNOWN_CHECKPOINTS]:
        assert alias in str(err.value)


def test_random_init_needs_an_alias(tmp_path):
    with pytest.raises(CheckpointError, match="--random-init needs an alias"):
        load_checkpoint("someone/some-model", random_init=True)


def test_random_init_uses_the_official_architecture_without_building_it():
    # Building full size takes seconds; the recorded values are what matters here.
    base, large = KNOWN_CHECKPOINTS["base-itm-mlm"].config, KNOWN_CHECKPOINTS["large-itm-mlm-itc"].config
    assert (base["text_config"]["hidden_size"], base["text_config"]["num_hidden_layers"],
            base["text_config"]["num_attention_heads"]) == (768, 12, 12)
    assert (base["vision_config"]["patch_size"], base["vision_config"]["image_size"], base["num_hidden_layers"]) == (
        16, 288, 6)
    assert (large["text_config"]["hidden_size"], large["text_config"]["num_hidden_layers"],
            large["text_config"]["num_attention_heads"]) == (1024, 24, 16)
    assert (large["vision_config"]["patch_size"], large["vision_config"]["image_size"]) == (14, 294)
    assert (large["contrastive_hidden_size"], large["logit_scale_init_value"]) == (512, 2.6592)
    assert KNOWN_CHECKPOINTS["base-itm-mlm"].heads == ("itm", "mlm")


def test_tiny_is_deterministic():
    first, second = load_checkpoint("tiny"), load_checkpoint("tiny")
    assert first.heads == ("itm", "mlm", "itc")
    for (name, a), (_, b) in zip(first.model.state_dict().items(), second.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_hub_id_offline_fails_fast_with_guidance(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE.*--random-init"):
        load_checkpoint("base-itm-mlm")
    assert time.perf_counter() - started < 10


def test_hub_id_unreachable_endpoint_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match="cannot be reached.*local directory"):
        load_checkpoint("someone/bridgetower-finetuned")
    assert time.perf_counter() - started < 10


def test_hub_id_is_served_from_the_hf_cache(monkeypatch, tmp_path):
    """A hub id already in the HF cache loads offline through huggingface_hub's real cache lookup."""
    cache = tmp_path / "cache"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--BridgeTower--bridgetower-base-itm-mlm"
    save_checkpoint(repo / "snapshots" / commit, BridgeTowerForMaskedLM, small_config())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    loaded = load_checkpoint("base-itm-mlm")
    assert loaded.heads == ("mlm",)
    assert loaded.source["hub_id"] == "BridgeTower/bridgetower-base-itm-mlm"
    assert loaded.source["revision"] == commit
