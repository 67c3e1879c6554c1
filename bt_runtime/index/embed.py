"""The per-batch steps both index paths run, so that their shards agree row for row: decode + preprocess
(CPU-only: the manifest's ImagePreprocessor, no model) and embed (one vision-tower run per batch)."""

from __future__ import annotations

import numpy as np

from ..errors import USER_FACING, first_line


def preprocess(preprocessor, ids: list[str], blobs: list) -> tuple[np.ndarray, list[str]]:
    """Encoded images (or a read error string each) → pixels (B, 3, S, S) float32 and one error per row ("" when
    good). A row that cannot be decoded gets zero pixels and an error naming its image id, never a failed batch."""
    size = preprocessor.image_size
    pixels = np.zeros((len(ids), 3, size, size), np.float32)  # (B, 3, S, S)
    errors = []
    for k, (image_id, blob) in enumerate(zip(ids, blobs, strict=True)):
        if isinstance(blob, str):
            errors.append(blob)
            continue
        try:
            pixels[k] = preprocessor.pixel_values(blob, image_id)
            errors.append("")
        except USER_FACING as err:
            errors.append(first_line(err, 300))
        except Exception as err:  # noqa: BLE001 — whatever Pillow raises for one image is that row's error only
            errors.append(f"{image_id}: cannot be decoded ({type(err).__name__}: {first_line(err)})")
    return pixels, errors


def embed(runtime, pixels: np.ndarray, errors: list[str], batch_size: int) -> np.ndarray:
    """ITC embeddings (B, E) float32 of the good rows, in runs of `batch_size` images; error rows stay zero."""
    size = runtime.manifest.config.contrastive_hidden_size
    out = np.zeros((len(errors), size), np.float32)  # (B, E)
    good = np.flatnonzero([not e for e in errors])
    for start in range(0, len(good), batch_size):
        rows = good[start:start + batch_size]
        out[rows] = runtime.encode_pixels(np.ascontiguousarray(pixels[rows])).embeds
    return out
