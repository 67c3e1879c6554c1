from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest
import torch
from transformers import (
    BridgeTowerForContrastiveLearning,
    BridgeTowerForImageAndTextRetrieval,
    BridgeTowerForMaskedLM,
    BridgeTowerModel,
)

from bt_export.checkpoints import load_checkpoint
from bt_export.configs import KNOWN_CHECKPOINTS, TINY_TOKENIZER_DIR
from bt_export.errors import CheckpointError, UnsupportedConfigError
from bt_export.image_processor import image_processor_kwargs
from bt_export.tokenizer_files import copy_tokenizer

from .checkpoint_dirs import copy_tokenizer_files, edit_json, save_checkpoint, small_config

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


def test_weights_config_json_does_not_describe_are_named_in_one_error(tmp_path, capfd):
    """Before: transformers' load report (a table, 'look at the above report') then an error pointing at it. Missing
    tensors come first; a mismatch repeated in every layer is one entry."""
    import logging

    from safetensors.torch import load_file, save_file

    directory = save_checkpoint(tmp_path / "ckpt", BridgeTowerForImageAndTextRetrieval, small_config())
    edit_json(directory / "config.json", {"text_config.intermediate_size": 40})
    handlers = list(logging.getLogger("transformers").handlers)
    with pytest.raises(CheckpointError, match=re.escape(
            "21 tensor(s) have other shapes than config.json gives them: bridgetower.cross_modal_image_layers.*."
            "intermediate.dense.bias (2×) is [256] in the weights, [40] by config.json;")) as err:
        load_checkpoint(str(directory))
    assert "… (5 more)" in str(err.value) and "missing" not in str(err.value)
    assert "REPORT" not in capfd.readouterr().err
    assert logging.getLogger("transformers").handlers == handlers  # its own log is back for the next load
    tensors = load_file(directory / "model.safetensors")
    del tensors["bridgetower.cross_modal_text_pooler.dense.weight"]
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=re.escape(
            "1 tensor(s) the model needs are not in the weights: bridgetower.cross_modal_text_pooler.dense.weight; "
            "21 tensor(s) have other shapes")):
        load_checkpoint(str(directory))


def test_when_transformers_fails_to_load_its_held_back_log_is_printed_first(tmp_path, capfd):
    """transformers' own errors may say 'look at the report above': the report must then be there."""
    import logging

    from bt_export.checkpoints import _from_pretrained

    class Failing:
        @staticmethod
        def from_pretrained(*args, **kwargs):
            logging.getLogger("transformers.modeling_utils").warning("CONVERSION report")
            raise ValueError("see the CONVERSION entries of the above report")

    handlers = list(logging.getLogger("transformers").handlers)
    with pytest.raises(CheckpointError, match="weights could not be loaded: see the CONVERSION entries"):
        _from_pretrained(Failing, tmp_path, None)
    assert "CONVERSION report" in capfd.readouterr().err
    assert logging.getLogger("transformers").handlers == handlers


def test_tensors_no_module_reads_are_reported_not_exported(tmp_path, capfd):
    from safetensors.torch import load_file, save_file

    directory = save_checkpoint(tmp_path / "ckpt", BridgeTowerForImageAndTextRetrieval, small_config())
    tensors = load_file(directory / "model.safetensors")
    tensors["extra_head.dense.weight"] = torch.zeros(3, 3)
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    assert load_checkpoint(str(directory)).unused == ("extra_head.dense.weight",)
    from bt_export.eager import EagerBridgeTower

    EagerBridgeTower(str(directory), directory)  # the benchmarks' baseline says so too, as bt-export does
    assert ("eager: 1 tensor(s) of the checkpoint are read by no module of BridgeTower or its heads (itm): "
            "extra_head.dense.weight (not used)") in capfd.readouterr().err


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


# Hand-edited checkpoints whose config or image processor settings transformers' eager model, its image processor or
# bt_runtime cannot run: refused at load, naming the field, before the weights load and before any export work.

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("model") / "ckpt", BridgeTowerModel, small_config())


def _edited(model_dir: Path, tmp_path: Path, file: str, edits: dict) -> Path:
    directory = shutil.copytree(model_dir, tmp_path / "edited")
    edit_json(directory / file, edits)
    return directory


@pytest.mark.parametrize("edits,message", [
    ({"model_type": "bert"}, "model_type='bert' (valid: 'bridgetower'"),
    ({"text_config.max_position_embeddings": 8},
     "text_config.max_position_embeddings=8 (positions for 6 tokens; the export's parity captions need 28 with this "
     "tokenizer: valid ≥ 30)"),
    ({"text_config.type_vocab_size": 0}, "text_config.type_vocab_size=0 (valid: ≥ 1"),
    ({"text_config.pad_token_id": 3}, "text_config.pad_token_id=3 ("),
    ({"vision_config.image_size": 8}, "vision_config.image_size=8 with patch_size=16 (valid: 1 ≤ patch_size ≤"),
    ({"vision_config.num_channels": 1}, "vision_config.num_channels=1 (valid: 3"),
], ids=lambda v: next(iter(v)) if isinstance(v, dict) else "")
def test_a_config_the_eager_model_cannot_run_is_refused_before_the_weights_load(model_dir, tmp_path, monkeypatch,
                                                                                 edits, message):
    import bt_export.model

    monkeypatch.setattr(bt_export.model, "with_heads_class", lambda heads: pytest.fail("weights loaded first"))
    directory = _edited(model_dir, tmp_path, "config.json", edits)
    with pytest.raises(UnsupportedConfigError, match=re.escape(message)):
        load_checkpoint(str(directory))


def test_every_config_problem_is_named_in_one_error(model_dir, tmp_path):
    directory = _edited(model_dir, tmp_path, "config.json", {"text_config.type_vocab_size": 0,
                                                             "vision_config.num_channels": 1})
    with pytest.raises(UnsupportedConfigError, match="type_vocab_size=0.*; vision_config.num_channels=1"):
        load_checkpoint(str(directory))


def test_max_position_embeddings_must_hold_the_parity_captions_exactly(tmp_path):
    """The tiny tokenizer makes 28 tokens of the longest default caption: 30 positions hold it (RoBERTa positions
    start after padding_idx 1), 29 do not."""
    directory = save_checkpoint(tmp_path / "ckpt", BridgeTowerModel,
                                small_config(text_config={"max_position_embeddings": 30}))
    assert load_checkpoint(str(directory)).config.text_config.max_position_embeddings == 30
    edit_json(directory / "config.json", {"text_config.max_position_embeddings": 29})
    with pytest.raises(UnsupportedConfigError, match=re.escape("max_position_embeddings=29 (positions for 27 tokens")):
        load_checkpoint(str(directory))


@pytest.mark.parametrize("settings,message", [
    ({"size_divisor": 0}, "size_divisor 0 (valid: a positive integer"),
    ({"size_divisor": True}, "size_divisor true (valid: a positive integer"),
    ({"size_divisor": 32.0}, "size_divisor 32.0 (valid: a positive integer"),
    ({"size": {"shortest_edge": 0}}, 'size {"shortest_edge": 0}; expected a positive integer'),
    ({"size": True}, "size true; expected a positive integer"),
    ({"size": 24}, "size shortest_edge 24 is below size_divisor 32"),
    ({"size": 288}, "size shortest_edge 288 makes a longest edge of 479"),
    ({"image_mean": [0.5]}, "image_mean [0.5] (valid: 3 finite numbers"),
    ({"image_mean": [True, 0.5, 0.5]}, "image_mean [true, 0.5, 0.5] (valid: 3 finite numbers"),
    ({"image_std": [0.5, 0.5, 0.0]}, "image_std [0.5, 0.5, 0.0] (valid: 3 finite numbers > 0"),
    ({"image_std": [0.5, float("nan"), 0.5]}, "image_std [0.5, NaN, 0.5] (valid"),
    ({"image_std": "0.5"}, 'image_std "0.5" (valid'),
    ({"rescale_factor": "0.0039"}, 'rescale_factor "0.0039" (valid: a number in (0, 1]'),
    ({"rescale_factor": True}, "rescale_factor true (valid: a number"),
    ({"rescale_factor": 2}, "rescale_factor 2 (valid: a number in (0, 1]"),
    ({"do_center_crop": False}, "do_center_crop false ("),
    ({"do_resize": "no"}, 'do_resize "no" (valid: true or false)'),
], ids=lambda v: next(iter(v)) if isinstance(v, dict) else "")
def test_image_processor_settings_transformers_or_the_runtime_cannot_use_are_refused(tmp_path, settings, message):
    edit_json(tmp_path / "preprocessor_config.json", settings)
    with pytest.raises(CheckpointError, match=re.escape(f"{str(tmp_path / 'preprocessor_config.json')!r}: ")) as err:
        image_processor_kwargs(small_config(), tmp_path)
    assert message in str(err.value)


def test_the_default_image_processor_needs_an_image_size_of_at_least_its_size_divisor():
    with pytest.raises(CheckpointError, match=re.escape("the default image processor settings: size shortest_edge 24 "
                                                        "(vision_config.image_size) is below size_divisor 32")):
        image_processor_kwargs(small_config(vision_config={"image_size": 24}), None)


@pytest.mark.parametrize("settings,expected", [
    ({"do_resize": False}, {"do_resize": False}),  # transformers and bt_runtime both crop the decoded image
    ({"do_rescale": False, "rescale_factor": 2}, {"do_rescale": False}),  # unused: the manifest records 1.0
    ({"image_mean": 0.5, "image_std": 0.25}, {"image_mean": [0.5] * 3, "image_std": [0.25] * 3}),  # one per channel
    ({"size": 24, "size_divisor": 8}, {"size": {"shortest_edge": 24}, "size_divisor": 8}),
], ids=lambda v: next(iter(v)) if isinstance(v, dict) else "")
def test_image_processor_settings_that_work_are_kept(tmp_path, settings, expected):
    config = small_config(vision_config={"image_size": 24}) if "size" in settings else small_config()
    if "size" in settings:
        settings = {**settings, "crop_size": 24}
    edit_json(tmp_path / "preprocessor_config.json", settings)
    kwargs = image_processor_kwargs(config, tmp_path)
    assert {key: kwargs[key] for key in expected} == expected


@pytest.mark.parametrize("edit", ["max_position_embeddings", "image_size", "size_divisor", "do_center_crop",
                                  "model_type"])
def test_cli_refuses_such_a_checkpoint_in_one_line_before_any_export_work(tmp_path, monkeypatch, edit):
    """Before: an internal error with a transformers traceback (exit 1) for the first three; exit 1 'parity failed'
    after the whole export for do_center_crop; an export for model_type 'bert'."""
    from typer.testing import CliRunner

    import bt_export.export as export
    from bt_export.cli import app

    config = {"max_position_embeddings": small_config(text_config={"max_position_embeddings": 8}),
              "image_size": small_config(vision_config={"image_size": 24})}.get(edit, small_config())
    directory = save_checkpoint(tmp_path / "ckpt", BridgeTowerForImageAndTextRetrieval, config)
    if edit == "size_divisor":
        edit_json(directory / "preprocessor_config.json", {"size_divisor": 0})
    elif edit == "do_center_crop":
        edit_json(directory / "preprocessor_config.json", {"do_center_crop": False})
    elif edit == "model_type":
        edit_json(directory / "config.json", {"model_type": "bert"})
    monkeypatch.setattr(export, "staged_directory", lambda *a, **k: pytest.fail("export work began"))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["-c", str(directory), "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    assert edit in " ".join(result.output.split())  # rich wraps long lines
    assert not out.exists()


@pytest.mark.parametrize("tokenizer", ["tiny", "roberta-base"])
def test_a_vocab_and_merges_tokenizer_is_converted_with_its_vocabulary(tmp_path, request, tokenizer):
    """The tokenizer.json written from vocab.json + merges.txt tokenizes as the tokenizer.json shipped beside them
    (<mask> included). transformers 5 ignores 4.x's vocab_file=/merges_file=, which made an empty tokenizer."""
    from types import SimpleNamespace

    from tokenizers import Tokenizer

    from bt_export.samples import DEFAULT_TEXTS

    files = TINY_TOKENIZER_DIR if tokenizer == "tiny" else request.getfixturevalue("roberta_dir")
    source, out = tmp_path / "vocab-merges", tmp_path / "out"
    source.mkdir(), out.mkdir()
    copy_tokenizer_files(files, source, "vocab-merges")
    copy_tokenizer(SimpleNamespace(tokenizer_dir=source, config=small_config()), out)
    ours, reference = (Tokenizer.from_file(str(d / "tokenizer.json")) for d in (out, files))
    assert ours.get_vocab_size() == reference.get_vocab_size()
    for text in (*DEFAULT_TEXTS, "<mask> at the start, and a<mask>glued"):
        assert ours.encode(text).ids == reference.encode(text).ids, text


def test_a_tokenizer_that_knows_no_english_word_is_refused_at_load(model_dir, tmp_path, monkeypatch):
    """A vocab.json holding only the special tokens (a truncated or wrong file) drops every word of every caption;
    parity cannot see it (eager and the graphs read the same ids), so the load refuses it, before the weights."""
    import bt_export.model

    tokenizer = tmp_path / "tokenizer"
    tokenizer.mkdir()
    (tokenizer / "vocab.json").write_text(json.dumps({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}))
    (tokenizer / "merges.txt").write_text("#version: 0.2\n")
    monkeypatch.setattr(bt_export.model, "with_heads_class", lambda heads: pytest.fail("weights loaded first"))
    with pytest.raises(CheckpointError, match=re.escape(f"tokenizer in {str(tokenizer)!r} knows 1 token(s) in the "
                                                        "39 words of the parity captions")):
        load_checkpoint(str(model_dir), tokenizer=tokenizer)
