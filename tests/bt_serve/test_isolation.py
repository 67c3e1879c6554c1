"""A hostile row never fails the rows merged with it (issue 22): associated-alpha TIFFs, formats outside the allow-list,
oversized texts, image bytes and pixels, and anything else a decoder raises are that row's error only; bt-serve's
network defaults (loopback, a taken port named at once)."""

from __future__ import annotations

import io
import socket
import time

import numpy as np
import pytest
from PIL import Image

from benchmarks.serve_hostile import associated_alpha_tiff
from bt_export.specs import SAME_GRAPH_ABS
from bt_serve.models import Limits, RequestError, TaskModels
from bt_serve.server import PortInUseError, ServeOptions, check_ports_free
from tests.bt_runtime.test_limits import EPS
from tests.bt_serve.conftest import col


@pytest.fixture(scope="module")
def photos(photos_dir) -> list[bytes]:
    return [p.read_bytes() for p in sorted(photos_dir.iterdir())][:2]


def huge_png(side: int = 9000) -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, "PNG")  # 81 Mpx in a few KB
    return buffer.getvalue()


def itm_merged(models, runtime, photos, hostile_image: bytes, hostile_text: str | bytes = "a cat"):
    """[good, hostile, good] through itm: the good rows equal the runtime; the hostile row's outcome returned."""
    requests = [{"image": col(photos[0]), "text": col("two cats")},
                {"image": col(hostile_image), "text": col(hostile_text)},
                {"image": col(photos[1]), "text": col("a man")}]
    responses = models.itm(requests)
    want = runtime.itm_pairs(photos, ["two cats", "a man"])
    np.testing.assert_allclose([responses[0]["probability"][0, 0], responses[2]["probability"][0, 0]], want,
                               atol=SAME_GRAPH_ABS)
    assert responses[0]["error"][0, 0] == responses[2]["error"][0, 0] == b""
    return responses[1]["probability"][0, 0], responses[1]["error"][0, 0].decode()


def test_an_associated_alpha_tiff_is_answered_like_the_runtime_and_fails_no_one(models, runtime, photos):
    tiff = associated_alpha_tiff(200, 128, size=64)
    probability, error = itm_merged(models, runtime, photos, tiff)
    assert error == ""
    assert probability == pytest.approx(runtime.itm_pairs([tiff], ["a cat"])[0], abs=SAME_GRAPH_ABS)


@pytest.mark.parametrize("hostile, says", [
    (EPS, r"image\[0\]: not a decodable image in an allowed format"),
    (huge_png(), r"image\[0\]: 9000×9000 = 81,000,000 pixels is above the runtime's max_pixels"),
])
def test_a_refused_image_is_that_rows_error_only(models, runtime, photos, hostile, says):
    import re

    probability, error = itm_merged(models, runtime, photos, hostile)
    assert np.isnan(probability) and re.search(says, error), error


def test_a_64_mb_text_is_that_rows_error_in_milliseconds(models, runtime, photos):
    started = time.perf_counter()
    probability, error = itm_merged(models, runtime, photos, photos[0], b"a" * (64 * 2**20))
    assert np.isnan(probability) and "text[0]: 67,108,864 bytes is above bt-serve's --max-text-chars" in error
    assert time.perf_counter() - started < 5  # the good rows' work included; the text itself is never decoded


def test_text_and_image_byte_limits_are_configurable(runtime, photos):
    models = TaskModels(runtime, Limits(max_text_chars=10, max_image_bytes=len(photos[0]) - 1))
    responses = models.embed_text([{"text": col("short")}, {"text": col("ü" * 11)}])
    assert responses[0]["error"][0, 0] == b""
    assert b"text[0]: 11 characters is above the limit of 10" in responses[1]["error"][0, 0]
    with pytest.raises(RequestError, match=rf"image\[0\]: {len(photos[0]):,} bytes is above bt-serve's "
                                           "--max-image-bytes"):
        models.embed_image([{"image": col(photos[0])}])
    with pytest.raises(RequestError, match=r"texts\[0\]: 11 characters"):
        models.rerank([{"image": np.array([photos[1]], dtype=object), "texts": np.array(["x" * 11], dtype=object)}])


def test_the_tokenizer_never_refuses_a_row_the_limits_accepted(runtime):
    before = runtime.tokenizer.max_chars
    try:
        models = TaskModels(runtime, Limits(max_text_chars=before + 5000))
        [response] = models.embed_text([{"text": col("cat " * ((before + 4000) // 4))}])
        assert response["error"][0, 0] == b""
    finally:
        runtime.tokenizer.max_chars = before


class _Exploding:
    """A preprocessor whose decoder raises something no one planned for, for one marked image."""

    def __init__(self, real):
        self.real = real

    def pixel_values(self, image, name="image"):
        if image == b"boom":
            raise ZeroDivisionError("a plugin bug")
        return self.real.pixel_values(image, name)


class _Runtime:
    def __init__(self, real):
        self.real, self.preprocess = real, _Exploding(real.preprocess)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_whatever_a_decoder_raises_is_that_rows_error_only(runtime, photos):
    models = TaskModels(_Runtime(runtime))
    responses = models.embed_image([{"image": col(photos[0])}, {"image": col(b"boom")}])
    np.testing.assert_allclose(responses[0]["embedding"][0], runtime.embed_images(photos[:1])[0], atol=SAME_GRAPH_ABS)
    assert np.isnan(responses[1]["embedding"]).all()
    assert responses[1]["error"][0, 0] == b"image[0]: cannot be decoded (ZeroDivisionError: a plugin bug)"


# ---- network defaults ----

def test_bt_serve_binds_loopback_unless_told(monkeypatch, tiny_export):
    import importlib.util

    from typer.testing import CliRunner

    import bt_serve.server
    from bt_serve.cli import app

    assert ServeOptions().address == "127.0.0.1"
    seen = {}
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "pytriton"
                        else real_find_spec(name, *a))
    monkeypatch.setattr(bt_serve.server, "serve", lambda export, options, ready: seen.update(options=options))
    from benchmarks.serve_load import free_ports

    ports = [arg for option, port in zip(("--http-port", "--grpc-port", "--metrics-port"), free_ports(3), strict=True)
             for arg in (option, str(port))]
    result = CliRunner().invoke(app, [str(tiny_export), *ports, "--max-text-chars", "100", "--image-formats",
                                      "png,jpeg"])
    assert result.exit_code == 0, result.output
    options = seen["options"]
    assert (options.address, options.max_text_chars, options.image_formats) == ("127.0.0.1", 100, ("PNG", "JPEG"))
    result = CliRunner().invoke(app, [str(tiny_export), "--image-formats", "png,eps2"])
    assert result.exit_code == 2 and "EPS2" in result.output


def test_a_taken_port_is_named_at_once():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=rf"^--grpc-port {port}: cannot listen on 127.0.0.1:{port} "
                                                 r"\(Address already in use\)"):
            check_ports_free("127.0.0.1", {"--http-port": 0, "--grpc-port": port})
    check_ports_free("127.0.0.1", {"--grpc-port": port})  # free again (TIME_WAIT does not count)


def test_bt_serve_with_a_taken_port_fails_at_once_naming_it(serve_python, tiny_export):
    """Before: tritonserver started, failed to bind, and bt-serve waited 121 s for a client timeout."""
    import subprocess

    from benchmarks.serve_load import free_ports

    http, metrics = free_ports(2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        grpc = taken.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run([serve_python, "-m", "bt_serve.cli", str(tiny_export), "--http-port", str(http),
                                 "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
                                check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: --grpc-port {grpc}: cannot listen on "
                                                            f"127.0.0.1:{grpc}")
    assert time.monotonic() - started < 30
