"""Image decoding and preprocessing in NumPy + Pillow, reproducing transformers' BridgeTowerImageProcessor
(5.x, Pillow backend, do_convert_rgb=True) step for step, with parameters read from the manifest.

Steps: RGB (transparency composited on white, or dropped for exports referenced against transformers < 5.18: the
manifest's `preprocessing.alpha`) → resize the shortest edge to `shortest_edge`, longest edge capped
at int(1333/800·size), both rounded then floored to a multiple of `size_divisor`, Pillow BICUBIC on uint8 → center
crop to size×size, zero-padding when the resized image is smaller (happens at 294 px: 294 floors to 288) →
rescale in float64 then float32 → (x − mean) / std in float32 → (3, H, W).

Where transformers raises (a side of a very elongated image floors to 0), that side is kept at one size_divisor.

EXIF orientation is NOT applied by default, because transformers does not apply it either: a phone photo whose
pixels are stored sideways is fed sideways, exactly as the eager model would see it. Pass exif_transpose=True to
rotate first (then results differ from transformers for such files).

Refused, never guessed (transformers refuses them too): 16- and 32-bit integer and float modes (I;16*, I, F),
whose conversion to 8-bit would silently clip to white; images above `max_pixels` (default 64 Mpx, checked from the
header before any pixel is decoded); truncated or closed images; encoded bytes or files in a format outside
`formats` (default PNG, JPEG, WebP, BMP, GIF, TIFF: Pillow never hands EPS, PSD, … to their plugins, EPS being
rendered by Ghostscript wherever it is installed). Every mode Pillow decodes either converts to RGB (premultiplied
`La`/`RGBa` are un-premultiplied first, then composited like any alpha) or raises ImageInputError: never a bare
Pillow ValueError.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import stat
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageInputError

RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
            "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}
DEFAULT_MAX_PIXELS = 64_000_000  # a 61 Mpx camera frame passes; a 12000×12000 "bomb" (144 Mpx) does not
HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
# Formats Pillow may open (Image.open(formats=...)): the common photo and web formats; the rest of Pillow's plugins
# (EPS → Ghostscript, PSD, …) are attack surface a model input does not need. JPEG covers MPO (multi-picture) JPEGs.
DEFAULT_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")  # "A" in getbands() would also match LAB's a* channel
PREMULTIPLIED = {"La": "LA", "RGBa": "RGBA"}  # associated alpha (TIFF ExtraSamples=1): Pillow un-premultiplies


def open_image(image, name: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS,
               formats: tuple[str, ...] = DEFAULT_FORMATS) -> Image.Image:
    """A decoded PIL image from a PIL image, an HWC uint8 array, a path or encoded bytes. `name` labels errors;
    `formats` (Pillow format names) limits what paths and bytes may be decoded as."""
    if isinstance(image, Image.Image):
        pil = image
        _check_pixels(pil, name, max_pixels)
        try:
            pil.load()  # a lazily opened file may be truncated, or the image closed
        except (OSError, ValueError, SyntaxError, AttributeError) as err:
            raise ImageInputError(f"{name}: the PIL image cannot be read (closed, or its file truncated?): "
                                  f"{err}") from err
    elif isinstance(image, np.ndarray):
        pil = _from_array(image, name)
        _check_pixels(pil, name, max_pixels)
    elif isinstance(image, (str, Path)):
        path = Path(image)
        why = not_a_file(path)
        if why:
            raise ImageInputError(f"{name}: no image file at {str(path)[:200]!r} ({why})")
        pil = _decode(path, name, max_pixels, formats)
    elif isinstance(image, (bytes, bytearray, memoryview)):
        if len(image) == 0:
            raise ImageInputError(f"{name}: empty bytes (expected an encoded PNG/JPEG/… image)")
        pil = _decode(io.BytesIO(bytes(image)), name, max_pixels, formats)
    else:
        raise ImageInputError(f"{name}: unsupported type {type(image).__name__}; expected a PIL image, an HWC uint8 "
                              "NumPy array, a path, or encoded image bytes")
    if pil.width == 0 or pil.height == 0:
        raise ImageInputError(f"{name}: empty image ({pil.width}×{pil.height})")
    _check_mode(pil, name)
    return pil


def check_image_file(path: Path, name: str, max_pixels: int = DEFAULT_MAX_PIXELS,
                     formats: tuple[str, ...] = DEFAULT_FORMATS) -> None:
    """Raise the ImageInputError `open_image` would for the file at `path`, found from its header and structure
    (Pillow's verify()) without decoding pixels: for checking a whole gallery before any model work."""
    with _opened(path, name, max_pixels, formats) as pil:
        _check_mode(pil, name)
        pil.verify()  # structure and checksums


def _check_mode(pil: Image.Image, name: str) -> None:
    if pil.mode in HIGH_BIT_MODES:
        example = ("Image.fromarray((np.asarray(im) >> 8).astype(np.uint8)) for full-range 16-bit" if "16" in pil.mode
                   else "Image.fromarray(np.clip(np.asarray(im) * (255 / HIGHEST), 0, 255).astype(np.uint8)) with "
                        "HIGHEST the value that should become white")
        raise ImageInputError(f"{name}: image mode {pil.mode!r} ({'16-bit integer' if '16' in pil.mode else '32-bit'} "
                              "pixels) is refused: its conversion to 8-bit RGB would clip (transformers refuses it "
                              f"too). Convert it to 8-bit yourself with the scaling you intend, e.g. {example}.")


def check_max_pixels(max_pixels) -> int:
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ImageInputError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    return max_pixels


def check_formats(formats) -> tuple[str, ...]:
    """Pillow format names, upper-cased and checked against the plugins Pillow can open."""
    Image.init()
    if isinstance(formats, str) or not formats or not all(isinstance(f, str) for f in formats):
        raise ImageInputError(f"image formats must be a non-empty list of Pillow format names, got {formats!r}")
    chosen = tuple(f.upper() for f in formats)
    unknown = [f for f in chosen if f not in Image.OPEN]
    if unknown:
        raise ImageInputError(f"image formats {unknown} are not formats Pillow can open; valid: "
                              f"{', '.join(sorted(Image.OPEN))}")
    return chosen


def not_a_file(path) -> str | None:
    """None when `path` names a regular file (links followed), else why not, judged by stat alone: the file is never
    opened (a FIFO would block a read forever, /dev/zero would be read until memory runs out). Why: "No such file or
    directory", "a FIFO, not a regular file", … or the OS's reason (a name too long, a link loop, a NUL byte), which
    Path.is_file raises up to Python 3.13 (it swallows only ENOENT, ENOTDIR, EBADF, ELOOP) — so the answer is the
    same on every Python."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError) as err:  # ValueError: a NUL byte in the path
        return getattr(err, "strerror", None) or str(err) or type(err).__name__
    return None if stat.S_ISREG(mode) else f"{_kind(mode)}, not a regular file"


def image_files(paths, suffixes: tuple[str, ...]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The files a list of image paths names: each directory's regular files with `suffixes` (`regular_files`:
    anything else named like an image is refused), each other path as given; and (path, why) for each path that is
    not a regular file. Judged by stat alone: nothing is opened."""
    files, bad = [], []
    for path in map(Path, paths):
        if os.path.isdir(path):  # never raises (Path.is_dir does on a name too long, up to Python 3.13)
            files += regular_files(path, suffixes)
        elif why := not_a_file(path):
            bad.append((path, why))
        else:
            files.append(path)
    return files, bad


def regular_files(directory: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The regular files (symlinks to regular files included) in `directory` whose suffix is in `suffixes`, sorted.
    Anything else with such a name — a FIFO (opening it would block forever), a socket, a device, a directory —
    is refused by name before any file is opened."""
    files, odd = [], []
    for path in sorted(p for p in Path(directory).iterdir() if p.suffix.lower() in suffixes):
        why = not_a_file(path)  # follows symlinks; never opens
        if why:
            odd.append(f"{path} ({why})")
        else:
            files.append(path)
    if odd:
        raise ImageInputError(f"{directory}: {len(odd)} entr{'y' if len(odd) == 1 else 'ies'} named like an image "
                              f"but not a readable regular file: {'; '.join(odd[:10])}; remove or rename them")
    return files


def _kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "a special file"


def _check_pixels(pil: Image.Image, name: str, max_pixels: int) -> None:
    if pil.width * pil.height > max_pixels:
        raise ImageInputError(f"{name}: {pil.width}×{pil.height} = {pil.width * pil.height:,} pixels is above the "
                              f"runtime's max_pixels ({max_pixels:,}); downscale it first or raise max_pixels")


def _decode(source, name: str, max_pixels: int, formats: tuple[str, ...]) -> Image.Image:
    with _opened(source, name, max_pixels, formats) as pil:
        pil.load()
        return pil.copy()  # copy() keeps .info (EXIF, transparency key)


@contextlib.contextmanager
def _opened(source, name: str, max_pixels: int, formats: tuple[str, ...]) -> Iterator[Image.Image]:
    """Image.open(source) limited to `formats`, its header checked against max_pixels before any pixel is decoded;
    every Pillow failure inside the block (open, load, verify) becomes one ImageInputError naming `name`."""
    try:
        with warnings.catch_warnings():
            # max_pixels decides (checked from the header); Pillow's warning would only be printed
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source, formats=list(formats)) as pil:
                _check_pixels(pil, name, max_pixels)
                yield pil
    except ImageInputError:  # above max_pixels, a high-bit mode: already says so
        raise
    except Image.DecompressionBombError as err:  # above Pillow's own hard limit (2 × Image.MAX_IMAGE_PIXELS)
        raise ImageInputError(f"{name}: refused as a possible decompression bomb ({err})") from err
    except UnidentifiedImageError as err:
        raise ImageInputError(f"{name}: not a decodable image in an allowed format ({', '.join(formats)}); corrupt, "
                              "truncated, or another format?") from err
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as err:  # what Pillow's plugins raise
        raise ImageInputError(f"{name}: not a decodable image (corrupt or truncated?): {err}") from err


def _from_array(array: np.ndarray, name: str) -> Image.Image:
    if array.dtype != np.uint8:
        raise ImageInputError(f"{name}: NumPy image of dtype {array.dtype}; expected uint8 (HWC, 0–255)")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageInputError(f"{name}: NumPy image of shape {array.shape}; expected (H, W), (H, W, 1), "
                              "(H, W, 3) or (H, W, 4)")
    if array.size == 0:
        raise ImageInputError(f"{name}: empty image of shape {array.shape}")
    return Image.fromarray(np.ascontiguousarray(array))


def to_rgb(pil: Image.Image, alpha: str = "composite_on_white") -> Image.Image:
    """transformers' convert_to_rgb. composite_on_white (5.18+): transparency (alpha band or a transparency key)
    composited on white; drop_alpha (earlier 5.x): PIL's convert('RGB'), which ignores transparency."""
    if pil.mode in PREMULTIPLIED:  # Pillow converts La only to LA; RGBa → RGBA un-premultiplies as well
        pil = pil.convert(PREMULTIPLIED[pil.mode])
    if alpha == "composite_on_white" and (pil.mode in ALPHA_MODES or pil.info.get("transparency") is not None):
        rgba = pil.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return pil.convert("RGB")


def resize_shape(height: int, width: int, shortest: int, longest: int, size_divisor: int) -> tuple[int, int]:
    """BridgeTower's output (height, width): shortest edge → `shortest`, longest capped, floored to the divisor."""
    scale = shortest / min(height, width)
    new_height, new_width = (shortest, scale * width) if height < width else (scale * height, shortest)
    if max(new_height, new_width) > longest:
        scale = longest / max(new_height, new_width)
        new_height, new_width = scale * new_height, scale * new_width
    new_height, new_width = int(new_height + 0.5), int(new_width + 0.5)
    # A side that floors to 0 (a 4000×10 strip) makes transformers raise; we keep one divisor's worth and let the
    # center crop pad, so such an image still gets a score. Identical to transformers everywhere else.
    return (max(size_divisor, new_height // size_divisor * size_divisor),
            max(size_divisor, new_width // size_divisor * size_divisor))


def center_crop_or_pad(chw: np.ndarray, height: int, width: int) -> np.ndarray:
    """(C, h, w) → (C, height, width): centered crop; zero padding (centered, extra row/col after) where smaller."""
    _, in_height, in_width = chw.shape
    top, left = (in_height - height) // 2, (in_width - width) // 2
    if top >= 0 and left >= 0:
        return chw[:, top:top + height, left:left + width]
    padded_height, padded_width = max(height, in_height), max(width, in_width)
    pad_top, pad_left = math.ceil((padded_height - in_height) / 2), math.ceil((padded_width - in_width) / 2)
    padded = np.zeros(chw.shape[:1] + (padded_height, padded_width), dtype=chw.dtype)
    padded[:, pad_top:pad_top + in_height, pad_left:pad_left + in_width] = chw
    top, left = top + pad_top, left + pad_left
    return padded[:, max(0, top):min(padded_height, top + height), max(0, left):min(padded_width, left + width)]


def rescale_and_normalize(chw: np.ndarray, rescale_factor: float, mean: np.ndarray | None,
                          std: np.ndarray | None) -> np.ndarray:
    image = (chw.astype(np.float64) * rescale_factor).astype(np.float32)  # transformers upcasts, then float32
    if mean is not None:
        image = (image - mean[:, None, None]) / std[:, None, None]  # float32 throughout, as transformers
    return image


@dataclass(frozen=True)
class ImagePreprocessor:
    """Callable: list of images → pixel_values float32 (N, 3, S, S). Built from manifest['preprocessing']."""

    image_size: int
    shortest_edge: int
    longest_edge: int
    size_divisor: int
    resample: str
    do_resize: bool
    do_center_crop: bool
    rescale_factor: float
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    exif_transpose: bool = False
    alpha: str = "composite_on_white"
    max_pixels: int = DEFAULT_MAX_PIXELS
    formats: tuple[str, ...] = DEFAULT_FORMATS  # Pillow format names paths and bytes may be decoded as

    @classmethod
    def from_manifest(cls, preprocessing, exif_transpose: bool | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                      formats: tuple[str, ...] = DEFAULT_FORMATS) -> ImagePreprocessor:
        """From a validated bt_runtime.manifest.Preprocessing (resample, alpha and sizes were checked at load)."""
        check_max_pixels(max_pixels)
        resize, crop, normalize = preprocessing.resize, preprocessing.center_crop, preprocessing.normalize
        return cls(
            image_size=preprocessing.image_size, shortest_edge=resize.shortest_edge,
            longest_edge=resize.longest_edge, size_divisor=resize.size_divisor, resample=resize.resample,
            do_resize=resize.enabled, do_center_crop=crop.enabled, rescale_factor=preprocessing.rescale_factor,
            mean=tuple(preprocessing.mean) if normalize else None, std=tuple(preprocessing.std) if normalize else None,
            exif_transpose=preprocessing.exif_transpose if exif_transpose is None else exif_transpose,
            alpha=preprocessing.alpha, max_pixels=max_pixels, formats=check_formats(formats),
        )

    def limited(self, max_pixels: int | None = None, formats: tuple[str, ...] | None = None) -> ImagePreprocessor:
        """A copy with other limits (bt-serve's --max-pixels / --image-formats), each checked."""
        return replace(self, max_pixels=self.max_pixels if max_pixels is None else check_max_pixels(max_pixels),
                       formats=self.formats if formats is None else check_formats(formats))

    def stages(self, image, name: str = "image") -> dict[str, np.ndarray]:
        """Every step's result, for golden vectors and ports: decoded_rgb and resized_rgb (H, W, 3) uint8, cropped
        (3, S, S) uint8 (zero-padded where smaller), pixel_values (3, S, S) float32."""
        pil = open_image(image, name, self.max_pixels, self.formats)
        try:
            if self.exif_transpose:
                pil = ImageOps.exif_transpose(pil)
            pil = to_rgb(pil, self.alpha)
        except (ValueError, OSError) as err:  # a mode or EXIF block Pillow cannot convert: this image's error only
            raise ImageInputError(f"{name}: image mode {pil.mode!r} cannot be converted to RGB ({err}); save it as "
                                  "8-bit RGB, RGBA, L or LA") from err
        decoded = np.asarray(pil)
        if self.do_resize:
            height, width = resize_shape(pil.height, pil.width, self.shortest_edge, self.longest_edge,
                                         self.size_divisor)
            pil = pil.resize((width, height), resample=RESAMPLE[self.resample])
        resized = np.asarray(pil)
        chw = resized.transpose(2, 0, 1)  # (H, W, 3) → (3, H, W)
        if self.do_center_crop:
            chw = center_crop_or_pad(chw, self.image_size, self.image_size)
        mean = None if self.mean is None else np.asarray(self.mean, dtype=np.float32)
        std = None if self.std is None else np.asarray(self.std, dtype=np.float32)
        return {"decoded_rgb": decoded, "resized_rgb": resized, "cropped": np.ascontiguousarray(chw),
                "pixel_values": rescale_and_normalize(chw, self.rescale_factor, mean, std)}

    def pixel_values(self, image, name: str = "image") -> np.ndarray:
        """One image → (3, S, S) float32."""
        return self.stages(image, name)["pixel_values"]

    def __call__(self, images: list, name: str = "images") -> np.ndarray:
        if not images:
            raise ImageInputError(f"{name}: empty list; give at least one image")
        return np.stack([self.pixel_values(image, f"{name}[{i}]") for i, image in enumerate(images)])
