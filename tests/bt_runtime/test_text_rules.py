"""docs/text.md is enough to tokenize: a pure-Python byte-level BPE written from that page alone (its section numbers
in the comments) reproduces bt_runtime's input_ids and attention_mask on 300 seeded random texts over roberta-base's
vocab.json + merges.txt."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from bt_runtime.text import TextTokenizer

regex = pytest.importorskip("regex")  # \p{L} / \p{N}; installed with transformers (the test extra)

# §3: GPT-2's pre-tokenizer regex, as written in docs/text.md
PIECES = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def _white_space(char: str) -> bool:
    """§2: Unicode's White_Space property (Rust's char::is_whitespace)."""
    return bool(regex.match(r"\p{White_Space}", char))


def _bytes_to_unicode() -> dict[int, str]:
    """§3: printable bytes map to themselves, the other 68 to U+0100… in increasing order."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    table, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class DocTokenizer:
    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], added: dict[str, int],
                 lstrip: set[str], max_length: int, pad_id: int, bos_id: int, eos_id: int):
        self.vocab, self.added, self.lstrip = vocab, added, lstrip
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.max_length, self.pad_id, self.bos_id, self.eos_id = max_length, pad_id, bos_id, eos_id
        self.byte_map, self.cache = _bytes_to_unicode(), {}

    def _split_added(self, text: str) -> list[str | int]:
        """§2: leftmost-longest added tokens out of the raw text; `lstrip` ones take the whitespace on their left."""
        parts, start, i = [], 0, 0
        while i < len(text):
            match = max((t for t in self.added if text.startswith(t, i)), key=len, default=None)
            if match is None:
                i += 1
                continue
            end_of_text = i
            if match in self.lstrip:
                while end_of_text > start and _white_space(text[end_of_text - 1]):
                    end_of_text -= 1
            if end_of_text > start:
                parts.append(text[start:end_of_text])
            parts.append(self.added[match])
            i = start = i + len(match)
        if start < len(text):
            parts.append(text[start:])
        return parts

    def _bpe(self, piece: str) -> list[int]:
        """§4: merge the lowest-ranked adjacent pair, every occurrence, until none has a rank."""
        if piece in self.cache:
            return self.cache[piece]
        symbols = list(piece)
        while len(symbols) > 1:
            pairs = {(a, b) for a, b in zip(symbols, symbols[1:], strict=False)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, k = [], 0
            while k < len(symbols):
                if k + 1 < len(symbols) and (symbols[k], symbols[k + 1]) == best:
                    merged.append(symbols[k] + symbols[k + 1])
                    k += 2
                else:
                    merged.append(symbols[k])
                    k += 1
            symbols = merged
        self.cache[piece] = ids = [self.vocab[s] for s in symbols]
        return ids

    def encode(self, text: str) -> list[int]:
        ids = []
        for part in self._split_added(text):
            if isinstance(part, int):
                ids.append(part)
                continue
            for piece in PIECES.findall(part):  # §3
                ids += self._bpe("".join(self.byte_map[b] for b in piece.encode("utf-8")))
        return [self.bos_id, *ids[:self.max_length - 2], self.eos_id]  # §5

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """§6: right padding to the longest text of the batch."""
        rows = [self.encode(t) for t in texts]
        longest = max(map(len, rows))
        ids = np.array([r + [self.pad_id] * (longest - len(r)) for r in rows], np.int64)
        mask = np.array([[1] * len(r) + [0] * (longest - len(r)) for r in rows], np.int64)
        return ids, mask


def _doc_tokenizer(roberta_dir, max_length: int) -> DocTokenizer:
    vocab = json.loads((roberta_dir / "vocab.json").read_text(encoding="utf-8"))
    lines = (roberta_dir / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    added = {t["content"]: t["id"] for t in json.loads((roberta_dir / "tokenizer.json").read_text())["added_tokens"]}
    return DocTokenizer(vocab, merges, added, {"<mask>"}, max_length, pad_id=1, bos_id=0, eos_id=2)


WORDS = ["cat", "Cats", "couch", "don't", "it's", "I'M", "we'll", "naïve", "café", "東京", "Ελλάδα", "2024", "3.14",
         "x²", "😀", "👩‍👩‍👧", "e\u0301", "<mask>", "<s>", "</s>", "<pad>", "<unk>", "<mas", "mask>", "--", "!!!",
         "http://a.b/c?d=1", "\u00a0", "\u3000", "\x1c", "\u200b", "tab\there", "new\nline", "ﬁ", "İstanbul"]
GAPS = [" ", "  ", "   ", "\t", "\n", " \n ", "", "\u00a0", "\r\n", "    "]


def _random_text(rng: random.Random) -> str:
    if rng.random() < 0.07:  # far above max_length: truncation
        return " ".join(rng.choice(WORDS[:12]) for _ in range(rng.randint(300, 700)))
    parts = []
    for _ in range(rng.randint(0, 14)):
        parts += [rng.choice(WORDS), rng.choice(GAPS)]
    if rng.random() < 0.2:
        parts.append(rng.choice(GAPS))  # trailing whitespace
    if rng.random() < 0.2:
        parts.insert(0, rng.choice(GAPS))  # leading whitespace
    return "".join(parts) or "x"


@pytest.mark.parametrize("max_length", [512, 24])
def test_the_documented_rules_reproduce_the_runtime(roberta_dir, max_length):
    ours = TextTokenizer(roberta_dir / "tokenizer.json", max_length, pad_token_id=1, mask_token="<mask>",
                         mask_token_id=50264)
    documented = _doc_tokenizer(roberta_dir, max_length)
    rng = random.Random(24 + max_length)
    texts = [_random_text(rng) for _ in range(300)]
    assert sum("<mask>" in t for t in texts) > 30 and max(map(len, texts)) > 2000
    for start in range(0, len(texts), 10):  # batches of 10: padding to each batch's longest
        batch = texts[start:start + 10]
        expected = ours(batch)
        ids, mask = documented(batch)
        for row, text in enumerate(batch):
            assert ids[row].tolist() == expected.input_ids[row].tolist(), repr(text)
        np.testing.assert_array_equal(mask, expected.attention_mask)
    assert ours(texts[:1]).input_ids.shape[1] <= max_length
