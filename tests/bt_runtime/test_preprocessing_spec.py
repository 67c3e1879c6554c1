"""docs/preprocessing.md is exact: a NumPy port written from it alone (no Pillow resize, no bt_runtime
preprocessing) reproduces Pillow's antialiased bicubic bit for bit, and the whole pipeline reproduces the export's
golden pixel_values. If this fails, the spec (or Pillow) changed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from bt_runtime import read_manifest
from bt_runtime.golden import read
from bt_runtime.images import resize_shape

PRECISION_BITS = 22


def _bicubic(x: float) -> float:  # spec §3: the cubic convolution kernel, a = −0.5, support 2
    a = -0.5
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _coefficients(in_size: int, out_size: int) -> list[tuple[int, list[int]]]:
    """Spec §3: per output pixel, the first input pixel and the fixed-point weights."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    inverse = 1.0 / filterscale
    rows = []
    for out in range(out_size):
        center = (out + 0.5) * scale
        first = max(int(center - support + 0.5), 0)  # int(): truncation toward zero, as C's cast
        count = min(int(center + support + 0.5), in_size) - first
        weights = [_bicubic((k + first - center + 0.5) * inverse) for k in range(count)]
        total = sum(weights)
        if total != 0.0:
            weights = [w / total for w in weights]
        fixed = [int(-0.5 + w * (1 << PRECISION_BITS)) if w < 0 else int(0.5 + w * (1 << PRECISION_BITS))
                 for w in weights]
        rows.append((first, fixed))
    return rows


def _pass(image: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    """Spec §3: one separable pass along `axis` of an (H, W, 3) uint8 image; integer accumulate, shift, clamp."""
    moved = np.moveaxis(image.astype(np.int64), axis, 0)
    out = np.empty((out_size,) + moved.shape[1:], dtype=np.int64)
    for index, (first, fixed) in enumerate(_coefficients(moved.shape[0], out_size)):
        acc = np.full(moved.shape[1:], 1 << (PRECISION_BITS - 1), dtype=np.int64)
        for k, weight in enumerate(fixed):
            acc += moved[first + k] * weight
        out[index] = np.clip(acc >> PRECISION_BITS, 0, 255)
    return np.moveaxis(out, 0, axis).astype(np.uint8)


def spec_resize(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Spec §3: horizontal pass first (if the width changes), then vertical (if the height changes)."""
    if width != rgb.shape[1]:
        rgb = _pass(rgb, width, axis=1)
    if height != rgb.shape[0]:
        rgb = _pass(rgb, height, axis=0)
    return rgb


def spec_pixel_values(rgb: np.ndarray, preprocessing) -> np.ndarray:
    """Spec §2–§6 on decoded RGB."""
    resize = preprocessing.resize
    height, width = resize_shape(rgb.shape[0], rgb.shape[1], resize.shortest_edge, resize.longest_edge,
                                 resize.size_divisor)
    chw = spec_resize(rgb, height, width).transpose(2, 0, 1)
    size = preprocessing.image_size
    canvas = np.zeros((3, max(size, height), max(size, width)), np.uint8)
    top, left = math.ceil((canvas.shape[1] - height) / 2), math.ceil((canvas.shape[2] - width) / 2)
    canvas[:, top:top + height, left:left + width] = chw
    crop_top, crop_left = (canvas.shape[1] - size) // 2, (canvas.shape[2] - size) // 2
    chw = canvas[:, crop_top:crop_top + size, crop_left:crop_left + size]
    scaled = (chw.astype(np.float64) * preprocessing.rescale_factor).astype(np.float32)
    mean = np.asarray(preprocessing.mean, np.float32)[:, None, None]
    std = np.asarray(preprocessing.std, np.float32)[:, None, None]
    return (scaled - mean) / std


@pytest.mark.parametrize("size", [(288, 384), (96, 128), (37, 53), (700, 900)])  # down, far down, odd, up
def test_spec_resize_is_pillows_bicubic_bit_for_bit(photos_dir, size):
    for path in sorted(photos_dir.iterdir())[:3]:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        height, width = size
        expected = np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BICUBIC))
        np.testing.assert_array_equal(spec_resize(rgb, height, width), expected, err_msg=path.name)


def test_spec_pipeline_reproduces_the_golden_pixel_values(tiny_export):
    manifest = read_manifest(tiny_export)
    golden = {t.name: read(manifest, t) for t in manifest.golden.tensors}
    pixels = spec_pixel_values(golden["decoded_rgb"], manifest.preprocessing)
    np.testing.assert_array_equal(pixels, golden["pixel_values"])


def spec_composite_on_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Spec §1: Pillow's integer alpha_composite over opaque white, per channel."""
    color, alpha = color.astype(np.int64), alpha.astype(np.int64)
    t = 128 * (color * alpha + 255 * (255 - alpha)) + 16384
    return np.where(alpha == 0, 255, (((t >> 8) + t) >> 8) >> 7).astype(np.uint8)


def spec_decoded_rgb(path) -> np.ndarray:
    """Spec §1 from the file's raw samples (Pillow only decodes: no convert, no alpha_composite)."""
    image = Image.open(path)
    raw = np.asarray(image)
    if image.mode == "RGBA":
        return spec_composite_on_white(raw[..., :3], raw[..., 3:])
    if image.mode == "LA":
        return spec_composite_on_white(np.repeat(raw[..., :1], 3, axis=-1), raw[..., 1:])
    if image.mode == "P":
        palette = np.frombuffer(image.palette.tobytes(), np.uint8).reshape(-1, 3)
        entry_alpha = np.full(len(palette), 255, np.int64)
        trns = np.frombuffer(image.info["transparency"], np.uint8)
        entry_alpha[:len(trns)] = trns
        return spec_composite_on_white(palette[raw], entry_alpha[raw][..., None])
    if image.mode == "L":
        return np.repeat(raw[..., None], 3, axis=-1)
    if image.mode == "CMYK":  # a CMYK JPEG: Pillow has already inverted its samples (Adobe's convention)
        n = 255 - raw[..., 3:].astype(np.int64)
        t = raw[..., :3].astype(np.int64) * n + 128
        return (n - (((t >> 8) + t) >> 8)).astype(np.uint8)
    assert image.mode == "RGB", image.mode
    return raw


def test_spec_alpha_composite_is_pillows_for_every_value():
    color, alpha = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    rgba = np.stack([color, color, color, alpha], axis=-1).astype(np.uint8)
    white = Image.new("RGBA", (256, 256), (255, 255, 255, 255))
    expected = np.asarray(Image.alpha_composite(white, Image.fromarray(rgba, "RGBA")))[..., 0]
    np.testing.assert_array_equal(spec_composite_on_white(color, alpha), expected)
    rounded = np.floor((color * alpha + 255 * (255 - alpha)) / 255 + 0.5)  # the doc's closed form
    np.testing.assert_array_equal(rounded, expected)


def test_spec_reproduces_every_golden_suite_input(tiny_export):
    manifest = read_manifest(tiny_export)
    assert len(manifest.golden.inputs) == 7
    for item in manifest.golden.inputs:
        steps = {t.name: read(manifest, t) for t in item.tensors}
        decoded = spec_decoded_rgb(manifest.path(item.image.file))
        np.testing.assert_array_equal(decoded, steps["decoded_rgb"], err_msg=item.name)
        np.testing.assert_array_equal(spec_pixel_values(decoded, manifest.preprocessing), steps["pixel_values"],
                                      err_msg=item.name)
