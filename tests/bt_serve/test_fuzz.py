"""Property test of bt-serve's request path (issue 22): whatever rows a client sends (random bytes, images of every
Pillow mode and allowed format, cut short or not, of any size; texts valid, invalid, empty or too long), merged by
the dynamic batcher with a known good request, the good request gets exactly the runtime's answer and every other row
gets either a finite answer or its own error naming its input — never an exception for the whole batch."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bt_export.specs import SAME_GRAPH_ABS
from bt_serve.models import Limits, RequestError, TaskModels

# (format, mode) pairs Pillow can write; "La" comes from the associated-alpha TIFF helper
ENCODABLE = [("PNG", m) for m in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16")] + \
            [("TIFF", m) for m in ("1", "L", "LA", "RGB", "RGBA", "CMYK", "F", "I;16", "YCbCr")] + \
            [("JPEG", m) for m in ("L", "RGB", "CMYK")] + [("BMP", m) for m in ("1", "L", "P", "RGB")] + \
            [("GIF", m) for m in ("L", "P")] + [("WEBP", m) for m in ("RGB", "RGBA")] + [("ICO", "RGBA")]
LIMITS = Limits(max_text_chars=2000, max_image_bytes=1_000_000)


@pytest.fixture(scope="module")
def good(runtime, photos_dir):
    image = min(photos_dir.iterdir()).read_bytes()
    return image, "two cats on a couch", float(runtime.itm_pairs([image], ["two cats on a couch"])[0])


@st.composite
def images(draw) -> bytes:
    kind = draw(st.sampled_from(["encoded", "encoded", "encoded", "la", "noise"]))
    if kind == "noise":
        return draw(st.binary(max_size=256))
    if kind == "la":
        from benchmarks.serve_hostile import associated_alpha_tiff

        return associated_alpha_tiff(draw(st.integers(0, 255)), draw(st.integers(0, 255)), draw(st.integers(1, 40)))
    fmt, mode = draw(st.sampled_from(ENCODABLE))
    size = (draw(st.integers(1, 48)), draw(st.integers(1, 48)))
    if fmt == "ICO":
        size = (max(size[0], 16), max(size[1], 16))
    seed = draw(st.integers(0, 2**32 - 1))
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    pil = Image.fromarray(pixels, "RGBA").convert(mode) if mode not in ("I;16", "F", "I") else \
        Image.fromarray(pixels[..., 0].astype(np.float32 if mode == "F" else np.int32) * 200).convert(mode)
    buffer = io.BytesIO()
    pil.save(buffer, fmt)
    data = buffer.getvalue()
    cut = draw(st.sampled_from([None, None, None, 0.5, 0.9]))  # truncated files too
    return data if cut is None else data[:int(len(data) * cut)]


texts = st.one_of(st.text(max_size=200), st.binary(max_size=64),
                  st.integers(LIMITS.max_text_chars + 1, 3 * LIMITS.max_text_chars).map(lambda n: "x" * n))


def _column(values) -> np.ndarray:
    return np.array([v.encode("utf-8", "surrogatepass") if isinstance(v, str) else v for v in values],
                    dtype=object).reshape(-1, 1)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.lists(st.tuples(images(), texts), min_size=1, max_size=3), min_size=1, max_size=4),
       at=st.integers(0, 4))
def test_no_row_fails_another(runtime, good, rows, at):
    models = TaskModels(runtime, LIMITS)
    requests = [{"image": _column([image for image, _ in request]), "text": _column([text for _, text in request])}
                for request in rows]
    at = min(at, len(requests))
    requests.insert(at, {"image": _column([good[0]]), "text": _column([good[1]])})
    responses = models.itm(requests)  # never raises: one row (the good one) is answerable
    assert responses[at]["error"][0, 0] == b""
    assert responses[at]["probability"][0, 0] == pytest.approx(good[2], abs=SAME_GRAPH_ABS)
    for response, request in zip(responses, requests, strict=True):
        assert response["probability"].shape == (len(request["image"]), 1)
        for probability, error in zip(response["probability"][:, 0], response["error"][:, 0], strict=True):
            if error:
                assert np.isnan(probability) and error.split(b":")[0] in (b"image[0]", b"image[1]", b"image[2]",
                                                                           b"text[0]", b"text[1]", b"text[2]")
            else:
                assert 0.0 <= probability <= 1.0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image=images(), text=texts)
def test_a_lone_row_is_an_answer_or_a_request_error(runtime, image, text):
    models = TaskModels(runtime, LIMITS)
    for task, name, value, output in ((models.embed_image, "image", image, "embedding"),
                                      (models.embed_text, "text", text, "embedding")):
        try:
            [response] = task([{name: _column([value])}])
        except RequestError as err:
            assert str(err).startswith(f"{name}[0]: ")
        else:
            assert np.isfinite(response[output]).all()
