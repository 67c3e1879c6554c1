"""BridgeTowerRuntime: image-text matching, fill-mask, contrastive embeddings and retrieval on an export.

Each image goes through the vision tower once and each text through the text tower once; only the cross-modal
graph runs per (image, text) pair, in batches, with the image rows it needs gathered inside the graph — its
head-specific form (cross_modal_pooled) where the export has one and the task does not need mlm_logits.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import BtRuntimeError, ImageInputError, TaskUnavailableError, TextInputError
from .images import DEFAULT_MAX_PIXELS, ImagePreprocessor
from .manifest import Manifest, read_manifest
from .text import TextTokenizer, check_texts, shorten

BACKENDS = ("onnxruntime", "tensorrt")
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


@dataclass
class MaskPrediction:
    position: int  # token position of the <mask> in input_ids
    token_ids: list[int]
    tokens: list[str]  # decoded, surrounding whitespace stripped
    probabilities: list[float]


@dataclass
class FillMaskResult:
    masks: list[MaskPrediction]
    sentence: str  # the text with every <mask> replaced by its most likely token


@dataclass(order=True)
class RetrievalHit:
    score: float  # ITM match probability when reranked (or ITM-only), else ITC cosine similarity
    index: int = field(compare=False)  # position in the `images` list
    itc_score: float | None = field(default=None, compare=False)
    itm_score: float | None = field(default=None, compare=False)


def _best(hits: list[RetrievalHit], top_k: int) -> list[RetrievalHit]:
    """Best first; equal scores: the higher image index first (as the shortlist's heap keeps them)."""
    return sorted(hits, key=lambda hit: (hit.score, hit.index), reverse=True)[:top_k]


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def _batches(count: int, batch_size: int, progress: bool, description: str):
    starts = range(0, count, batch_size)
    if progress:
        from rich.console import Console
        from rich.progress import track

        # progress goes to stderr: stdout carries results (bt-run prints JSON there)
        starts = track(starts, description=description, total=len(starts), transient=True,
                       console=Console(stderr=True))
    for start in starts:
        yield start, min(start + batch_size, count)


def _check_list(value, name: str) -> None:
    if not isinstance(value, (list, tuple)):
        raise ImageInputError(f"{name}: expected a list of images, got {type(value).__name__}")
    if not value:
        raise ImageInputError(f"{name}: empty list; give at least one image")


def _check_positive(value, name: str) -> None:
    if not isinstance(value, int) or value < 1:
        raise BtRuntimeError(f"{name} must be a positive integer, got {value!r}")


class BridgeTowerRuntime:
    def __init__(self, manifest: Manifest, backend, preprocessor: ImagePreprocessor, tokenizer: TextTokenizer):
        self.manifest, self.backend, self.preprocess, self.tokenizer = manifest, backend, preprocessor, tokenizer

    @classmethod
    def load(cls, export_dir: str | Path | Manifest, precision: str = "fp32", backend: str = "onnxruntime",
             providers: list[str] | None = None, intra_op_threads: int | None = None,
             graph_optimization_level: str = "all", verify_checksums: bool = True,
             exif_transpose: bool | None = None, tensorrt_profiles: dict | None = None,
             max_pixels: int = DEFAULT_MAX_PIXELS, device: str = "cpu",
             allow_spinning: bool = False, prepack_weights: bool = True) -> "BridgeTowerRuntime":
        """Open an export directory. Sessions/engines are created lazily, on the first call that needs each graph.

        backend "onnxruntime" (providers may include "TensorrtExecutionProvider": profile shapes and an engine cache
        come from the manifest, `tensorrt_profiles` {"batch": (min, opt, max), "seq": …} overrides the ranges;
        device="cuda[:N]" runs on ONNX Runtime's CUDA provider, falling back to CPU with a warning without it)
        or "tensorrt" (engines built by `bt-export --trt`; precision names the engines' precision).
        Every file read is checked against the manifest's sha256 (verify_checksums=False opts out); images above
        max_pixels are refused. ONNX Runtime's intra-op threads do not busy-wait between runs unless
        allow_spinning=True (spinning threads of one graph's session slow the next graph's on few cores);
        prepack_weights=False keeps one copy of each weight instead of ONNX Runtime's extra prepacked one (less
        memory, slightly slower).
        Use as a context manager, or call close(), to release the sessions."""
        manifest = export_dir if isinstance(export_dir, Manifest) else read_manifest(export_dir)
        if backend == "onnxruntime":
            from .backends.onnxruntime import OnnxRuntimeBackend

            engine = OnnxRuntimeBackend(manifest, precision, providers, intra_op_threads, graph_optimization_level,
                                        verify_checksums, tensorrt_profiles, device, allow_spinning,
                                        prepack_weights)
        elif backend == "tensorrt":
            from .backends.tensorrt import TensorRTBackend

            engine = TensorRTBackend(manifest, precision, verify_checksums)
        else:
            raise BtRuntimeError(f"backend {backend!r} is not available; valid: {list(BACKENDS)}")
        return cls(manifest, engine,
                   ImagePreprocessor.from_manifest(manifest.preprocessing, exif_transpose, max_pixels),
                   TextTokenizer.from_manifest(manifest, verify_checksums))

    def close(self) -> None:
        """Release the backend's sessions or engines; the runtime must not be used afterwards."""
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "BridgeTowerRuntime":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def heads(self) -> tuple[str, ...]:
        return self.manifest.heads

    def _require(self, head: str, task: str) -> None:
        if head not in self.heads:
            names = {"itm": "image-text matching (itm)", "mlm": "masked-LM (mlm)", "itc": "contrastive (itc)"}
            raise TaskUnavailableError(f"{task}: this export has no {names[head]} head (heads: "
                                       f"{', '.join(self.heads) or 'none'}); export a checkpoint that has one")

    # ---- towers: once per input ----

    def encode_images(self, images: list, batch_size: int = 16, progress: bool = False,
                      name: str = "images", positions=None) -> ImageFeatures:
        """Features of `images` (of images[i] for i in `positions`, in that order, when given); an error names the
        image by its place in `images`."""
        _check_list(images, name)
        _check_positive(batch_size, "batch_size")
        positions = range(len(images)) if positions is None else positions
        chunks = []
        for start, stop in _batches(len(positions), batch_size, progress, "vision tower"):
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
        _check_positive(batch_size, "batch_size")
        encoded = self.tokenizer(texts, name)
        total, longest = encoded.input_ids.shape
        bridge, embeds = None, []
        for start, stop in _batches(total, batch_size, False, "text tower"):
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

    # ---- cross-modal: once per pair ----

    def pair_batch_size(self, batch_size: int | None = None) -> int:
        """`batch_size`, or the default number of pairs per cross-modal run for this backend's device."""
        if batch_size is not None:
            return batch_size
        return PAIR_BATCH["cuda" if getattr(self.backend, "device", "cpu") == "cuda" else "cpu"]

    def cross_graph(self, outputs: list[str]) -> str:
        """The graph that gives `outputs` for the least work: a head-specific substitute of cross_modal (manifest
        `wiring.substitutes`, e.g. cross_modal_pooled without mlm_logits) where the backend has it."""
        wiring = self.manifest.wiring
        graph = wiring.substitute_for("cross_modal", outputs) if wiring is not None else "cross_modal"
        return graph if graph in getattr(self.backend, "graphs", ("cross_modal",)) else "cross_modal"

    def cross_modal(self, texts: TextFeatures, images: ImageFeatures, text_index: np.ndarray,
                    image_index: np.ndarray, outputs: list[str], batch_size: int | None = None,
                    progress: bool = False) -> dict[str, list[np.ndarray]]:
        """Run pairs (texts[text_index[k]], images[image_index[k]]) in batches of `batch_size` pairs (default:
        PAIR_BATCH for the backend's device); per-batch outputs, in order."""
        batch_size = self.pair_batch_size(batch_size)
        _check_positive(batch_size, "batch_size")
        results: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
        graph = self.cross_graph(outputs)
        for start, stop in _batches(len(text_index), batch_size, progress, "cross-modal"):
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

    # ---- tasks ----

    def itm_scores(self, image, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        """Match probability of one image with each text → (len(texts),). The vision tower runs once."""
        self._require("itm", "itm_scores")
        if getattr(self.backend, "device", "cpu") == "cuda":
            check_texts(texts)
            batch_size = self.pair_batch_size(batch_size)
            _check_positive(batch_size, "batch_size")
            return self._itm_scores_on_device(image, texts, batch_size)
        text_features = self.encode_texts(texts)
        image_features = self.encode_image(image)
        count = len(texts)
        return self.match_probabilities(text_features, image_features, np.arange(count), np.zeros(count, np.int64), batch_size, False)

    def _itm_scores_on_device(self, image, texts: list[str], batch_size: int) -> np.ndarray:
        """CUDA: the image bridge stays on the GPU and feeds every batch of texts (IOBinding, no host round trip
        for bridges); only the (B, 2) logits come back."""
        run = self.backend.run_bound
        pixels = self.preprocess.pixel_values(image, "image")[None]
        image_bridge = run("vision_tower", {"pixel_values": pixels}, ["image_bridge"], keep=("image_bridge",))
        scores = []
        for start, stop in _batches(len(texts), batch_size, False, "cross-modal"):
            encoded = self.tokenizer(texts[start:stop])
            text_bridge = run("text_tower", {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask},
                              ["text_bridge"], keep=("text_bridge",))
            logits = run(self.cross_graph(["itm_logits"]), {"text_bridge": text_bridge["text_bridge"],
                                         "image_bridge": image_bridge["image_bridge"],
                                         "attention_mask": encoded.attention_mask,
                                         "image_index": np.zeros(stop - start, np.int64)}, ["itm_logits"])
            scores.append(softmax(logits["itm_logits"])[:, 1])
        return np.concatenate(scores)

    def itm_pairs(self, images: list, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        """Match probability of images[k] with texts[k] → (n,)."""
        self._require("itm", "itm_pairs")
        _check_list(images, "images")
        check_texts(texts)
        if len(images) != len(texts):
            raise BtRuntimeError(f"itm_pairs: images has {len(images)} items but texts has {len(texts)}; "
                                 "they must pair one to one (use itm_matrix for every combination)")
        index = np.arange(len(texts))
        return self.match_probabilities(self.encode_texts(texts), self.encode_images(images), index, index, batch_size, False)

    def itm_matrix(self, images: list, texts: list[str], batch_size: int | None = None,
                   progress: bool = False) -> np.ndarray:
        """Match probability of every image with every text → (n_images, n_texts); each tower once per input."""
        self._require("itm", "itm_matrix")
        image_features = self.encode_images(images, progress=progress)
        text_features = self.encode_texts(texts)
        image_index, text_index = np.divmod(np.arange(len(images) * len(texts)), len(texts))
        scores = self.match_probabilities(text_features, image_features, text_index, image_index, batch_size, progress)
        return scores.reshape(len(images), len(texts))

    def fill_mask(self, image, text: str, top_k: int = 5) -> FillMaskResult:
        """Most likely tokens for each <mask> in `text`, given `image`, and the sentence with them filled in."""
        self._require("mlm", "fill_mask")
        check_texts([text], "text")
        if self.tokenizer.mask_token not in text:
            raise TextInputError(f"text: {shorten(text)} has no {self.tokenizer.mask_token} token to fill")
        _check_positive(top_k, "top_k")
        text_features = self.encode_texts([text], name="text")
        positions = np.flatnonzero(text_features.input_ids[0] == self.tokenizer.mask_token_id)
        if positions.size == 0:
            raise TextInputError(f"text: the {self.tokenizer.mask_token} in {shorten(text)} was cut off by truncation "
                                 f"at {self.tokenizer.max_length} tokens")
        logits = self.cross_modal(text_features, self.encode_image(image), np.zeros(1, np.int64),
                                  np.zeros(1, np.int64), ["mlm_logits"])["mlm_logits"][0][0]  # (S, V)
        probabilities = softmax(logits[positions])  # (M, V)
        top_k = min(top_k, probabilities.shape[-1])
        masks, filled = [], text_features.input_ids[0, :int(text_features.lengths[0])].copy()
        for row, position in enumerate(positions):
            best = np.argsort(-probabilities[row])[:top_k]
            masks.append(MaskPrediction(int(position), [int(t) for t in best],
                                        [self.tokenizer.decode([t]).strip() for t in best],
                                        [float(probabilities[row, t]) for t in best]))
            filled[position] = best[0]
        return FillMaskResult(masks, self.tokenizer.decode(filled).strip())

    def embed_images(self, images: list, batch_size: int = 16, progress: bool = False) -> np.ndarray:
        """L2-normalized contrastive image embeddings → (n, E)."""
        self._require("itc", "embed_images")
        return self.encode_images(images, batch_size, progress).embeds

    def embed_texts(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """L2-normalized contrastive text embeddings → (n, E)."""
        self._require("itc", "embed_texts")
        return self.encode_texts(texts, batch_size).embeds

    def retrieve(self, query: str, images: list, top_k: int = 10, rerank: int = 50, batch_size: int = 16,
                 progress: bool = False, index: np.ndarray | None = None) -> list[RetrievalHit]:
        """Best images for a text query, best first.

        With ITC heads: cosine similarity shortlists max(rerank, top_k) images, ITM reranks them (rerank=0: ITC
        ranking only).
        Without: ITM over every image. Every image goes through the vision tower exactly once; only the
        shortlisted images' bridges are kept while the gallery streams through.
        index: `embed_images(images)`, computed once and kept (an ITC index of the gallery). The shortlist then
        comes from it and only the shortlisted images go through the vision tower (ITM needs their bridges), so a
        query costs one text, one matrix-vector product and `rerank` pairs whatever the gallery's size.
        Equal scores rank the higher image index first, with or without an index.
        """
        if "itc" not in self.heads or rerank:
            self._require("itm", "retrieve")
        if index is not None:
            self._require("itc", "retrieve with an index")
        check_texts([query], "query")
        _check_list(images, "images")
        _check_positive(top_k, "top_k")
        if not isinstance(rerank, int) or rerank < 0:
            raise BtRuntimeError(f"rerank must be an integer ≥ 0, got {rerank!r}")
        text_features = self.encode_texts([query], name="query")
        if index is not None:
            index = self._check_index(index, len(images), text_features.embeds.shape[1])
            return self._retrieve_indexed(text_features, images, index, top_k, rerank, batch_size)
        use_itc = "itc" in self.heads
        keep = max(rerank, top_k) if use_itc else len(images)
        shortlist: list[tuple[float, int, np.ndarray]] = []  # min-heap of (itc score, image index, bridge)
        for start, stop in _batches(len(images), batch_size, progress, "gallery"):
            chunk = self.encode_images(list(images[start:stop]), batch_size, name="images")
            if not use_itc:  # ITM over every image, chunk by chunk
                scores = self.match_probabilities(text_features, chunk, np.zeros(stop - start, np.int64), np.arange(stop - start),
                                   batch_size, False)
                shortlist += [(float(s), start + i, None) for i, s in enumerate(scores)]
                continue
            similarities = chunk.embeds @ text_features.embeds[0]  # (b,) cosine: both L2-normalized
            for offset, similarity in enumerate(similarities):
                # a copy, not a view: a view would keep the whole chunk's bridges alive
                item = (float(similarity), start + offset, chunk.bridge[offset].copy() if rerank else None)
                (heapq.heappush if len(shortlist) < keep else heapq.heappushpop)(shortlist, item)
        if not use_itc:
            hits = [RetrievalHit(score, index, None, score) for score, index, _ in shortlist]
        elif not rerank:
            hits = [RetrievalHit(score, index, score, None) for score, index, _ in shortlist]
        else:
            candidates = ImageFeatures(np.stack([bridge for _, _, bridge in shortlist]))
            itm = self.match_probabilities(text_features, candidates, np.zeros(len(shortlist), np.int64), np.arange(len(shortlist)),
                            batch_size, False)
            hits = [RetrievalHit(float(p), index, similarity, float(p))
                    for p, (similarity, index, _) in zip(itm, shortlist)]
        return _best(hits, top_k)

    def _check_index(self, index, count: int, dims: int) -> np.ndarray:
        if not isinstance(index, np.ndarray) or index.shape != (count, dims) or index.dtype.kind != "f":
            got = (f"{index.dtype} array of shape {index.shape}" if isinstance(index, np.ndarray)
                   else type(index).__name__)
            raise BtRuntimeError(f"index must be the images' embed_images(): a float array of shape ({count}, "
                                 f"{dims}) (one row per image), got {got}")
        if not np.isfinite(index).all():
            raise BtRuntimeError("index has non-finite values; rebuild it with embed_images(images)")
        return index.astype(np.float32, copy=False)

    def _retrieve_indexed(self, text_features: TextFeatures, images: list, index: np.ndarray, top_k: int,
                          rerank: int, batch_size: int) -> list[RetrievalHit]:
        similarities = index @ text_features.embeds[0]
        keep = min(max(rerank, top_k), len(images))
        order = np.lexsort((np.arange(len(images)), similarities))[::-1][:keep]  # by (similarity, index), best first
        if not rerank:
            return _best([RetrievalHit(float(similarities[i]), int(i), float(similarities[i]), None)
                          for i in order], top_k)
        candidates = self.encode_images(images, batch_size, positions=order)
        itm = self.match_probabilities(text_features, candidates, np.zeros(keep, np.int64), np.arange(keep),
                                       batch_size, False)
        hits = [RetrievalHit(float(p), int(i), float(similarities[i]), float(p)) for p, i in zip(itm, order)]
        return _best(hits, top_k)
