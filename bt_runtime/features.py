"""Features: each image through the vision tower once, each text through the text tower once, and the cross-modal
graph per (image, text) pair, in batches, with the image rows it needs gathered inside the graph — its
head-specific form (cross_modal_pooled) where the export has one and the caller does not need mlm_logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backends.base import Backend
from .errors import BtRuntimeError, ImageInputError
from .images import ImagePreprocessor
from .manifest import Manifest
from .text import TextTokenizer, check_texts

# Pairs per cross-modal run. CPU: smaller batches keep each pair's activations in cache — measured on 2 cores, full-
# size base, 1 image × 64 texts: batch 4 8.07 s, 8 8.22 s, 16 8.63 s, 32 9.06 s, 64 10.95 s. GPU: larger batches
# fill the device (not re-measured here).
PAIR_BATCH = {"cpu": 8, "cuda": 32}



@dataclass
class ImageFeatures:
    bridge: np.ndarray  # (I, C, N, D): what the cross-modal stack reads from each image
    embeds: np.ndarray | None = None  # (I, E) L2-normalized, contrastive checkpoints only


@dataclass
class TextFeatures:
    bridge: np.ndarray  # (T, C, S, D), zero beyond each text's length
    attention_mask: np.ndarray  # (T, S)
    input_ids: np.ndarray  # (T, S)
    embeds: np.ndarray | None = None  # (T, E)

    @property
    def lengths(self) -> np.ndarray:
        return self.attention_mask.sum(axis=1)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def batches(count: int, batch_size: int, progress: bool, description: str):
    starts = range(0, count, batch_size)
    if progress:
        from rich.console import Console
        from rich.progress import track

        # progress goes to stderr: stdout carries results (bt-run prints JSON there)
        starts = track(starts, description=description, total=len(starts), transient=True,
                       console=Console(stderr=True))
    for start in starts:
        yield start, min(start + batch_size, count)


def check_image_list(value, name: str) -> None:
    if not isinstance(value, (list, tuple)):
        raise ImageInputError(f"{name}: expected a list of images, got {type(value).__name__}")
    if not value:
        raise ImageInputError(f"{name}: empty list; give at least one image")


def check_positive(value, name: str, minimum: int = 1) -> int:
    """`value` is an integer ≥ `minimum`: Python's or numpy's (counts often come from arrays); a bool is refused,
    not taken as 0 or 1 (True is an int: `top_k=True` is a mistake, not a request for one hit)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        wanted = "a positive integer" if minimum == 1 else f"an integer ≥ {minimum}"
        raise BtRuntimeError(f"{name} must be {wanted}, got {value!r}")
    return int(value)


class Features:
    """The towers and the cross-modal graph of one export on one backend (BridgeTowerRuntime adds the tasks)."""

    def __init__(self, manifest: Manifest, backend: Backend, preprocessor: ImagePreprocessor,
                 tokenizer: TextTokenizer):
        self.manifest, self.backend, self.preprocess, self.tokenizer = manifest, backend, preprocessor, tokenizer

    def encode_images(self, images: list, batch_size: int = 16, progress: bool = False,
                      name: str = "images", positions=None) -> ImageFeatures:
        """Features of `images` (of images[i] for i in `positions`, in that order, when given); an error names the
        image by its place in `images`."""
        check_image_list(images, name)
        check_positive(batch_size, "batch_size")
        positions = range(len(images)) if positions is None else positions
        chunks = []
        for start, stop in batches(len(positions), batch_size, progress, "vision tower"):
            chunks.append(self.encode_pixels(np.stack([self.preprocess.pixel_values(images[i], f"{name}[{i}]")
                                                       for i in positions[start:stop]])))
        return ImageFeatures(np.concatenate([c.bridge for c in chunks]),
                             np.concatenate([c.embeds for c in chunks]) if chunks[0].embeds is not None else None)

    def encode_pixels(self, pixel_values: np.ndarray) -> ImageFeatures:
        """Already preprocessed images (B, 3, S, S) float32 (`preprocess.pixel_values` of each) → features, one
        vision-tower run. For callers that check every image before batching them (a server)."""
        out = self.backend.run("vision_tower", {"pixel_values": pixel_values})
        return ImageFeatures(out["image_bridge"], out.get("image_embeds"))

    def encode_image(self, image) -> ImageFeatures:
        """One image (errors name the argument `image`) → features of batch 1."""
        out = self.backend.run("vision_tower", {"pixel_values": self.preprocess.pixel_values(image, "image")[None]})
        return ImageFeatures(out["image_bridge"], out.get("image_embeds"))

    def encode_texts(self, texts: list[str], batch_size: int = 64, name: str = "texts") -> TextFeatures:
        check_texts(texts, name)
        check_positive(batch_size, "batch_size")
        encoded = self.tokenizer(texts, name)
        total, longest = encoded.input_ids.shape
        bridge, embeds = None, []
        for start, stop in batches(total, batch_size, False, "text tower"):
            length = int(encoded.lengths[start:stop].max())
            out = self.backend.run("text_tower", {"input_ids": encoded.input_ids[start:stop, :length],
                                                  "attention_mask": encoded.attention_mask[start:stop, :length]})
            if bridge is None:
                _, layers, _, hidden = out["text_bridge"].shape
                bridge = np.zeros((total, layers, longest, hidden), dtype=out["text_bridge"].dtype)
            bridge[start:stop, :, :length] = out["text_bridge"]  # (b, C, s, D) into (T, C, S, D)
            if "text_embeds" in out:
                embeds.append(out["text_embeds"])
        return TextFeatures(bridge, encoded.attention_mask, encoded.input_ids,
                            np.concatenate(embeds) if embeds else None)

    def pair_batch_size(self, batch_size: int | None = None) -> int:
        """`batch_size`, or the default number of pairs per cross-modal run for this backend's device."""
        if batch_size is not None:
            return batch_size
        return PAIR_BATCH["cuda" if self.backend.device == "cuda" else "cpu"]

    def cross_graph(self, outputs: list[str]) -> str:
        """The graph that gives `outputs` for the least work: a head-specific substitute of cross_modal (manifest
        `wiring.substitutes`, e.g. cross_modal_pooled without mlm_logits) where the backend has it."""
        wiring = self.manifest.wiring
        graph = wiring.substitute_for("cross_modal", outputs) if wiring is not None else "cross_modal"
        return graph if graph in self.backend.graphs else "cross_modal"

    def cross_modal(self, texts: TextFeatures, images: ImageFeatures, text_index: np.ndarray,
                    image_index: np.ndarray, outputs: list[str], batch_size: int | None = None,
                    progress: bool = False) -> dict[str, list[np.ndarray]]:
        """Run pairs (texts[text_index[k]], images[image_index[k]]) in batches of `batch_size` pairs (default:
        PAIR_BATCH for the backend's device); per-batch outputs, in order."""
        batch_size = self.pair_batch_size(batch_size)
        check_positive(batch_size, "batch_size")
        results: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
        graph = self.cross_graph(outputs)
        for start, stop in batches(len(text_index), batch_size, progress, "cross-modal"):
            rows, image_rows = text_index[start:stop], image_index[start:stop]
            length = int(texts.lengths[rows].max())  # trim padding shared by the whole batch
            needed, gather = np.unique(image_rows, return_inverse=True)  # only the images this batch uses
            feeds = {"text_bridge": np.ascontiguousarray(texts.bridge[rows, :, :length]),
                     "image_bridge": np.ascontiguousarray(images.bridge[needed]),
                     "attention_mask": np.ascontiguousarray(texts.attention_mask[rows, :length]),
                     "image_index": gather.astype(np.int64).reshape(-1)}
            out = self.backend.run(graph, feeds, outputs)
            for name in outputs:
                results[name].append(out[name])
        return results

    def match_probabilities(self, texts: TextFeatures, images: ImageFeatures, text_index, image_index,
                            batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        """ITM match probability of each pair (texts[text_index[k]], images[image_index[k]]) → (len(text_index),)."""
        logits = self.cross_modal(texts, images, np.asarray(text_index), np.asarray(image_index), ["itm_logits"],
                                  batch_size, progress)["itm_logits"]
        return softmax(np.concatenate(logits))[:, 1]

    def match_one_image_bound(self, image, texts: list[str], batch_size: int) -> np.ndarray:
        """Match probability of one image with each text through the backend's bound path (run_bound): on CUDA
        the image bridge stays on the GPU and feeds every batch of texts (IOBinding, no host round trip
        for bridges); only the (B, 2) logits come back."""
        run = self.backend.run_bound
        pixels = self.preprocess.pixel_values(image, "image")[None]
        image_bridge = run("vision_tower", {"pixel_values": pixels}, ["image_bridge"], keep=("image_bridge",))
        scores = []
        for start, stop in batches(len(texts), batch_size, False, "cross-modal"):
            encoded = self.tokenizer(texts[start:stop])
            text_bridge = run("text_tower", {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask},
                              ["text_bridge"], keep=("text_bridge",))
            logits = run(self.cross_graph(["itm_logits"]), {"text_bridge": text_bridge["text_bridge"],
                                         "image_bridge": image_bridge["image_bridge"],
                                         "attention_mask": encoded.attention_mask,
                                         "image_index": np.zeros(stop - start, np.int64)}, ["itm_logits"])
            scores.append(softmax(logits["itm_logits"])[:, 1])
        return np.concatenate(scores)
