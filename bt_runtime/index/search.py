"""Two-stage retrieval over an index directory: FAISS shortlist of the query's text embedding → ITM rerank of the
shortlisted images, each read from its source and sent through the vision tower again. Image bridges are not kept
in the index: at large size one is 2.7 M values (5.4 MB in fp16), 1,000× the image's embedding, so at 10^5+ images
storage, not the ~0.9 s of vision tower per shortlisted image, is the binding cost (docs/scale.md, "Retrieval and
the rerank")."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BtRuntimeError
from ..features import ImageFeatures, check_positive
from ..text import check_texts
from . import faiss_index, shards
from .embed import preprocess
from .inputs import read_bytes

_OPEN: dict[tuple, faiss_index.SearchIndex] = {}  # one memory map per (index dir, export, precision) and process


def open_for(runtime, directory) -> faiss_index.SearchIndex:
    """The index in `directory`, checked against `runtime` (cached: a server opens it once)."""
    precision = runtime.backend.precision
    key = (str(Path(directory).absolute()), precision, id(runtime.manifest))
    if key not in _OPEN:
        _OPEN[key] = faiss_index.open_index(directory, shards.towers_sha256(runtime, precision), precision,
                                            runtime.manifest.config.contrastive_hidden_size)
    return _OPEN[key]


def retrieve_from_index(runtime, query: str, directory, top_k: int, rerank: int, batch_size: int,
                        index: faiss_index.SearchIndex | None = None):
    from ..retrieval import RetrievalHit, _best

    # The same checks as retrieve() (bt-serve and benchmarks call this directly): numpy integers are counts, a bool
    # is not (rerank=True is a mistake, not a request for one image)
    top_k, batch_size = check_positive(top_k, "top_k"), check_positive(batch_size, "batch_size")
    rerank = check_positive(rerank, "rerank", minimum=0)
    runtime._require("itc", "retrieve with an index")
    if rerank:
        runtime._require("itm", "retrieve")
    check_texts([query], "query")
    index = index or open_for(runtime, directory)
    text = runtime.encode_texts([query], name="query")
    scores, found = index.search(text.embeds, max(rerank, top_k))
    keep = found[0] >= 0
    rows, similarities = found[0][keep], scores[0][keep]  # (K,) FAISS rows, best first
    ids = index.ids(rows)
    if not rerank:
        return _best([RetrievalHit(float(s), int(r), float(s), None, i)
                      for s, r, i in zip(similarities, rows, ids, strict=True)], top_k)
    pixels, errors = preprocess(runtime.preprocess, ids, read_bytes(index.sources(rows)))
    bad = [e for e in errors if e]
    if bad:
        raise BtRuntimeError(f"--index {directory}: {len(bad)} shortlisted image(s) cannot be read any more (first: "
                             f"{bad[0]}); rebuild the index after changing the gallery")
    bridges = np.concatenate([runtime.encode_pixels(pixels[s:s + batch_size]).bridge
                              for s in range(0, len(rows), batch_size)])
    itm = runtime.match_probabilities(text, ImageFeatures(bridges), np.zeros(len(rows), np.int64),
                                      np.arange(len(rows)), batch_size, False)
    return _best([RetrievalHit(float(p), int(r), float(s), float(p), i)
                  for p, r, s, i in zip(itm, rows, similarities, ids, strict=True)], top_k)
