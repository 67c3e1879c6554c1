"""The checkpoint's tokenizer: which files hold it, whether it fits the model (its ids index the text embedding
table, its vocabulary tokenizes English captions, the parity captions fit the position table), and how it is written
into an export as one tokenizer.json (converted from vocab.json + merges.txt when needed)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from bt_runtime.errors import first_line

from .errors import CheckpointError

if TYPE_CHECKING:
    from .checkpoints import LoadedCheckpoint

TOKENIZER_LAYOUTS = (("tokenizer.json",), ("vocab.json", "merges.txt"))
MIN_TEXT_TOKENS = 3  # bt_runtime refuses a tokenizer max_length below 3 (<s>, one token, </s>)


def tokenizer_layout(directory: Path) -> tuple[str, ...] | None:
    for layout in TOKENIZER_LAYOUTS:
        if all((directory / name).is_file() for name in layout):
            return layout
    return None


def check_tokenizer_fits(config, tokenizer_dir: Path, where: str) -> None:
    """The tokenizer's ids index the model's text embedding table: one past it fails deep in eager (IndexError)."""
    vocab = _tokenizer_vocab_size(tokenizer_dir)
    if vocab > config.text_config.vocab_size:
        raise CheckpointError(f"{where} has {vocab} tokens, more than the model's text vocab_size "
                              f"{config.text_config.vocab_size}: they do not belong together")


def _tokenizer_vocab_size(directory: Path) -> int:
    try:
        if (directory / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            return Tokenizer.from_file(str(directory / "tokenizer.json")).get_vocab_size()
        return len(json.loads((directory / "vocab.json").read_text(encoding="utf-8")))
    except Exception as err:  # tokenizers raises a bare Exception for a corrupt file
        raise CheckpointError(f"--tokenizer {str(directory)!r}: the tokenizer cannot be read: "
                              f"{first_line(err)}") from err


def parity_text_tokens(tokenizer_dir: Path) -> int:
    """Tokens in the longest default parity caption (special tokens included), by the tokenizer the export writes.
    The eager model and the traced text tower take them untruncated."""
    from .samples import DEFAULT_TEXTS

    try:
        tok = _hf_tokenizer(tokenizer_dir, max_length=MIN_TEXT_TOKENS)  # counted below without truncation
    except Exception as err:  # tokenizers/transformers raise bare Exceptions for corrupt files
        raise CheckpointError(f"tokenizer files in {str(tokenizer_dir)!r} cannot be loaded: "
                              f"{first_line(err)}") from err
    _check_vocabulary(tok, tokenizer_dir, DEFAULT_TEXTS)
    return max(len(tok.backend_tokenizer.encode(text).ids) for text in DEFAULT_TEXTS)  # no over-length warning


def _check_vocabulary(tok, tokenizer_dir: Path, texts) -> None:
    """The tokenizer knows the words of plain English captions: at least one known token per two words. A vocabulary
    that did not load (a vocab.json holding only the special tokens; transformers 5 ignoring 4.x's vocab_file=)
    drops or <unk>s every word, and parity cannot see it: eager and the graphs read the same token ids."""
    words = sum(len(text.split()) for text in texts)
    known = [[i for i in tok.backend_tokenizer.encode(text, add_special_tokens=False).ids if i != tok.unk_token_id]
             for text in texts]
    if 2 * sum(map(len, known)) < words:
        raise CheckpointError(f"tokenizer in {str(tokenizer_dir)!r} knows {sum(map(len, known))} token(s) in the "
                              f"{words} words of the parity captions ({texts[0]!r} → {known[0]}; valid: ≥ "
                              f"{-(-words // 2)} known tokens): its vocabulary is missing or not for English text; "
                              "give the checkpoint's own tokenizer (--tokenizer)")


def _hf_tokenizer(src: Path, max_length: int):
    from tokenizers import AddedToken
    from transformers import AutoTokenizer, RobertaTokenizerFast

    if (src / "tokenizer.json").is_file():
        return RobertaTokenizerFast(tokenizer_file=str(src / "tokenizer.json"), model_max_length=max_length)
    try:
        return AutoTokenizer.from_pretrained(src, model_max_length=max_length)
    except (OSError, ValueError):
        # transformers 5 takes vocab=/merges=: 4.x's vocab_file=/merges_file= are ignored there and made an empty
        # tokenizer (every text <unk>). <mask> takes the space before it, as in RoBERTa's own tokenizer.json.
        return RobertaTokenizerFast(vocab=str(src / "vocab.json"), merges=str(src / "merges.txt"),
                                    mask_token=AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False,
                                                          special=True),
                                    model_max_length=max_length)


def copy_tokenizer(loaded: LoadedCheckpoint, out_dir: Path) -> list[str]:
    """Write tokenizer.json (converted from vocab.json + merges.txt when needed) and its HF config into `out_dir`."""
    src = loaded.tokenizer_dir
    max_length = loaded.config.text_config.max_position_embeddings - 2
    try:
        tok = _hf_tokenizer(src, max_length)
    except Exception as err:  # tokenizers/transformers raise bare Exceptions for corrupt files
        raise CheckpointError(f"tokenizer files in {str(src)!r} cannot be loaded: "
                              f"{first_line(err)}") from err
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)  # tokenizer.json (converted from vocab.json + merges.txt when needed) + its config
        written = []
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if (Path(tmp) / name).is_file():
                shutil.copy(Path(tmp) / name, out_dir / name)
                written.append(name)
    return written
