import pytest

pytest.importorskip("torch")

from benchmarks.rerank import measure_rerank, texts_of  # noqa: E402
from bt_export.eager import EagerBridgeTower  # noqa: E402


def test_measure_rerank_on_tiny_reports_medians_ratio_and_agreement(tiny_export, photos_dir):
    eager = EagerBridgeTower("tiny", tiny_export)
    result = measure_rerank(tiny_export, photos_dir / "skimage_chelsea.png", texts_of(5), eager, runs=2, warmup=1)
    assert len(result["samples_s"]["runtime"]) == len(result["samples_s"]["eager_loop"]) == 2
    assert result["speedup"] == pytest.approx(result["median_s"]["eager_loop"] / result["median_s"]["runtime"])
    assert result["max_abs_diff"] <= 1e-4
