"""Resolve a `--checkpoint` argument (alias, hub id, local directory, `tiny` or `shapes`) and load it with all its
heads.

Loading goes through transformers' `from_pretrained` (safetensors preferred, `.bin` only with weights_only loading,
the HF cache for hub ids). Without network a hub id fails in seconds with a message that says how to proceed.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from bt_runtime.errors import first_line

from .configs import KNOWN_CHECKPOINTS, SHAPES_DIR, TINY_CONFIG, TINY_HEADS, TINY_SEED, TINY_TOKENIZER_DIR, valid_names
from .errors import CheckpointError, UnsupportedConfigError
from .image_processor import image_processor_kwargs, is_int
from .tokenizer_files import MIN_TEXT_TOKENS, check_tokenizer_fits, parity_text_tokens, tokenizer_layout

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
HUB_PATTERNS = ["*.json", "*.txt", "*.safetensors"]


@dataclass
class LoadedCheckpoint:
    model: object  # bt_export.model.BridgeTowerWithHeads, eval mode
    heads: tuple[str, ...]
    tokenizer_dir: Path  # holds tokenizer.json, or vocab.json + merges.txt
    image_processor: dict  # kwargs for transformers' BridgeTowerImageProcessorPil
    source: dict = field(default_factory=dict)  # what the manifest records about where this came from
    unused: tuple[str, ...] = ()  # tensors of the checkpoint no module here reads (unused_note)

    @property
    def config(self):
        return self.model.config

    def unused_note(self) -> str | None:
        """The line bt-export and the benchmarks' eager model print when the checkpoint holds tensors no module reads
        (a head this toolkit does not know is dropped, not silently exported or compared)."""
        if not self.unused:
            return None
        heads = f" or its heads ({', '.join(self.heads)})" if self.heads else ""
        return (f"{len(self.unused)} tensor(s) of the checkpoint are read by no module of BridgeTower{heads}: "
                + ", ".join(self.unused[:4]) + (" …" if len(self.unused) > 4 else ""))


def load_checkpoint(checkpoint: str, *, random_init: bool = False, tokenizer: str | Path | None = None,
                    revision: str | None = None) -> LoadedCheckpoint:
    """Load `checkpoint` with every head its weights hold. `random_init`: official architecture, random weights."""
    offline = checkpoint in ("tiny", "shapes") or random_init or Path(checkpoint).expanduser().is_dir()
    if revision is not None and offline:  # it was silently ignored
        raise CheckpointError(f"--revision {revision!r} picks a commit of a hub checkpoint; {checkpoint!r}"
                              f"{' with --random-init' if random_init else ''} has none (drop --revision)")
    if checkpoint == "tiny":
        return _random_checkpoint("tiny", TINY_CONFIG, TINY_HEADS, tokenizer or TINY_TOKENIZER_DIR, seed=TINY_SEED)
    if checkpoint == "shapes":
        if random_init:
            raise CheckpointError("--random-init with 'shapes': it is a trained checkpoint; 'tiny' is the offline "
                                  "random-init one")
        if not (SHAPES_DIR / "config.json").is_file():
            raise CheckpointError(f"the shipped 'shapes' checkpoint is missing from {str(SHAPES_DIR)!r} (reinstall "
                                  "bt-toolkit, or rebuild it with scripts/train_reference.py)")
        return _load_directory(SHAPES_DIR, {"kind": "shapes", "alias": "shapes"}, tokenizer)
    if random_init:
        if checkpoint not in KNOWN_CHECKPOINTS:
            raise CheckpointError(
                f"--random-init needs an alias to know the architecture; got {checkpoint!r}. Valid: {valid_names()}")
        known = KNOWN_CHECKPOINTS[checkpoint]
        return _random_checkpoint(checkpoint, known.config, known.heads, tokenizer or TINY_TOKENIZER_DIR, seed=0)

    local = Path(checkpoint).expanduser()
    if local.is_dir():
        return _load_directory(local, {"kind": "local", "path": str(local.resolve())}, tokenizer)
    if checkpoint in KNOWN_CHECKPOINTS:
        hub_id = KNOWN_CHECKPOINTS[checkpoint].hub_id
        source = {"kind": "alias", "alias": checkpoint, "hub_id": hub_id}
    elif _looks_like_hub_id(checkpoint):
        hub_id, source = checkpoint, {"kind": "hub", "hub_id": checkpoint}
    else:
        raise CheckpointError(
            f"--checkpoint {checkpoint!r} is neither a known alias ({', '.join(valid_names())}), nor an existing "
            "local directory, nor a hub id of the form 'owner/name'")
    directory = _snapshot(hub_id, revision)
    source["revision"] = directory.name  # snapshot folders are named by commit hash
    return _load_directory(directory, source, tokenizer)


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def _snapshot(hub_id: str, revision: str | None) -> Path:
    """The local snapshot folder of `hub_id`: from the HF cache, else downloaded if the hub answers quickly."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(hub_id, revision=revision, local_files_only=True, allow_patterns=HUB_PATTERNS))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        pass
    how = (f"Options: run once where the hub is reachable so {hub_id!r} lands in the HF cache "
           f"(HF_HOME / HF_HUB_CACHE), pass a local directory made with save_pretrained, "
           f"or use `--random-init` with an alias for the architecture with random weights.")
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        raise CheckpointError(f"--checkpoint {hub_id!r} is not in the HF cache and HF_HUB_OFFLINE is set. {how}")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if not _reachable(endpoint, timeout=3.0):
        raise CheckpointError(f"--checkpoint {hub_id!r} is not in the HF cache and {endpoint} cannot be reached. {how}")
    try:
        path = Path(snapshot_download(hub_id, revision=revision, allow_patterns=HUB_PATTERNS))
        if not any((path / name).exists() for name in WEIGHT_FILES[:2]):
            path = Path(snapshot_download(hub_id, revision=revision, allow_patterns=HUB_PATTERNS + ["*.bin"]))
        return path
    except Exception as err:  # the hub answered but refused: unknown repo, gated, revision missing, …
        raise CheckpointError(f"--checkpoint {hub_id!r} could not be downloaded: {err}. {how}") from err


def _reachable(url: str, timeout: float) -> bool:
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _check_directory(directory: Path, tokenizer: str | Path | None) -> None:
    missing = []
    if not (directory / "config.json").is_file():
        missing.append("config.json")
    if not any((directory / name).is_file() for name in WEIGHT_FILES):
        missing.append("weights (one of " + ", ".join(WEIGHT_FILES) + ")")
    if tokenizer is None and tokenizer_layout(directory) is None:
        missing.append("tokenizer (tokenizer.json, or vocab.json + merges.txt)")
    if missing:
        raise CheckpointError(f"--checkpoint {str(directory)!r} is missing: {'; '.join(missing)}")


def _tensor_names(directory: Path) -> set[str]:
    """Names of the tensors stored in a checkpoint directory, read without loading the tensors."""
    try:
        return _read_tensor_names(directory)
    except CheckpointError:
        raise
    except Exception as err:  # safetensors, json and torch raise their own types for damaged files
        raise CheckpointError(f"--checkpoint {str(directory)!r}: the weights cannot be read (damaged or truncated "
                              f"file?): {first_line(err)}") from err


def _read_tensor_names(directory: Path) -> set[str]:
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (directory / index).is_file():
            return set(json.loads((directory / index).read_text())["weight_map"])
    if (directory / "model.safetensors").is_file():
        from safetensors import safe_open

        with safe_open(directory / "model.safetensors", framework="pt") as f:
            return set(f.keys())
    import torch

    return set(torch.load(directory / "pytorch_model.bin", map_location="meta", weights_only=True, mmap=True))


def _load_directory(directory: Path, source: dict, tokenizer: str | Path | None) -> LoadedCheckpoint:
    from transformers import BridgeTowerConfig

    from .model import heads_in_keys, with_heads_class

    _check_directory(directory, tokenizer)
    try:  # before from_pretrained, which would first print a warning about it
        declared = json.loads((directory / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        declared = None  # from_pretrained says what is wrong with the file
    if declared not in (None, "bridgetower"):  # AutoConfig/AutoModel would load the directory as that architecture
        raise UnsupportedConfigError(f"unsupported BridgeTower config: model_type={declared!r} (valid: 'bridgetower'; "
                                     f"transformers' AutoModel would load this directory as {declared!r})")
    try:
        config = BridgeTowerConfig.from_pretrained(directory)
    except Exception as err:
        raise CheckpointError(f"--checkpoint {str(directory)!r}: config.json is not a BridgeTower config: "
                              f"{err}") from err
    tokenizer_dir = Path(tokenizer) if tokenizer else directory
    check_tokenizer_fits(config, tokenizer_dir, f"--tokenizer {str(tokenizer)!r}" if tokenizer
                          else f"--checkpoint {str(directory)!r}: its tokenizer")
    heads = heads_in_keys(_tensor_names(directory))
    check_supported(config, heads, parity_text_tokens(tokenizer_dir))
    image_processor = image_processor_kwargs(config, directory)  # refused here, before the weights load
    model_cls = with_heads_class(heads)
    model, info = _from_pretrained(model_cls, directory, config)
    problems = _weight_problems(info)
    if problems:
        raise CheckpointError(f"--checkpoint {str(directory)!r}: {problems}")
    return LoadedCheckpoint(model=model.eval(), heads=model.HEADS, tokenizer_dir=tokenizer_dir,
                            image_processor=image_processor, source={**source, "random_init": False},
                            unused=tuple(sorted(info.get("unexpected_keys", []))))


def _from_pretrained(model_cls, directory: Path, config):
    """`from_pretrained` with shape mismatches collected (ignore_mismatched_sizes, then refused by
    _weight_problems) and transformers' log held back: its load report is a table that its own error and ours
    would follow. When loading fails, what it logged is printed first, since its message may point at it."""
    import logging

    class Held(logging.Handler):
        def __init__(self):
            super().__init__()
            self.lines = []

        def emit(self, record):
            self.lines.append(self.format(record))

    held, library = Held(), logging.getLogger("transformers")  # its root logger; propagate is off there
    handlers, library.handlers = library.handlers, [held]
    try:
        return model_cls.from_pretrained(directory, config=config, output_loading_info=True,
                                         ignore_mismatched_sizes=True)
    except Exception as err:
        if held.lines:
            print("\n".join(held.lines), file=sys.stderr)
        raise CheckpointError(f"--checkpoint {str(directory)!r}: weights could not be loaded: "
                              f"{first_line(err)}") from err
    finally:
        library.handlers = handlers  # as the caller had them


def _weight_problems(info: dict) -> str:
    """What transformers' loading info says is wrong, in one line ('' when nothing): missing tensors first, then
    shape mismatches grouped over layers (one config field is usually behind a mismatch in every layer)."""
    def shown(items: list[str]) -> str:
        return "; ".join(items[:4]) + (f"; … ({len(items) - 4} more)" if len(items) > 4 else "")

    parts = []
    missing = sorted(info.get("missing_keys", []))
    if missing:
        parts.append(f"{len(missing)} tensor(s) the model needs are not in the weights: {shown(missing)}")
    groups = Counter((re.sub(r"\.\d+\.", ".*.", key), tuple(stored), tuple(expected))
                     for key, stored, expected in info.get("mismatched_keys", []))
    if groups:
        mismatched = [f"{pattern}{f' ({n}×)' if n > 1 else ''} is {list(stored)} in the weights, {list(expected)} "
                      "by config.json" for (pattern, stored, expected), n in sorted(groups.items())]
        parts.append(f"{groups.total()} tensor(s) have other shapes than config.json gives them: {shown(mismatched)}")
    return "; ".join(parts)


def _random_checkpoint(name: str, config_kwargs: dict, heads: tuple[str, ...], tokenizer: str | Path,
                       seed: int) -> LoadedCheckpoint:
    import torch
    from transformers import BridgeTowerConfig

    from .model import with_heads_class

    tokenizer = Path(tokenizer)
    if not tokenizer.is_dir() or tokenizer_layout(tokenizer) is None:
        raise CheckpointError(f"--tokenizer {str(tokenizer)!r} must be a directory with tokenizer.json, "
                              "or vocab.json + merges.txt")
    config = BridgeTowerConfig(**config_kwargs)
    check_tokenizer_fits(config, tokenizer, f"--tokenizer {str(tokenizer)!r}")
    check_supported(config, heads, parity_text_tokens(tokenizer))
    image_processor = image_processor_kwargs(config, None)
    torch.manual_seed(seed)
    model = with_heads_class(heads)(config).eval()
    if "itc" in heads:
        with torch.no_grad():
            model.logit_scale.fill_(config.logit_scale_init_value)
    source = {"kind": "tiny" if name == "tiny" else "alias", "alias": name, "random_init": True, "seed": seed}
    if name in KNOWN_CHECKPOINTS:
        source["hub_id"] = KNOWN_CHECKPOINTS[name].hub_id
    return LoadedCheckpoint(model=model, heads=model.HEADS, tokenizer_dir=tokenizer, image_processor=image_processor,
                            source=source)


def check_supported(config, heads: tuple[str, ...] = (), text_tokens: int = 0) -> None:
    """Reject config variants the graphs do not reproduce, and values transformers' eager model cannot run, naming
    the field. `text_tokens`: the longest parity caption the text tower must hold (parity_text_tokens). Everything
    else is exported."""
    text, vision = config.text_config, config.vision_config
    problems = []
    positions, needed = text.max_position_embeddings, max(text_tokens, MIN_TEXT_TOKENS)
    if not is_int(positions) or positions - 2 < needed:  # RoBERTa positions start after padding_idx 1
        why = (f"the export's parity captions need {text_tokens} with this tokenizer" if text_tokens >= MIN_TEXT_TOKENS
               else f"bt_runtime needs {MIN_TEXT_TOKENS}")
        held = f"positions for {max(positions - 2, 0)} tokens; " if is_int(positions) else ""
        problems.append(f"text_config.max_position_embeddings={positions!r} ({held}{why}: valid ≥ {needed + 2})")
    if text.pad_token_id not in (0, 1) or isinstance(text.pad_token_id, bool):
        problems.append(f"text_config.pad_token_id={text.pad_token_id!r} (positions start at pad_token_id + 1 and "
                        "texts are cut at max_position_embeddings − 2 tokens, so a longer text would index past the "
                        "position table: valid 0 or 1)")
    if not is_int(text.type_vocab_size) or text.type_vocab_size < 1:
        problems.append(f"text_config.type_vocab_size={text.type_vocab_size!r} (valid: ≥ 1; every token has type 0)")
    if not (is_int(vision.patch_size) and is_int(vision.image_size) and 1 <= vision.patch_size <= vision.image_size):
        problems.append(f"vision_config.image_size={vision.image_size!r} with patch_size={vision.patch_size!r} "
                        "(valid: 1 ≤ patch_size ≤ image_size; the patch convolution needs one whole patch)")
    if vision.num_channels != 3 or isinstance(vision.num_channels, bool):
        problems.append(f"vision_config.num_channels={vision.num_channels!r} (valid: 3; the image processor gives "
                        "RGB)")
    if "itc" in heads:  # transformers' BridgeTowerForContrastiveLearning itself fails on these two
        if not config.share_cross_modal_transformer_layers:
            problems.append("share_cross_modal_transformer_layers=False with contrastive (itc) heads")
        if vision.hidden_size != config.hidden_size:
            problems.append(f"vision_config.hidden_size={vision.hidden_size} != hidden_size={config.hidden_size} "
                            "with contrastive (itc) heads")
    if config.link_tower_type not in ("add", "scaled_add", "interpolate"):
        problems.append(f"link_tower_type={config.link_tower_type!r} (valid: add, scaled_add, interpolate)")
    if config.share_link_tower_layers:
        problems.append("share_link_tower_layers=True (transformers' BridgeTowerModel cannot run it either)")
    if vision.remove_last_layer:
        problems.append("vision_config.remove_last_layer=True (BridgeTowerModel indexes every vision layer)")
    if vision.num_hidden_layers != text.num_hidden_layers:
        problems.append(f"vision_config.num_hidden_layers={vision.num_hidden_layers} != "
                        f"text_config.num_hidden_layers={text.num_hidden_layers} "
                        "(the towers are bridged layer by layer)")
    if not 1 <= config.num_hidden_layers <= text.num_hidden_layers:
        problems.append(f"num_hidden_layers={config.num_hidden_layers} (must be 1..{text.num_hidden_layers})")
    if config.hidden_size != text.hidden_size:
        problems.append(f"hidden_size={config.hidden_size} != text_config.hidden_size={text.hidden_size}")
    vision_heads = vision.hidden_size // 64  # nn.MultiheadAttention(hidden, hidden // 64) in the vision tower
    if vision_heads == 0 or vision.hidden_size % vision_heads:
        problems.append(f"vision_config.hidden_size={vision.hidden_size} "
                        "(needs hidden_size // 64 heads that divide it)")
    if text.is_decoder or text.add_cross_attention:
        problems.append("text_config.is_decoder/add_cross_attention=True (the text tower is an encoder)")
    if problems:
        raise UnsupportedConfigError("unsupported BridgeTower config: " + "; ".join(problems))
