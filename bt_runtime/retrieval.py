"""Retrieval: the best images of a gallery for a text query (ITC shortlist, ITM rerank), streamed or from an index."""

from __future__ import annotations

import heapq
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import BtRuntimeError
from .features import ImageFeatures, TextFeatures, batches, check_image_list, check_positive
from .text import check_texts


@dataclass(order=True)
class RetrievalHit:
    score: float  # ITM match probability when reranked (or ITM-only), else ITC cosine similarity
    index: int = field(compare=False)  # position in the `images` list
    itc_score: float | None = field(default=None, compare=False)
    itm_score: float | None = field(default=None, compare=False)
    image_id: str | None = field(default=None, compare=False)  # with an index path: the image's id (its path)


# How far a stored row's L2 norm may be from 1: float16 storage rounds each component by at most 2**-11 relative
# (so the norm by at most that), an fp16 export normalizes in fp16; 1e-2 holds both with room, and a vector that was
# never normalized is almost never that close to 1.
UNIT_NORM_TOLERANCE = 1e-2


def embedding_rows_problem(embeddings: np.ndarray) -> str | None:
    """Why `embeddings` (N, E) floats are not L2-normalized rows (their dot products would not be cosines, scores
    above 1 would be printed as similarities), or None."""
    if not np.isfinite(embeddings).all():
        return "has non-finite values"
    norms = np.linalg.norm(embeddings.astype(np.float32, copy=False), axis=1)
    off = np.flatnonzero(np.abs(norms - 1) > UNIT_NORM_TOLERANCE)
    if off.size:
        return (f"row {int(off[0])} has L2 norm {float(norms[off[0]]):.4g} ({off.size} of {len(norms)} rows are not "
                f"unit vectors within {UNIT_NORM_TOLERANCE:g})")
    return None


def _best(hits: list[RetrievalHit], top_k: int) -> list[RetrievalHit]:
    """Best first; equal scores: the higher image index first (as the shortlist's heap keeps them)."""
    return sorted(hits, key=lambda hit: (hit.score, hit.index), reverse=True)[:top_k]


class Retrieval:
    """retrieve() of BridgeTowerRuntime (it uses the features' and tasks' methods)."""

    def retrieve(self, query: str, images: list | None = None, top_k: int = 10, rerank: int = 50,
                 batch_size: int = 16, progress: bool = False, index=None) -> list[RetrievalHit]:
        """Best images for a text query, best first.

        With ITC heads: cosine similarity shortlists max(rerank, top_k) images, ITM reranks them (rerank=0: ITC
        ranking only).
        Without: ITM over every image. Every image goes through the vision tower exactly once; only the
        shortlisted images' bridges are kept while the gallery streams through.
        index: `embed_images(images)`, computed once and kept (an ITC index of the gallery). The shortlist then
        comes from it and only the shortlisted images go through the vision tower (ITM needs their bridges), so a
        query costs one text, one matrix-vector product and `rerank` pairs whatever the gallery's size.
        Equal scores rank the higher image index first, with or without an index.
        index may instead be a path written by `bt-run index` (no `images`: the index names them), and hits then
        carry `image_id`, the image's path: a directory (its FAISS index shortlists, the shortlisted images are
        read from their sources for the ITM rerank, `index` is the FAISS row; docs/scale.md), or a .npz file
        (its embeddings as above, `index` the position in the file's image list).
        """
        top_k, batch_size = check_positive(top_k, "top_k"), check_positive(batch_size, "batch_size")
        rerank = check_positive(rerank, "rerank", minimum=0)
        if isinstance(index, (str, Path)):
            if images is not None:
                raise BtRuntimeError("retrieve: give images or an index path, not both (the index names its images)")
            if not os.path.isdir(index):  # never raises (Path.is_dir does on a name too long)
                from .gallery_index import read

                embeddings, paths = read(Path(index), self, option="index")
                hits = self.retrieve(query, paths, top_k, rerank, batch_size, progress, index=embeddings)
                for hit in hits:
                    hit.image_id = str(paths[hit.index])
                return hits
            from .index.search import retrieve_from_index

            return retrieve_from_index(self, query, index, top_k, rerank, batch_size)
        if "itc" not in self.heads or rerank:
            self._require("itm", "retrieve")
        if index is not None:
            self._require("itc", "retrieve with an index")
        check_texts([query], "query")
        check_image_list(images, "images")
        text_features = self.encode_texts([query], name="query")
        if index is not None:
            index = self._check_index(index, len(images), text_features.embeds.shape[1])
            return self._retrieve_indexed(text_features, images, index, top_k, rerank, batch_size)
        use_itc = "itc" in self.heads
        keep = max(rerank, top_k) if use_itc else len(images)
        shortlist: list[tuple[float, int, np.ndarray]] = []  # min-heap of (itc score, image index, bridge)
        for start, stop in batches(len(images), batch_size, progress, "gallery"):
            chunk = self.encode_images(list(images[start:stop]), batch_size, name="images")
            if not use_itc:  # ITM over every image, chunk by chunk
                scores = self.match_probabilities(text_features, chunk, np.zeros(stop - start, np.int64),
                                                  np.arange(stop - start), batch_size, False)
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
            itm = self.match_probabilities(text_features, candidates, np.zeros(len(shortlist), np.int64),
                                           np.arange(len(shortlist)), batch_size, False)
            hits = [RetrievalHit(float(p), index, similarity, float(p))
                    for p, (similarity, index, _) in zip(itm, shortlist, strict=True)]
        return _best(hits, top_k)

    def _check_index(self, index, count: int, dims: int) -> np.ndarray:
        if not isinstance(index, np.ndarray) or index.shape != (count, dims) or index.dtype.kind != "f":
            got = (f"{index.dtype} array of shape {index.shape}" if isinstance(index, np.ndarray)
                   else type(index).__name__)
            raise BtRuntimeError(f"index must be the images' embed_images(): a float array of shape ({count}, "
                                 f"{dims}) (one row per image), got {got}")
        problem = embedding_rows_problem(index)
        if problem:
            raise BtRuntimeError(f"index {problem}; rebuild it with embed_images(images)")
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
        hits = [RetrievalHit(float(p), int(i), float(similarities[i]), float(p))
                for p, i in zip(itm, order, strict=True)]
        return _best(hits, top_k)
