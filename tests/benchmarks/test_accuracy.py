"""bt-bench --scenario accuracy and the task-level agreement helper: metrics, agreement with eager, refusals, and
(on the shipped shapes weights) that the trained model is actually trained."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from benchmarks.accuracy import BARS, TaskOutputs, check_bars, make_eval_set, ranking, recall_at, task_agreement
from bt_export.specs import RUNTIME_FP32_BOUNDS

from .conftest import shapes_weights_present

pytest.importorskip("torch")

trained = pytest.mark.skipif(not shapes_weights_present(), reason="the shapes weights are not in the tree yet")


def _all_fractions(value, path="") -> list[tuple[str, float]]:
    """Every metric of a result (recalls, accuracies, differs) with its path; timings and counts left out."""
    if isinstance(value, dict):
        return [item for k, v in value.items() if k not in ("timing_s", "count", "k", "pairs") and "_ms_" not in k
                and not k.endswith("_s") for item in _all_fractions(v, f"{path}/{k}")]
    return [(path, value)] if value is not None else []


@pytest.fixture(scope="module")
def small_report(accuracy_export):
    from benchmarks.accuracy_run import Options, run_accuracy

    return run_accuracy(accuracy_export, None, Options(gallery=20, seed=5, queries=6, k=10, combos_gallery=6),
                        log=lambda m: None)


def test_every_precision_runs_and_metrics_are_fractions(small_report, accuracy_export):
    from bt_runtime import read_manifest

    precisions = read_manifest(accuracy_export).precisions
    for split in ("heldout", "heldout_combos"):
        results = small_report["splits"][split]["results"]
        assert {"torch", *(f"onnxruntime:{p}" for p in precisions)} <= set(results)
        for label, result in results.items():
            metrics = _all_fractions(result)
            assert metrics and all(0.0 <= v <= 1.0 for _, v in metrics), (label, metrics)
        assert {"itm", "brute_force", "itc", "two_stage", "mlm"} <= set(results["onnxruntime:fp32"])
        assert set(results["onnxruntime-naive"]) == {"itm", "timing_s", "differs_from_eager"}


def test_eager_and_onnxruntime_fp32_agree(small_report):
    for split in small_report["splits"].values():
        differs = split["results"]["onnxruntime:fp32"]["differs_from_eager"]
        assert {"itm_decisions", "itm_comparisons", "retrieval_top1", "mlm_top1"} <= set(differs)
        assert all(v <= 1 - BARS["eager_fp32_identical"] for v in differs.values()), differs


def test_markdown_has_machine_header_and_tables(small_report):
    from benchmarks.report import markdown

    text = markdown(small_report)
    assert "Machine:" in text and "flags" in text and "Versions:" in text
    assert "| onnxruntime:int8 |" in text or "int8" not in small_report["export"]["precisions"]
    assert "Held-out attribute combinations" in text and "Definitions:" in text


def test_eager_matrix_matches_the_hf_classes(accuracy_export):
    """The brute-force matrix runs eager through bt_export.towers; it must score what the HF ITM class does."""
    from benchmarks.accuracy_run import EagerScorer
    from benchmarks.bench import eager_for
    from bt_runtime import read_manifest

    manifest = read_manifest(accuracy_export)
    data = make_eval_set(3, 5, queries=2, image_size=manifest.preprocessing.image_size)
    scorer = EagerScorer(eager_for(manifest))
    scorer.prepare(data.images)
    matrix = scorer.itm_matrix(data.images, data.captions[:3])  # (5, 3)
    rows, cols = np.divmod(np.arange(15), 3)
    pairs = scorer.itm_pairs([data.images[i] for i in rows], [data.captions[j] for j in cols])
    # one ITM probability computed two ways in fp32 eager: the runtime's end-to-end fp32 bound
    np.testing.assert_allclose(matrix.ravel(), pairs, atol=RUNTIME_FP32_BOUNDS["itm_probability_abs"])


def test_task_agreement_counts_what_differs():
    reference = TaskOutputs({"pairs": np.array([0.9, 0.2, 0.6, 0.4])}, np.array([True, True, False]),
                            {"t2i": np.array([[0, 1, 2], [2, 1, 0]])}, np.array([5, 6]))
    same = task_agreement(reference, reference, k=2)
    assert set(same) == {"itm_decisions", "itm_comparisons", "retrieval_top1", "retrieval_top2_overlap", "mlm_top1"}
    assert all(v == 1.0 for v in same.values())
    other = TaskOutputs({"pairs": np.array([0.9, 0.7, 0.6, 0.4])}, np.array([True, False, False]),
                        {"t2i": np.array([[1, 0, 2], [2, 1, 0]])}, np.array([5, 7]))
    got = task_agreement(reference, other, k=2)
    assert got == {"itm_decisions": 0.75, "itm_comparisons": pytest.approx(2 / 3), "retrieval_top1": 0.5,
                   "retrieval_top2_overlap": 1.0, "mlm_top1": 0.5}
    assert task_agreement(reference, TaskOutputs()) == {}  # nothing shared: nothing claimed


def test_recall_and_relevance_by_canonical_scene():
    from bt_export.shapes.data import parse_caption

    a = parse_caption("a small red circle left of a large blue star").canonical()
    assert a == parse_caption("a large blue star right of a small red circle").canonical()
    assert a != parse_caption("a small red circle above a large blue star").canonical()
    scores = np.array([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]])
    relevant = np.array([[True, False, False], [False, False, True]])
    order = ranking(scores)
    assert order.tolist() == [[1, 2, 0], [0, 1, 2]]
    assert recall_at(order, relevant, (1, 3, 5)) == {"r@1": 0.0, "r@3": 1.0, "r@5": None}


def test_eval_set_is_a_function_of_its_seed():
    a, b = (make_eval_set(11, 12, queries=4, image_size=64) for _ in range(2))
    assert a.captions == b.captions and a.negatives == b.negatives and a.masked == b.masked
    assert make_eval_set(12, 12, queries=4, image_size=64).captions != a.captions
    assert all("<mask>" in text for _, text, _, _ in a.masked)
    with pytest.raises(ValueError, match="queries"):
        make_eval_set(1, 5, queries=6, image_size=64)


@pytest.mark.parametrize("args, message", [
    (["--gallery", "0"], "--gallery must be ≥ 1"),
    (["--gallery", "10", "--rerank", "11"], "--rerank ≤ --gallery"),
    (["--gallery", "10", "--queries", "11"], "--queries ≤ --gallery"),
    (["--seed", "-1"], "--seed must be ≥ 0"),
    (["--scenario", "pair"], "runs on its own"),
    (["--images", "x.png"], "drop --images"),
])
def test_cli_refuses_bad_options_before_any_work(args, message, tmp_path):
    from benchmarks.cli import app

    missing = tmp_path / "no-export-here"  # refused before the export is even read
    result = CliRunner().invoke(app, [str(missing), "--scenario", "accuracy", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


@trained
def test_trained_model_tells_colours_apart(accuracy_export):
    from benchmarks.accuracy_run import Options, run_accuracy

    report = run_accuracy(accuracy_export, ["onnxruntime:fp32"], Options(gallery=60, seed=77, queries=10, k=10,
                                                                         combos_gallery=0), log=lambda m: None)
    itm = report["splits"]["heldout"]["results"]["onnxruntime:fp32"]["itm"]
    assert itm["per_kind"]["colour"] >= 0.9, itm  # the test's own floor: metrics.json measures 1.0


def test_contact_sheet_script(accuracy_export, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from PIL import Image

    script = Path(__file__).resolve().parents[2] / "scripts" / "contact_sheet.py"
    out = tmp_path / "sheet.png"
    result = subprocess.run([sys.executable, str(script), str(accuracy_export), "-o", str(out), "--gallery", "12"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "3 queries × top-5" in result.stdout and Image.open(out).size[0] > 600


@pytest.fixture(scope="module")
def full_table(accuracy_export, tmp_path_factory) -> dict:
    """The report on a seed not developed on, made once for the bar tests below: a 500-image gallery (the committed
    reports use 1,000; half the brute-force pairs). Only what the bars read: the held-out split (no combinations
    split, `--combos-gallery 0`) and eager + the export's variants (the naive export is in `small_report`); the two
    took CI's longest item from 459 to 310 s (alone, on one 2-core host, 2026-12-02)."""
    from benchmarks.cli import app
    from bt_runtime import read_manifest

    out = tmp_path_factory.mktemp("full-table") / "accuracy.json"
    variants = [f"onnxruntime:{p}" for p in read_manifest(accuracy_export).precisions]
    result = CliRunner().invoke(app, [str(accuracy_export), "--scenario", "accuracy", "--gallery", "500",
                                      "--combos-gallery", "0", "--backend", "torch",
                                      *(arg for label in variants for arg in ("--backend", label)),
                                      "--seed", "4321", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert set(report["splits"]) == {"heldout"}
    heldout = report["splits"]["heldout"]
    assert set(heldout["results"]) == {"torch", *variants}
    assert heldout["gallery"] == 500 and heldout["queries"] == 100
    assert check_bars(heldout["results"]) == heldout["bars"]
    return heldout


@pytest.mark.slow
@trained
def test_full_table_meets_the_issue_bars(full_table):
    """Issue 20's bars on a 500-image gallery: eager vs onnxruntime fp32 identical decisions ≥ 99.9 %, two-stage
    (k = 20) recall@10 ≥ 0.95 of brute force. The reduced-precision bar is the next test."""
    failing = [bar for bar in full_table["bars"] if not bar["passed"] and "points of fp32" not in bar["bar"]]
    assert not failing, failing


@pytest.mark.slow
@trained
def test_full_table_reduced_precision_keeps_the_task(full_table):
    """Issue 20's reduced-precision bar at the resolution CI can afford on any CPU: ITM and MLM metrics (hundreds to
    thousands of decisions each) within 0.5 points of fp32; recalls, which move in steps of one query (1 point at
    CI's 100 queries, where a near-tie broken by int8 rounding is a whole point), within two queries. The bar itself,
    0.5 points with 200 queries, is checked by the committed report (benchmarks/results/shapes-accuracy.md); int8
    kernels, and so near-ties, differ between CPU classes."""
    from benchmarks.accuracy import task_metrics

    results, step = full_table["results"], 100 / full_table["queries"]
    reference = task_metrics(results["onnxruntime:fp32"])
    for label in ("onnxruntime:fp16", "onnxruntime:int8"):
        metrics = task_metrics(results[label])
        assert set(metrics) == set(reference), label
        for name, value in reference.items():
            allowed = 2 * step if name.startswith(("brute_force", "two_stage")) else 0.5
            assert abs(metrics[name] - value) * 100 <= allowed + 1e-9, (label, name, metrics[name], value)
