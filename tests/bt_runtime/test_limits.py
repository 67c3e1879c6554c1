"""Input limits and conversions of the runtime's input path (issue 22): every Pillow mode converts to RGB or is an
ImageInputError, images decode only as allow-listed formats, texts above max_chars are refused before tokenizing
(in milliseconds), and gallery scans never open what is not a regular file."""

from __future__ import annotations

import io
import os
import threading
import time

import numpy as np
import pytest
from PIL import Image

from benchmarks.serve_hostile import associated_alpha_tiff
from bt_runtime import BridgeTowerRuntime
from bt_runtime.errors import BtRuntimeError, ImageInputError, TextInputError
from bt_runtime.images import DEFAULT_FORMATS, check_formats, open_image, regular_files

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nshowpage\n"


@pytest.fixture(scope="module")
def runtime(tiny_export):
    with BridgeTowerRuntime.load(tiny_export) as runtime:
        yield runtime


def test_grayscale_tiff_with_associated_alpha_is_composited_on_white(runtime):
    gray, alpha = 200, 128
    assert Image.open(io.BytesIO(associated_alpha_tiff(gray, alpha))).mode == "La"
    decoded = runtime.preprocess.stages(associated_alpha_tiff(gray, alpha))["decoded_rgb"]
    expected = gray * alpha / 255 + 255 * (1 - alpha / 255)  # un-premultiplied, then over white
    assert decoded.shape == (16, 16, 3) and np.abs(decoded.astype(float) - expected).max() <= 1.5


MODES = ["1", "L", "P", "LA", "La", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "I",
         "I;16", "I;16B", "I;16L", "F"]


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_converts_or_is_an_image_input_error(runtime, mode):
    image = Image.new(mode, (20, 12))
    try:
        pixels = runtime.preprocess.pixel_values(image)
    except ImageInputError as err:
        assert mode in ("I", "I;16", "I;16B", "I;16L", "F") and "is refused" in str(err)
    else:
        assert pixels.shape == (3, runtime.preprocess.image_size, runtime.preprocess.image_size)
        assert np.isfinite(pixels).all()


def test_palette_with_transparency_is_composited(runtime):
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0] * 256)
    image.info["transparency"] = 0
    assert (runtime.preprocess.stages(image)["decoded_rgb"] == 255).all()  # fully transparent black → white


def test_formats_outside_the_allow_list_never_reach_their_plugin():
    assert DEFAULT_FORMATS == ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
    with pytest.raises(ImageInputError, match=r"image: not a decodable image in an allowed format \(PNG, JPEG"):
        open_image(EPS)
    ico = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(ico, "ICO")
    with pytest.raises(ImageInputError, match="allowed format"):
        open_image(ico.getvalue())
    assert open_image(ico.getvalue(), formats=("ICO",)).size == (16, 16)  # configurable


def test_the_allow_list_is_configurable_on_the_preprocessor(runtime, tmp_path):
    path = tmp_path / "x.bmp"
    Image.new("RGB", (16, 16)).save(path)
    png_only = runtime.preprocess.limited(formats=("png",))
    assert png_only.formats == ("PNG",)
    with pytest.raises(ImageInputError, match=r"x\.bmp|image"):
        png_only.pixel_values(path)
    assert runtime.preprocess.pixel_values(path).shape[0] == 3


@pytest.mark.parametrize("formats", [("FOO",), (), "PNG", [1]])
def test_unknown_formats_are_refused(formats):
    with pytest.raises(ImageInputError, match="formats"):
        check_formats(formats)


def test_a_64_mb_text_is_refused_in_milliseconds(runtime):
    text = "a" * (64 * 2**20)
    started = time.perf_counter()
    with pytest.raises(TextInputError, match=r"texts\[1\]: 67,108,864 characters is above the limit of 20,000"):
        runtime.embed_texts(["a cat", text])
    assert time.perf_counter() - started < 1.0  # tokenizing it took minutes and gigabytes


def test_the_text_limit_is_configurable(runtime):
    text = "two cats " * 3000  # 27,000 characters
    with pytest.raises(TextInputError, match="above the limit"):
        runtime.itm_scores(np.zeros((8, 8, 3), np.uint8), [text])
    runtime.tokenizer.max_chars = 30_000
    try:
        assert runtime.itm_scores(np.zeros((8, 8, 3), np.uint8), [text]).shape == (1,)
    finally:
        runtime.tokenizer.max_chars = 20_000


@pytest.fixture
def fifo_gallery(tmp_path):
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    Image.new("RGB", (8, 8)).save(gallery / "a.png")
    os.mkfifo(gallery / "b.png")
    yield gallery
    release_fifo(gallery / "b.png")


def release_fifo(path) -> None:
    """Unblock a reader, should one have opened the FIFO (it would block forever otherwise)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # no reader: nothing to release
        pass


def _within(seconds: float, call):
    """call() in a thread; its result or exception, or TimeoutError when it blocks (a FIFO opened)."""
    outcome = {}

    def target():
        try:
            outcome["value"] = call()
        except Exception as err:  # noqa: BLE001 — handed to the test, which checks its type
            outcome["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError("blocked: a FIFO was opened")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_a_fifo_named_png_is_refused_by_name_never_opened(fifo_gallery):
    with pytest.raises(ImageInputError, match=r"b\.png \(a FIFO, not a regular file\)"):
        _within(10, lambda: regular_files(fifo_gallery, (".png",)))


def test_bt_run_gallery_refuses_a_fifo(fifo_gallery, runtime):
    from bt_runtime.cli import _gallery

    with pytest.raises(BtRuntimeError, match=r"b\.png \(a FIFO"):
        _within(10, lambda: _gallery([fifo_gallery], runtime))
    with pytest.raises(BtRuntimeError, match=r"b\.png \(a FIFO, not a regular file\)"):
        _within(10, lambda: _gallery([fifo_gallery / "b.png"], runtime))


def test_a_directory_and_a_socket_named_png_are_refused(tmp_path):
    import socket

    (tmp_path / "d.png").mkdir()
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "s.png"))
        with pytest.raises(ImageInputError, match=r"2 entries.*d\.png \(a directory.*s\.png \(a socket"):
            regular_files(tmp_path, (".png",))


def test_symlinks_to_regular_files_are_listed(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "b.png").symlink_to(tmp_path / "a.png")
    assert [p.name for p in regular_files(tmp_path, (".png",))] == ["a.png", "b.png"]
