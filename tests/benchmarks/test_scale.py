"""benchmarks.scale on small sizes: the search table measures what it says (recall of an exact index is 1, an IVF
keeps its tuned nprobe) and renders."""

from __future__ import annotations

import pytest

pytest.importorskip("faiss")


def test_search_benchmark_rows_and_markdown():
    from benchmarks.scale import machine, markdown, search_benchmark

    report = search_benchmark(16, [2000], queries=20, factories=["IVF64,Flat"], kinds=("random", "clustered"),
                              log=lambda message: None)
    rows = {(r["data"], r["factory"]): r for r in report["rows"]}
    assert rows[("random", "Flat")]["recall_at_10"] == 1.0 and rows[("random", "Flat")]["chosen"]
    ivf = rows[("clustered", "IVF64,Flat")]
    assert ivf["nlist"] == 64 and 1 <= ivf["nprobe"] <= 64 and not ivf["chosen"]
    assert all(r["p50_ms"] <= r["p99_ms"] for r in report["rows"])
    text = markdown({"scenarios": ["search"], "machine": machine(), "search": report})
    assert "| clustered | 2,000 | IVF64,Flat |" in text


def test_index_marginal_rate_cancels_a_fixed_cost_and_renders():
    from benchmarks.scale import _marginal, machine, markdown

    # in-process: 0.5 s per image; Ray 2 actors: 12 s of start-up per run + 0.6 s per image, round 1 slower
    def row(path, actors, images, turn, seconds):
        return {"path": path, "actors": actors, "threads": 2 // max(1, actors), "images": images, "round": turn,
                "seconds": seconds, "images_per_s": images / seconds, "vs_in_process": 1.0, "max_abs_diff": 0.0}

    rows = [row("in-process", 0, n, t, (0.5 + 0.1 * t) * n) for t in range(2) for n in (32, 160)]
    rows += [row("ray", 2, n, t, 12 + (0.6 + 0.1 * t) * n) for t in range(2) for n in (32, 160)]
    ray = {r["path"]: r for r in _marginal(rows, [32, 160], 2)}["ray"]
    assert abs(ray["images_per_s"] - 2 * 128 / (128 * 1.3)) < 1e-9
    assert abs(ray["per_actor_images_per_s"] - ray["images_per_s"] / 2) < 1e-9
    assert abs(ray["per_round_vs_in_process"][0] - 0.5 / 0.6) < 1e-9 and abs(ray["fixed_s"] - 12) < 1e-9
    assert _marginal(rows[:1], [32], 1) == []
    index = {"images": [32, 160], "rounds": 2, "batch_size": 16, "export": "x", "ray_start_s": 1.0, "rows": rows,
             "marginal": _marginal(rows, [32, 160], 2)}
    text = markdown({"scenarios": ["index"], "machine": machine(), "index": index})
    assert "| ray | 2 × 1 | 1.54 | 0.77 | 0.85 | 0.83, 0.86 | 12.0 |" in text


@pytest.mark.parametrize(("images", "rounds"), [([], 1), ([0, 8], 1), (8, 0)])
def test_index_benchmark_refuses_empty_galleries_and_rounds(images, rounds):
    pytest.importorskip("ray")
    from benchmarks.scale import index_benchmark

    with pytest.raises(ValueError, match="gallery sizes ≥ 1 and rounds ≥ 1"):
        index_benchmark("unused", images, rounds=rounds, log=lambda message: None)
