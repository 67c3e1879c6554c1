"""The golden input suite: small encoded images, made deterministically, each in a mode or format the main golden
image (an 8-bit RGB PNG) does not cover, so that a port's decoder and RGB conversion are checked too
(docs/ports.md). Sizes differ from one another (and from the crop) so that up- and downscaling, odd widths and
both orientations go through the resize and the crop/pad.

Pixels come from a seeded NumPy generator over smooth gradients (JPEG keeps them close to the source; noise alone
would make every decoder difference look the same); the encoded bytes are whatever this Pillow writes, and the
export ships the files themselves with their sha256, so a port reads exactly these bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SEED = 24


@dataclass(frozen=True)
class SuiteImage:
    name: str  # id in the manifest (golden.inputs[].name) and in the file name
    suffix: str
    exercises: str  # what a port must get right to match its goldens


SUITE = (
    SuiteImage("rgba", ".png", "RGBA PNG with alpha from 0 to 255: preprocessing.alpha (composite on white, or drop)"),
    SuiteImage("la", ".png", "grey + alpha (LA) PNG: grey to RGB, then alpha as for RGBA"),
    SuiteImage("p_transparency", ".png", "palette PNG with per-entry transparency (tRNS): expand through the palette "
               "to RGBA, then alpha as for RGBA"),
    SuiteImage("l", ".png", "8-bit grey (L) PNG: replicated to three channels"),
    SuiteImage("cmyk", ".jpg", "CMYK JPEG (Adobe APP14, stored inverted as Photoshop does): Pillow's naive CMYK → RGB"),
    SuiteImage("jpeg_exif_rotated", ".jpg", "JPEG with EXIF orientation 6: rotated only when "
               "preprocessing.exif_transpose is true; the JPEG decoder must match libjpeg-turbo's"),
    SuiteImage("jpeg", ".jpg", "plain 4:2:0 JPEG, larger than the crop (downscaled): the JPEG decoder (IDCT and "
               "chroma upsampling) must match libjpeg-turbo's, as Pillow uses"),
)
# (width, height): all different; small (export size), the last one above 288 px for a downscale at full size too
SIZES = {"rgba": (40, 30), "la": (30, 44), "p_transparency": (36, 36), "l": (52, 34), "cmyk": (44, 32),
         "jpeg_exif_rotated": (40, 28), "jpeg": (331, 150)}


def _gradient(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """(height, width, 3) uint8: three smooth ramps plus mild noise."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    base = np.stack([255 * x / max(width - 1, 1), 255 * y / max(height - 1, 1),
                     127 + 120 * np.sin((x + 2 * y) / 5)], axis=-1)
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


def _alpha(width: int, height: int) -> np.ndarray:
    """(height, width) uint8: 0 (fully transparent) on the left through 255 on the right, a transparent band."""
    alpha = np.tile(np.linspace(0, 255, width).round().astype(np.uint8), (height, 1))
    alpha[height // 3: height // 3 + 2] = 0
    return alpha


def write_suite(directory: Path, prefix: str) -> list[tuple[SuiteImage, Path]]:
    """Write every suite image into `directory` as `<prefix><name><suffix>`; returns (image, path) in SUITE order."""
    from PIL import Image

    rng = np.random.default_rng(SEED)
    written = []
    for item in SUITE:
        width, height = SIZES[item.name]
        rgb = _gradient(width, height, rng)
        path = Path(directory) / f"{prefix}{item.name}{item.suffix}"
        if item.name == "rgba":
            Image.fromarray(np.dstack([rgb, _alpha(width, height)]), "RGBA").save(path)
        elif item.name == "la":
            Image.fromarray(np.dstack([rgb[..., 0], _alpha(width, height)]), "LA").save(path)
        elif item.name == "p_transparency":
            palette = Image.fromarray(rgb, "RGB").quantize(colors=16, method=Image.Quantize.MEDIANCUT, dither=0)
            entry_alpha = bytes(int(a) for a in np.linspace(0, 255, 16).round())  # tRNS: one alpha per entry
            palette.save(path, transparency=entry_alpha)
        elif item.name == "l":
            Image.fromarray(rgb[..., 1], "L").save(path)
        elif item.name == "cmyk":
            Image.fromarray(rgb, "RGB").convert("CMYK").save(path, quality=90)
        elif item.name == "jpeg_exif_rotated":
            exif = Image.Exif()
            exif[0x0112] = 6  # orientation: rotate 90° clockwise for display
            Image.fromarray(rgb, "RGB").save(path, quality=90, exif=exif.tobytes())
        else:
            Image.fromarray(rgb, "RGB").save(path, quality=90)
        written.append((item, path))
    return written
