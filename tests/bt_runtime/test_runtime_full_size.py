"""Runtime on the full-size base-itm-mlm export (random init), against transformers eager. Slow."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bt_runtime import BridgeTowerRuntime

pytestmark = pytest.mark.slow
pytest.importorskip("torch")

from bt_export.eager import EagerBridgeTower  # noqa: E402
from bt_export.specs import RUNTIME_FP32_BOUNDS  # noqa: E402

CAPTIONS = ["An image of two cats chilling on a couch", "A football player scoring a goal",
            "a cat looking out of the window"]


@pytest.fixture(scope="module")
def pair(base_export, roberta_dir):
    eager = EagerBridgeTower("base-itm-mlm", base_export, random_init=True, tokenizer=roberta_dir)
    return BridgeTowerRuntime.load(base_export), eager


def test_full_size_itm_fill_mask_and_retrieve(pair, photos_dir):
    runtime, eager = pair
    photos = sorted(photos_dir.iterdir())
    image = Image.open(photos[0])
    scores = runtime.itm_scores(photos[0], CAPTIONS)
    expected = np.array([eager.itm_probability(image, t) for t in CAPTIONS])
    print("full-size itm |Δ|:", np.abs(scores - expected).max())
    assert np.abs(scores - expected).max() <= RUNTIME_FP32_BOUNDS["itm_probability_abs"]

    text = "a <mask> looking out of the window"
    result = runtime.fill_mask(photos[0], text)
    logits, ids = eager.mlm_logits(image, text)
    assert result.masks[0].token_ids[0] == int(logits[np.flatnonzero(ids == 50264)[0]].argmax())

    hits = runtime.retrieve(CAPTIONS[0], photos, top_k=len(photos))  # no ITC head: ITM over the gallery
    brute = np.array([eager.itm_probability(Image.open(p), CAPTIONS[0]) for p in photos])
    assert [h.index for h in hits] == np.argsort(-brute).tolist()
