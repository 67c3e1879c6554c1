"""NumPy + Pillow preprocessing vs transformers' BridgeTowerImageProcessor (Pillow backend): max |Δ| within
bt_export.specs.PREPROCESSING_ABS."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bt_export.specs import PREPROCESSING_ABS
from bt_runtime.errors import ImageInputError
from bt_runtime.images import ImagePreprocessor, resize_shape

SIZES = [288, 294, 96]  # base, large (crop larger than the floored resize: zero padding), tiny


def hf_image_processor(size: int):
    pytest.importorskip("transformers")
    from transformers.models.bridgetower.image_processing_pil_bridgetower import BridgeTowerImageProcessorPil

    return BridgeTowerImageProcessorPil(size={"shortest_edge": size}, crop_size={"shortest_edge": size},
                                        size_divisor=32, do_convert_rgb=True)


def ours(size: int) -> ImagePreprocessor:
    pytest.importorskip("transformers")
    from bt_export.manifest import preprocessing_summary

    return ImagePreprocessor.from_manifest(preprocessing_summary(hf_image_processor(size)))


def assert_matches_hf(image, size: int):
    expected = hf_image_processor(size)(image, return_tensors="np")["pixel_values"][0]
    actual = ours(size).pixel_values(image)
    assert actual.shape == expected.shape == (3, size, size)
    assert actual.dtype == np.float32
    assert np.max(np.abs(actual - expected)) <= PREPROCESSING_ABS


def synthetic(mode: str, width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(width * 7 + height)
    rgba = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    image = Image.fromarray(rgba, "RGBA")
    if mode == "P+transparency":
        image = image.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        image.info["transparency"] = 3
        return image
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65535, (height, width)).astype(np.uint16))  # Pillow: mode I;16
    return image.convert(mode)


@pytest.mark.parametrize("size", SIZES)
def test_real_photos_match_hf(photos_dir, size):
    for path in sorted(photos_dir.iterdir()):
        with Image.open(path) as image:
            image.load()
            assert_matches_hf(image, size)


@pytest.mark.parametrize("mode", ["RGB", "L", "LA", "RGBA", "P", "P+transparency", "CMYK", "1"])
@pytest.mark.parametrize("size", [288, 294])
def test_every_mode_matches_hf(mode, size):
    assert_matches_hf(synthetic(mode, 97, 61), size)


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_high_bit_depth_modes_are_refused_never_whitened(mode, tmp_path):
    """A full-range 16-bit PNG would clip to white in an 8-bit conversion: refused, from every input form."""
    image = synthetic("I;16", 40, 30)
    image = image if mode == "I;16" else image.convert(mode)
    forms = [image]
    if mode == "I;16":  # a 16-bit PNG file opens as I;16
        image.save(tmp_path / "deep.png")
        forms.append(tmp_path / "deep.png")
    for form in forms:
        with pytest.raises(ImageInputError, match=r"mode '(I;16|I|F)' .*refused"):
            ours(96).pixel_values(form)


@pytest.mark.parametrize("width,height", [(1, 1), (2, 3), (288, 288), (293, 1000), (479, 300), (1000, 80)])
def test_edge_sizes_match_hf(width, height):
    assert_matches_hf(synthetic("RGB", width, height), 294)


def test_strip_that_transformers_cannot_process_still_gets_pixels():
    strip = synthetic("RGB", 4000, 10)
    with pytest.raises(ValueError):  # transformers: a side floors to 0
        hf_image_processor(288)(strip, return_tensors="np")
    pixels = ours(288).pixel_values(strip)
    assert pixels.shape == (3, 288, 288) and np.isfinite(pixels).all()
    assert resize_shape(10, 4000, 288, 479, 32) == (32, 448)


def test_exif_rotated_jpeg_is_not_rotated_like_hf(tmp_path):
    """transformers ignores EXIF orientation; so do we by default. exif_transpose=True rotates."""
    image = synthetic("RGB", 120, 60)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif.tobytes(), quality=95)
    with Image.open(path) as loaded:
        loaded.load()
        assert_matches_hf(loaded, 288)
    default = ours(288).pixel_values(path)
    rotated = ImagePreprocessor.from_manifest(_summary(288), exif_transpose=True).pixel_values(path)
    assert not np.allclose(default, rotated)


def _summary(size):
    from bt_export.manifest import preprocessing_summary

    return preprocessing_summary(hf_image_processor(size))


def test_inputs_as_array_path_and_bytes_agree(photos_dir):
    path = photos_dir / "skimage_chelsea.png"
    preprocess = ours(288)
    from_path = preprocess.pixel_values(path)
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"))
    assert np.array_equal(preprocess.pixel_values(array), from_path)
    assert np.array_equal(preprocess.pixel_values(path.read_bytes()), from_path)
    assert np.array_equal(preprocess.pixel_values(str(path)), from_path)
    gray = np.asarray(Image.open(photos_dir / "skimage_camera.png"))
    assert np.array_equal(preprocess.pixel_values(gray), preprocess.pixel_values(gray[..., None]))


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    synthetic("RGB", 64, 64).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("bad,message", [
    (b"", "empty bytes"),
    (b"definitely not an image", "not a decodable image"),
    (_png_bytes()[:200], "not a decodable image"),
    (np.zeros((0, 5, 3), np.uint8), "empty image"),
    (np.zeros((4, 4, 3), np.float32), "dtype float32"),
    (np.zeros((4, 4, 2), np.uint8), "shape"),
    (12345, "unsupported type int"),
    ("/no/such/file.png", "no image file"),
])
def test_bad_images_name_the_argument(bad, message):
    preprocess = ImagePreprocessor(288, 288, 479, 32, "bicubic", True, True, 1 / 255, (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ImageInputError, match=message) as err:
        preprocess.pixel_values(bad, "images[2]")
    assert "images[2]" in str(err.value)


def test_decompression_bomb_limit_stays_on(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64×64 = 4096 > 2 × 1000: Pillow refuses
    preprocess = ImagePreprocessor(288, 288, 479, 32, "bicubic", True, True, 1 / 255, (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ImageInputError, match="decompression bomb"):
        preprocess.pixel_values(_png_bytes())
