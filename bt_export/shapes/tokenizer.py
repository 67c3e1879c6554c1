"""The `shapes` checkpoint's tokenizer: a byte-level BPE trained on the caption grammar, every grammar word one token.

RoBERTa's layout (<s>=0, <pad>=1, </s>=2, <unk>=3, <mask> last, RobertaProcessing) as scripts/make_tiny_tokenizer.py
builds for `tiny`, so the export's and the runtime's text paths and fill-mask serve it unchanged. Byte-level, not a
word-level vocabulary: any text still tokenizes (words outside the grammar become byte pieces). Deterministic.
"""

from __future__ import annotations

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from .data import GRAMMAR_WORDS

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]
MASK_TOKEN = "<mask>"


def build_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    # every word as the caption's first word ("two") and after a space ("Ġtwo"); the trainer merges until each is
    # one token and then has no pair left to merge, so vocab_size is only an upper bound
    corpus = [" ".join(GRAMMAR_WORDS)] * 4 + [w for w in GRAMMAR_WORDS for _ in range(2)]
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    tokenizer.add_special_tokens([AddedToken(MASK_TOKEN, lstrip=True, special=True)])  # as RoBERTa: last id
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True)
    for word in GRAMMAR_WORDS:
        for form in (word, " " + word):
            pieces = tokenizer.encode(form, add_special_tokens=False).tokens
            assert len(pieces) == 1, (form, pieces)  # internal invariant: one token per grammar word
    return tokenizer


def hf_tokenizer(tokenizer_file: str, max_length: int):
    """transformers' RobertaTokenizerFast over tokenizer.json (what BridgeTowerProcessor holds)."""
    from transformers import RobertaTokenizerFast

    return RobertaTokenizerFast(tokenizer_file=tokenizer_file, model_max_length=max_length)
