"""The FAISS index choice: exact below ~10^5 vectors, IVF + HNSW quantizer above, recall@10 ≥ 0.95 vs exact on
2·10^5 random vectors at the nprobe tuned at build."""

from __future__ import annotations

import numpy as np
import pytest

from bt_runtime.errors import BtRuntimeError
from bt_runtime.index import faiss_index

pytest.importorskip("faiss")


def _unit(rng, count, dim):
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_factory_follows_size_and_memory():
    assert faiss_index.choose_factory(50_000, 512, 2**30) == "Flat"
    assert faiss_index.choose_factory(10**6, 512, 16 * 2**30) == "IVF2048_HNSW32,Flat"
    assert faiss_index.choose_factory(10**6, 512, 10**9) == "IVF2048_HNSW32,SQ8"
    assert faiss_index.choose_factory(10**6, 512, 10**8) == "IVF2048_HNSW32,PQ64x8"
    with pytest.raises(BtRuntimeError, match="cannot hold"):
        faiss_index.choose_factory(10**6, 512, 10**5)


def test_recall_at_10_on_random_vectors_with_the_chosen_factory():
    rng = np.random.default_rng(1234)
    dim = 32  # the tiny export's embedding size; the report measures 512 (benchmarks/results/scale-*.md)
    vectors = _unit(rng, 200_000, dim)
    factory = faiss_index.choose_factory(len(vectors), dim, 16 * 2**30)
    assert factory.startswith("IVF")
    index, nprobe, build_recall, _ = faiss_index.train_and_add(vectors, factory, rng)
    assert build_recall >= faiss_index.TARGET_RECALL and nprobe < faiss_index.extract_nlist(index)
    queries = _unit(rng, 300, dim)  # fresh random queries, not database vectors
    truth = faiss_index.exact_top(vectors, queries, 10)
    assert faiss_index.recall_at(index.search(queries, 10)[1], truth) >= 0.95
