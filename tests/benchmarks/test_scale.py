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
