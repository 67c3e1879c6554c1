"""Tokenization with the `tokenizers` library from the export's tokenizer.json (same ids as transformers'
RobertaTokenizerFast / BridgeTowerProcessor), padded per batch and truncated at the model's limit.

Texts longer than `max_chars` characters are refused before tokenizing, not truncated: the tokenizer reads the whole
text before it truncates (a 16 MB text took 19 s and 3.2 GB), and cutting characters ourselves could change which
tokens the model sees (tokens span characters), so results would silently differ from transformers'. A caller
with longer documents raises `runtime.tokenizer.max_chars` or cuts them where it chooses; a caller that checks
lengths itself for the calls it makes (bt-serve, per row) uses `text_limit(n)`, which changes no shared state."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from .errors import ManifestError, TextInputError, first_line
from .integrity import CHANGED_FILE_REMEDY, verify_sha256

# The model reads at most max_length tokens (512 for BridgeTower: ~2,000 characters of English); 20,000 characters
# leave 10× headroom and tokenize in ~25 ms, so one request cannot hold a worker for seconds.
DEFAULT_MAX_TEXT_CHARS = 20_000
# The limit of the calls made inside `text_limit` (this thread or task only); None: each tokenizer's max_chars.
_CALL_MAX_CHARS: ContextVar[int | None] = ContextVar("bt_call_max_chars", default=None)


@contextlib.contextmanager
def text_limit(max_chars: int) -> Iterator[None]:
    """Texts tokenized inside this block (by any TextTokenizer, in this thread or asyncio task only) are checked
    against `max_chars` instead of the tokenizer's own `max_chars`: a per-call limit, never a shared setting."""
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
        raise TextInputError(f"max_chars must be a positive integer, got {max_chars!r}")
    token = _CALL_MAX_CHARS.set(max_chars)
    try:
        yield
    finally:
        _CALL_MAX_CHARS.reset(token)


@dataclass(frozen=True)
class Encoded:
    input_ids: np.ndarray  # (B, S) int64, padded with pad_token_id
    attention_mask: np.ndarray  # (B, S) int64, 1 = token, 0 = padding

    @property
    def lengths(self) -> np.ndarray:
        return self.attention_mask.sum(axis=1)


class TextTokenizer:
    def __init__(self, tokenizer_file: str | Path, max_length: int, pad_token_id: int, mask_token: str,
                 mask_token_id: int):
        try:
            self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except Exception as err:  # the tokenizers library raises a bare Exception for missing and corrupt files
            raise ManifestError(f"tokenizer file {str(tokenizer_file)!r} cannot be loaded: "
                                f"{first_line(err)}") from err
        self.tokenizer.no_padding()
        # Longer texts are cut to the model's positions (max_position_embeddings − 2), never a crash.
        self.tokenizer.enable_truncation(max_length=max_length)
        self.max_length, self.pad_token_id = max_length, pad_token_id
        self.mask_token, self.mask_token_id = mask_token, mask_token_id
        self.max_chars = DEFAULT_MAX_TEXT_CHARS  # longer texts are refused before tokenizing (module docstring)

    @classmethod
    def from_manifest(cls, manifest, verify_checksums: bool = True) -> "TextTokenizer":
        """The export's tokenizer.json, checked against the sha256 the manifest lists for it."""
        info = manifest.tokenizer
        path = manifest.path(info.file)
        if verify_checksums:
            manifest.listed_file(info.file)  # the tokenizer must be listed with its sha256
            for ref in manifest.files:  # tokenizer.json and its companions (tokenizer_config.json): every listed file
                verify_sha256(manifest.path(ref.file), ref.sha256,
                              CHANGED_FILE_REMEDY)
        tokenizer = cls(path, info.max_length, info.pad_token_id, info.mask_token, info.mask_token_id)
        if tokenizer.tokenizer.token_to_id(info.mask_token) != info.mask_token_id:
            raise ManifestError(f"{str(path)!r}: {info.mask_token!r} is not token {info.mask_token_id} as the manifest "
                                "says; the tokenizer does not belong to this export")
        tokenizer._check_not_empty(path)
        return tokenizer

    def _check_not_empty(self, path) -> None:
        """A tokenizer whose vocabulary is only its special tokens reads every text as `<s></s>`: every score is the
        same and nothing fails. bt-export wrote such tokenizers before 2026-12-02 from `vocab.json` + `merges.txt`
        checkpoints (transformers 5 ignored the 4.x arguments it used), and parity could not see it."""
        added = self.tokenizer.get_added_tokens_decoder().values()
        special = {token.content for token in added if token.special}
        words = [token for token in added if not token.special]  # added with special=False: they tokenize text
        if not words and set(self.tokenizer.get_vocab(with_added_tokens=False)) <= special:
            raise ManifestError(f"{str(path)!r} holds only its {len(special)} special tokens, so every text would "
                                "be read as <s></s>; exports made before 2026-12-02 from a checkpoint with vocab.json "
                                "+ merges.txt and no tokenizer.json have this: re-export it with this bt-export")

    def __call__(self, texts: list[str], name: str = "texts") -> Encoded:
        call_limit = _CALL_MAX_CHARS.get()
        check_texts(texts, name, self.max_chars if call_limit is None else call_limit)
        encodings = self.tokenizer.encode_batch(list(texts))
        longest = max(len(e.ids) for e in encodings)
        input_ids = np.full((len(texts), longest), self.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((len(texts), longest), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            input_ids[row, :len(encoding.ids)] = encoding.ids
            attention_mask[row, :len(encoding.ids)] = 1
        return Encoded(input_ids, attention_mask)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)


def shorten(text: str, limit: int = 80) -> str:
    """repr of `text`, cut for error messages (a 50 KB text must not become a 50 KB message)."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"… ({len(text)} characters)"


def check_text_length(text: str, name: str, max_chars: int) -> None:
    """Refuse a text above `max_chars` characters (costs nothing: len() of a str is stored)."""
    if len(text) > max_chars:
        raise TextInputError(f"{name}: {len(text):,} characters is above the limit of {max_chars:,} (the model reads "
                             "only its first few hundred tokens); shorten it, or raise the limit (runtime: "
                             "runtime.tokenizer.max_chars; bt-serve: --max-text-chars)")


def check_texts(texts, name: str = "texts", max_chars: int | None = None) -> None:
    """Types, Unicode validity and, when `max_chars` is given, length (checked first: before any pass over a text)."""
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise TextInputError(f"{name}: expected a list of strings, got {type(texts).__name__}")
    if not texts:
        raise TextInputError(f"{name}: empty list; give at least one text")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TextInputError(f"{name}[{index}]: expected a string, got {type(text).__name__}")
        if max_chars is not None:
            check_text_length(text, f"{name}[{index}]", max_chars)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:  # a lone surrogate, e.g. from undecodable command-line bytes
            raise TextInputError(f"{name}[{index}]: not valid Unicode text (character {err.start}: "
                                 f"{text[err.start]!r} is a lone surrogate); pass UTF-8 decoded text") from None
