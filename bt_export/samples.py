"""Inputs for tracing and parity: captions of different lengths (padding exercised) and images.

Images are real photos when the caller passes them (tests pass `../shared/assets/images`), else deterministic
synthetic pictures. Pixel values and token ids come from Hugging Face's own BridgeTowerProcessor, so the
reference side of every parity check sees exactly what a transformers user would feed the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import BtExportError

DEFAULT_TEXTS = (
    "An image of two cats chilling on a couch",
    "A football player scoring a goal",
    "a <mask> looking out of the window",
    "A photo of a bird flying over the snow near a small red boat in the morning",
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


@dataclass
class Samples:
    texts: list[str]
    images: list  # PIL images
    pixel_values: object  # torch (N, 3, H, W)
    input_ids: object  # torch (N, S) int64, padded
    attention_mask: object  # torch (N, S) int64
    image_names: list[str]


def synthetic_images(count: int, seed: int = 0) -> list:
    """Deterministic pictures of different sizes and aspect ratios (gradients plus noise, one grayscale)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    sizes = [(640, 480), (300, 451), (512, 512), (200, 150), (97, 333)]
    images = []
    for index in range(count):
        width, height = sizes[index % len(sizes)]
        y, x = np.mgrid[0:height, 0:width]
        base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
        noisy = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
        image = Image.fromarray(noisy, "RGB")
        images.append(image.convert("L") if index == 2 else image)
    return images


def load_images(paths: list[Path]) -> tuple[list, list[str]]:
    """--parity-images: every file decoded by bt_runtime's own loader, so an image the runtime would refuse
    (16-bit, above its pixel limit, another format) is refused here, before any eager work, not at the last step."""
    from bt_runtime.errors import BtRuntimeError
    from bt_runtime.images import image_files, open_image

    try:  # a FIFO named *.png would block Image.open forever: only regular files are listed
        files, bad = image_files(paths, IMAGE_SUFFIXES)
    except BtRuntimeError as err:
        raise BtExportError(f"--parity-images {err}") from None
    if bad:
        path, why = bad[0]
        raise BtExportError(f"--parity-images {str(path)!r}: {why} (give image files or a directory of them)")
    if not files:
        raise BtExportError(f"--parity-images {[str(p) for p in paths]} hold no image ({', '.join(IMAGE_SUFFIXES)})")
    images = []
    for file in files:
        try:
            images.append(open_image(file, repr(str(file))))
        except BtRuntimeError as err:
            raise BtExportError(f"--parity-images: {err}") from None
    return images, [f.name for f in files]


def make_samples(processor, images: list | None = None, image_names: list[str] | None = None,
                 texts: tuple[str, ...] = DEFAULT_TEXTS, grid: bool = False) -> Samples:
    """Pair image i with text i (the shorter list cycles), or with `grid` every image with every text; process
    both with the HF processor."""
    if not images:
        images, image_names = synthetic_images(len(texts)), [f"synthetic-{i}" for i in range(len(texts))]
    if grid:
        pairs = [(i, t) for i in range(len(images)) for t in range(len(texts))]
    else:
        pairs = [(k % len(images), k % len(texts)) for k in range(max(len(texts), len(images)))]
    texts = [texts[t] for _, t in pairs]
    names = [image_names[i] for i, _ in pairs]
    images = [images[i] for i, _ in pairs]
    encoded = processor(images=images, text=texts, padding=True, return_tensors="pt")
    return Samples(texts, images, encoded["pixel_values"], encoded["input_ids"], encoded["attention_mask"], names)


# Seed 7 of the held-out split: no accuracy report, accuracy test or training evaluation of the shapes checkpoint
# uses it, so its calibration scenes are in-domain and unseen by every evaluation.
SHAPES_CALIBRATION_SEED = 7


def shapes_calibration(count: int = 4) -> tuple[list, list[str], tuple[str, ...]]:
    """In-domain parity and int8-search inputs for the `shapes` checkpoint (the default photos' captions are mostly
    out of its 365-word vocabulary, so their ITM and MLM decisions say nothing of the task): `count` held-out scenes
    and, as texts, each scene's caption, one of its one-attribute hard negatives, and the caption with one attribute
    word masked (MLM). With the reduced-precision grid every image meets every text: its own caption, a hard
    negative of its own, and the other scenes' captions."""
    from .shapes import data

    samples = data.make_samples(SHAPES_CALIBRATION_SEED, count, split="heldout")
    texts = [s.caption for s in samples]
    negatives = [data.hard_negatives(s) for s in samples]
    texts += [n[i % len(n)][1] for i, n in enumerate(negatives)]  # a different kind for each scene
    rng = np.random.default_rng(SHAPES_CALIBRATION_SEED)
    texts += [data.mask_attribute_words(s.caption, rng)[0] for s in samples[:2]]
    names = [f"shapes-heldout-{SHAPES_CALIBRATION_SEED}-{s.index}" for s in samples]
    return [s.image for s in samples], names, tuple(texts)


def hf_processor(image_processor_kwargs: dict, tokenizer_dir: Path):
    """transformers' BridgeTowerProcessor (Pillow image backend) over the export's own tokenizer files."""
    from transformers import AutoTokenizer, BridgeTowerProcessor
    from transformers.models.bridgetower.image_processing_pil_bridgetower import BridgeTowerImageProcessorPil

    # do_convert_rgb: without it transformers feeds RGBA/LA/P images through unconverted and fails on 4 channels;
    # with it, transparency is composited on white (transformers' convert_to_rgb), the rule bt_runtime follows.
    image_processor = BridgeTowerImageProcessorPil(**{"do_convert_rgb": True, **image_processor_kwargs})
    return BridgeTowerProcessor(image_processor,
AutoTokenizer.from_pretrained(tokenizer_dir))
