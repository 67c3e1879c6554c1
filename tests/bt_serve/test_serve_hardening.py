"""bt-serve's task models leave the shared runtime as they found it and answer fill_mask in full or not at all
(issue 22): the text limit is per call (never written into the runtime's tokenizer), and a mask cut off by
truncation is the request's error, never a silently shorter answer."""

from __future__ import annotations

import numpy as np
import pytest

from bt_runtime.errors import TextInputError
from bt_serve.models import Limits, RequestError, TaskModels
from tests.bt_serve.conftest import col


def test_task_models_never_change_the_shared_tokenizer(runtime):
    before = runtime.tokenizer.max_chars
    long = "cat " * ((before + 4000) // 4)
    models = TaskModels(runtime, Limits(max_text_chars=before + 5000))
    assert runtime.tokenizer.max_chars == before
    [response] = models.embed_text([{"text": col(long)}])
    assert response["error"][0, 0] == b"" and np.isfinite(response["embedding"]).all()
    with pytest.raises(TextInputError, match=f"above the limit of {before:,}"):  # other callers keep their limit
        runtime.embed_texts([long])


def test_fill_mask_beyond_truncation_is_the_requests_error(models, photos_dir):
    image = sorted(photos_dir.iterdir())[0].read_bytes()
    text = "a <mask> cat " + "word " * 3_000 + "and a <mask>"
    with pytest.raises(RequestError, match="1 of the 2 <mask> .* cut off by truncation"):
        models.fill_mask([{"image": np.array([image], dtype=object), "text": np.array([text], dtype=object)}])
    [answer] = models.fill_mask([{"image": np.array([image], dtype=object),
                                  "text": np.array(["a <mask> and a <mask>"], dtype=object)}])
    assert answer["token_ids"].shape == (2, 5)
