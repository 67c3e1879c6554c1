"""Tokenizer (tokenizers library) vs transformers' tokenizer of the same files: identical ids and masks."""

from __future__ import annotations

import numpy as np
import pytest

from bt_runtime.text import TextTokenizer

TEXTS = ["An image of two cats chilling on a couch", "A <mask> on a couch", "a", "  spaces   and\ttabs ",
         "Ünïcödé — “quotes” 🐱", "a <mask> looking out of the <mask>."]


def tokenizers_for(directory):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(directory)
    ours = TextTokenizer(directory / "tokenizer.json", 512, hf.pad_token_id, hf.mask_token, hf.mask_token_id)
    return hf, ours


@pytest.fixture(params=["tiny", "roberta"])
def tokenizer_dir(request, tiny_export, roberta_dir, tmp_path):
    if request.param == "tiny":
        return tiny_export
    # the hub layout: tokenizer.json + vocab.json, plus transformers' own config written by bt-export
    from bt_export.checkpoints import LoadedCheckpoint
    from bt_export.tokenizer_files import copy_tokenizer

    class Config:
        class text_config:
            max_position_embeddings = 514

    copy_tokenizer(LoadedCheckpoint(model=type("M", (), {"config": Config})(), heads=(), tokenizer_dir=roberta_dir,
                                    image_processor={}), tmp_path)
    return tmp_path


def test_single_and_padded_batches_match_hf(tokenizer_dir):
    hf, ours = tokenizers_for(tokenizer_dir)
    for text in TEXTS:
        expected = hf([text])
        encoded = ours([text])
        assert encoded.input_ids.tolist() == expected["input_ids"], text
    expected = hf(TEXTS, padding=True, return_tensors="np")
    encoded = ours(TEXTS)
    np.testing.assert_array_equal(encoded.input_ids, expected["input_ids"])
    np.testing.assert_array_equal(encoded.attention_mask, expected["attention_mask"])


def test_roberta_reference_ids(roberta_dir):
    ours = TextTokenizer(roberta_dir / "tokenizer.json", 512, 1, "<mask>", 50264)
    assert ours(["An image of two cats chilling on a couch"]).input_ids.tolist() == [
        [0, 4688, 2274, 9, 80, 10017, 22577, 15, 10, 16433, 2]]
    assert ours(["A <mask> on a couch"]).input_ids.tolist() == [[0, 250, 50264, 15, 10, 16433, 2]]


def test_long_text_is_truncated_at_the_model_limit(tokenizer_dir):
    hf, ours = tokenizers_for(tokenizer_dir)
    long_text = "two cats on a couch " * 400
    encoded = ours([long_text, "short"])
    assert encoded.input_ids.shape == (2, 512)
    assert encoded.input_ids[0, -1] == hf.eos_token_id  # truncation keeps </s>
    assert encoded.input_ids[0].tolist() == hf([long_text], truncation=True, max_length=512)["input_ids"][0]
