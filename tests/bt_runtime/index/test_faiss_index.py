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


def _random_job(tmp_path, monkeypatch, dim=64):
    pytest.importorskip("pyarrow")
    from bt_runtime.index import shards

    monkeypatch.setattr(faiss_index, "EXACT_BELOW", 1000)
    rng = np.random.default_rng(5)
    vectors = _unit(rng, 12_000, dim)
    job = shards.Job(shards.JOB_FORMAT, "--list x", "0" * 64, len(vectors), 4000, "fp32", {"vision_tower": "v"}, dim)
    shards.open_job(tmp_path, job)
    for k in range(3):
        rows = range(4000 * k, 4000 * (k + 1))
        shards.write_shard(tmp_path, k, [f"img{r:05d}" for r in rows], [f"/g/{r}.png" for r in rows],
                           vectors[4000 * k:4000 * (k + 1)], [""] * 4000, dim)
    assert faiss_index.choose_factory(len(vectors), dim, 2**30).startswith("IVF")
    return vectors


def test_build_scans_fast_scan_codes_and_rescores_when_ivf_needs_most_lists(tmp_path, monkeypatch):
    """Random vectors have no clusters: an IVF reaching recall 0.95 scans over half its lists, so build() scans
    every 4-bit code instead and re-scores the best k·k_factor exactly; the directory opens memory-mapped with the
    k_factor recall was measured at, and fresh queries reach the target too."""
    vectors = _random_job(tmp_path, monkeypatch)
    built = faiss_index.build(tmp_path, 2**30)
    assert built.factory == "PQ32x4fs,RFlat" and built.nprobe == 0 and built.k_factor >= 2
    assert built.recall_at_10 >= faiss_index.TARGET_RECALL
    opened = faiss_index.open_index(tmp_path, {"vision_tower": "v"}, "fp32")
    assert opened.index.k_factor == built.k_factor
    scores, rows = opened.search(vectors[:3], 10)
    np.testing.assert_array_equal(rows[:, 0], [0, 1, 2])
    assert opened.ids(rows[:, 0]) == ["img00000", "img00001", "img00002"]
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)  # re-scored from the stored vectors: exact
    queries = _unit(np.random.default_rng(6), 200, 64)
    truth = faiss_index.exact_top(vectors, queries, 10)
    assert faiss_index.recall_at(opened.search(queries, 10)[1], truth) >= 0.93  # build measured without self-hits


def test_build_recall_leaves_each_querys_own_row_out():
    found = np.array([[5, 1, 2], [0, 3, 4]])
    np.testing.assert_array_equal(faiss_index._without_self(found, np.array([5, 9]), 2), [[1, 2], [0, 3]])


def test_build_keeps_an_exact_index_when_the_refined_scan_misses_too(tmp_path, monkeypatch):
    vectors = _random_job(tmp_path, monkeypatch)
    monkeypatch.setattr(faiss_index, "MAX_K_FACTOR", 1)  # no re-scoring breadth: 4-bit codes alone miss 0.95
    built = faiss_index.build(tmp_path, 2**30)
    assert built.factory == "Flat" and built.recall_at_10 == 1.0 and built.k_factor == 0
    opened = faiss_index.open_index(tmp_path, {"vision_tower": "v"}, "fp32")
    np.testing.assert_array_equal(opened.search(vectors[:3], 10)[1][:, 0], [0, 1, 2])


def test_a_dimension_the_codes_do_not_divide_falls_back_to_exact(tmp_path, monkeypatch):
    assert faiss_index.refine_factory(65) is None and faiss_index.refine_factory(512) == "PQ256x4fs,RFlat"
    _random_job(tmp_path, monkeypatch, dim=65)
    assert faiss_index.build(tmp_path, 2**30).factory == "Flat"
