"""bt-serve's task callables without a server: what Triton's dynamic batcher hands them (a list of requests, batch
axis first, BYTES as numpy object arrays) → one output dict per request, compared with bt_runtime called directly;
a bad request never fails the requests merged with it."""

from __future__ import annotations

import numpy as np
import pytest

from bt_export.specs import SAME_GRAPH_ABS
from bt_serve.models import RequestError
from bt_serve.server import model_specs
from tests.bt_serve.conftest import col


@pytest.fixture(scope="module")
def images(photos_dir) -> list[bytes]:
    return [p.read_bytes() for p in sorted(photos_dir.iterdir())][:3]


def test_merged_itm_requests_match_the_runtime(models, runtime, images):
    texts = ["two cats on a couch", "a remote control", "a football player"]
    requests = [{"image": col(image), "text": col(text)} for image, text in zip(images, texts, strict=True)]
    responses = models.itm(requests)
    expected = runtime.itm_pairs(images, texts)
    assert [r["probability"].shape for r in responses] == [(1, 1)] * 3
    np.testing.assert_allclose([r["probability"][0, 0] for r in responses], expected, atol=SAME_GRAPH_ABS)
    assert all(r["error"][0, 0] == b"" for r in responses)


def test_a_request_with_several_rows_keeps_its_order(models, runtime, images):
    texts = ["a cat", "a camera man"]
    [response] = models.itm([{"image": col(*images[:2]), "text": col(*texts)}])
    np.testing.assert_allclose(response["probability"][:, 0], runtime.itm_pairs(images[:2], texts), atol=SAME_GRAPH_ABS)


def test_a_bad_image_merged_with_good_requests_fails_only_itself(models, runtime, images):
    requests = [{"image": col(images[0]), "text": col("a cat")},
                {"image": col(b"GIF89a not really"), "text": col("a cat")},
                {"image": col(images[1]), "text": col(b"\xff\xfe")},
                {"image": col(images[2]), "text": col("a man")}]
    responses = models.itm(requests)
    good = runtime.itm_pairs([images[0], images[2]], ["a cat", "a man"])
    np.testing.assert_allclose([responses[0]["probability"][0, 0], responses[3]["probability"][0, 0]], good,
                               atol=SAME_GRAPH_ABS)
    assert np.isnan(responses[1]["probability"][0, 0]) and np.isnan(responses[2]["probability"][0, 0])
    assert b"image[0]" in responses[1]["error"][0, 0] and b"not UTF-8" in responses[2]["error"][0, 0]
    assert responses[0]["error"][0, 0] == responses[3]["error"][0, 0] == b""


@pytest.mark.parametrize("request_, says", [
    ({"image": col(b"nope"), "text": col("x")}, "image\\[0\\]: not a decodable image"),
    ({"image": col(b"nope", b"nope"), "text": col("x")}, "same number of rows.*image has 2, text has 1"),
    ({"text": col("x")}, "input 'image' is missing"),
])
def test_a_lone_bad_request_is_an_error_naming_the_input(models, request_, says):
    with pytest.raises(RequestError, match=says):
        models.itm([request_])


def test_a_request_with_mismatched_rows_answers_every_row_of_its_batch(models, images):
    responses = models.itm([{"image": col(images[0]), "text": col("a cat")},
                            {"image": col(images[0], images[1]), "text": col("a cat")}])
    assert responses[0]["error"][0, 0] == b"" and np.isfinite(responses[0]["probability"]).all()
    assert responses[1]["probability"].shape == (2, 1) and np.isnan(responses[1]["probability"]).all()
    assert all(b"same number of rows" in e for e in responses[1]["error"][:, 0])


def test_rerank_matches_itm_scores(models, runtime, images):
    texts = ["a cat", "two cats on a couch", "a red bus"]
    [response] = models.rerank([{"image": np.array([images[0]], dtype=object),
                                 "texts": np.array([t.encode() for t in texts], dtype=object)}])
    np.testing.assert_allclose(response["probabilities"], runtime.itm_scores(images[0], texts), atol=SAME_GRAPH_ABS)
    with pytest.raises(RequestError, match="texts: empty"):
        models.rerank([{"image": np.array([images[0]], dtype=object), "texts": np.array([], dtype=object)}])
    with pytest.raises(RequestError, match="texts\\[1\\]: not UTF-8"):
        models.rerank([{"image": np.array([images[0]], dtype=object),
                        "texts": np.array([b"ok", b"\xc3("], dtype=object)}])


def test_embeddings_match_the_runtime(models, runtime, images):
    responses = models.embed_image([{"image": col(images[0])}, {"image": col(images[1])}])
    np.testing.assert_allclose(np.concatenate([r["embedding"] for r in responses]),
                               runtime.embed_images(images[:2]), atol=SAME_GRAPH_ABS)
    [text] = models.embed_text([{"text": col("a cat")}])
    np.testing.assert_allclose(text["embedding"][0], runtime.embed_texts(["a cat"])[0], atol=SAME_GRAPH_ABS)
    mixed = models.embed_image([{"image": col(images[0])}, {"image": col(b"bad")}])
    assert np.isnan(mixed[1]["embedding"]).all() and b"image[0]" in mixed[1]["error"][0, 0]


def test_fill_mask_matches_the_runtime(models, runtime, images):
    text = "a <mask> looking out of the window"
    [response] = models.fill_mask([{"image": np.array([images[0]], dtype=object),
                                    "text": np.array([text.encode()], dtype=object)}])
    want = runtime.fill_mask(images[0], text)
    assert response["sentence"][0].decode() == want.sentence
    assert response["token_ids"].tolist() == [m.token_ids for m in want.masks]
    with pytest.raises(RequestError, match="no <mask>"):
        models.fill_mask([{"image": np.array([images[0]], dtype=object), "text": np.array([b"no mask"], dtype=object)}])


def test_models_follow_the_heads():
    assert [s["name"] for s in model_specs(("itm",), None)] == ["itm", "rerank"]
    assert [s["name"] for s in model_specs(("itm", "mlm", "itc"), 32)] == \
        ["itm", "rerank", "embed_image", "embed_text", "fill_mask"]
    assert model_specs((), None) == []
