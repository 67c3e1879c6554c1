"""The benchmark harness on `tiny`: statistics, interleaving, FLOP counts, report schema, agreement checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import flops
from benchmarks.report import markdown
from benchmarks.scenarios import Settings
from benchmarks.timing import Case, interleave, summarize

pytest.importorskip("torch")


def test_summarize_matches_numpy_percentiles():
    samples = [0.010, 0.030, 0.020, 0.050, 0.040]
    summary = summarize(samples)
    assert summary["p50_ms"] == pytest.approx(30.0)
    assert summary["p90_ms"] == pytest.approx(np.percentile(np.array(samples) * 1000, 90))
    assert summary["p99_ms"] == pytest.approx(49.6)
    assert summary["runs"] == 5 and summary["min_ms"] == pytest.approx(10.0)


def test_interleave_varies_each_cases_neighbour_and_skips_warmup():
    calls = []
    cases = [Case(name, lambda name=name: calls.append(name) or name) for name in "abcd"]
    interleave(cases, runs=8, warmup=1)
    rounds = ["".join(calls[i:i + 4]) for i in range(0, len(calls), 4)]
    assert all(sorted(r) == list("abcd") for r in rounds) and len(rounds) == 9  # every case once per round
    # a rotation kept "b" behind "a" in every round; here every case follows at least two different cases
    before = {c: {r[r.index(c) - 1] for r in rounds if r.index(c) > 0} for c in "abcd"}
    assert all(len(p) >= 2 for p in before.values()), before
    again = []
    interleave([Case(n, lambda n=n: again.append(n)) for n in "abcd"], runs=8, warmup=1)
    assert again == calls  # seeded: a rerun measures in the same orders
    assert all(len(c.samples) == 8 and c.output == c.name for c in cases)
    with pytest.raises(ValueError, match="runs must be"):
        interleave(cases, runs=0, warmup=1)


def test_interleave_pauses_before_every_call_when_asked(monkeypatch):
    """The pause lets a backend's spinning threads stop before the next backend's call; it is not timed."""
    from benchmarks import timing

    clock, events = [0.0], []

    def sleep(seconds):
        events.append(("sleep", seconds))
        clock[0] += seconds

    def call(name):
        events.append(("run", name))
        clock[0] += 1.0

    monkeypatch.setattr(timing, "time", type("FakeTime", (), {"sleep": staticmethod(sleep),
                                                              "perf_counter": staticmethod(lambda: clock[0])}))
    cases = [Case(n, lambda n=n: call(n)) for n in "ab"]
    interleave(cases, runs=2, warmup=1, settle_s=0.1)
    assert events[0::2] == [("sleep", 0.1)] * 6 and [e[0] for e in events[1::2]] == ["run"] * 6
    assert all(case.samples == [1.0, 1.0] for case in cases)  # the pauses stay out of the samples
    events.clear()
    interleave(cases, runs=2, warmup=1)
    assert [e[0] for e in events] == ["run"] * 6


def test_pair_flops_of_the_base_architecture():
    from transformers import BridgeTowerConfig

    from bt_export.configs import KNOWN_CHECKPOINTS
    from bt_export.manifest import config_summary

    config = config_summary(BridgeTowerConfig(**KNOWN_CHECKPOINTS["base-itm-mlm"].config))
    total = flops.pair(config, 40)
    # ~109 GFLOP per pair at 288 px and 40 tokens; the vision tower is about half of it
    assert 100e9 < total < 120e9
    assert 0.4 < flops.vision_tower(config) / total < 0.6


@pytest.fixture(scope="module")
def report(tiny_export, photos_dir):
    from benchmarks.bench import run_benchmark

    settings = Settings(num_texts=3, gallery=3, batch_sizes=(1, 2), runs=2, warmup=1, top_k=2)
    return run_benchmark(tiny_export, ["pair", "rerank", "embed-images", "embed-texts", "retrieve"],
                         ["torch", "onnxruntime:fp32", "onnxruntime-naive", "onnxruntime-naive:int8", "tensorrt:fp16"],
                         settings, [photos_dir],
                         log=lambda m: None)


def test_report_schema_and_agreement(report):
    assert report["schema_version"] == 1
    expected = {"command", "export", "machine", "versions", "threads", "matmul_gflops", "settings", "results"}
    assert expected <= set(report)
    assert report["matmul_gflops"]["best_fp32"] > 0
    assert any(s.startswith("tensorrt:fp16: this export has no TensorRT fp16 engines") for s in report["skipped"])
    scenarios = {(r["scenario"], r["backend"]) for r in report["results"]}
    assert ("embed-images", "onnxruntime:fp32") in scenarios and ("retrieve", "torch") in scenarios
    # the naive whole-model export: timed and checked where it can run (pair, rerank), nowhere else
    assert {s for s, b in scenarios if b == "onnxruntime-naive"} == {"pair", "rerank"}
    assert {s for s, b in scenarios if b == "onnxruntime-naive:int8"} == {"pair", "rerank"}
    for row in report["results"]:
        if row["scenario"] == "retrieve-index":  # the one-time ITC index of the gallery: no eager peer
            assert len(row["samples_s"]) == 1 and row["work"] == 3 and row["speedup_vs_torch"] is None
            continue
        assert len(row["samples_s"]) == 2 and row["summary"]["p50_ms"] > 0
        if row["backend"] == "torch":
            assert row["speedup_vs_torch"] == pytest.approx(1.0)
        else:
            assert row["agreement"]["passed"], row
            assert row["speedup_vs_torch"] > 0
            if (row["scenario"], row["params"].get("two_stage")) == ("retrieve", True):
                assert row["gflops_per_s"] is None  # its work depends on the shortlist, not on the gallery
            else:
                assert row["gflops_per_s"] > 0
    assert report["failing"] == []
    json.dumps(report)  # serializable as written by --json
    table = markdown(report)
    assert "| pair |" in table and "onnxruntime:fp32" in table


def test_a_fast_but_wrong_backend_is_reported_failing(tiny_export, photos_dir, monkeypatch):
    from benchmarks import backends, bench

    real = backends.make_backend

    class Wrong(backends.RuntimeBackend):
        def itm_pair(self, *args):
            return 1.0 - super().itm_pair(*args)  # probabilities flipped

    def make(label, *args):
        made = real(label, *args)
        return Wrong(made.runtime, label) if label == "onnxruntime:fp32" else made

    monkeypatch.setattr(bench, "make_backend", make)
    result = bench.run_benchmark(tiny_export, ["pair"], ["torch", "onnxruntime:fp32"],
                                 Settings(runs=1, warmup=0), [photos_dir], log=lambda m: None)
    assert result["failing"] == ["pair onnxruntime:fp32"]
    assert "**NO**" in markdown(result)


def test_cli_rejects_unknown_scenario(tiny_export):
    from typer.testing import CliRunner

    from benchmarks.cli import app

    result = CliRunner().invoke(app, [str(tiny_export), "--scenario", "warp-speed", "--runs", "1"])
    assert result.exit_code == 2 and "valid" in result.output
    for args, says in ((["--gallery", "3", "--top-k", "5"], "--top-k ≤ --rerank ≤ --gallery"),
                       (["--rerank", "2", "--top-k", "3"], "--top-k ≤ --rerank"),
                       (["--brute-force-sample", "0"], "--brute-force-sample must be ≥ 1"),
                       (["--settle-ms", "-5"], "--settle-ms must be ≥ 0, got -5")):
        result = CliRunner().invoke(app, [str(tiny_export), "--scenario", "retrieve", *args])
        assert result.exit_code == 2 and says in result.output, result.output


def test_cli_option_errors_are_one_line_before_measuring(tiny_export, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from benchmarks import bench
    from benchmarks.cli import app

    real = bench.run_benchmark
    monkeypatch.setattr(bench, "run_benchmark", lambda *a, **k: pytest.fail("measured before refusing"))
    (tmp_path / "out").mkdir()
    for args, says in ((["--batch-sizes", "0,x"], "--batch-sizes '0,x': expected a comma list of positive integers"),
                       (["--batch-sizes", "8,0"], "--batch-sizes '8,0'"),
                       (["--threads", "-2"], "--threads must be ≥ 1"),
                       (["--json", str(tmp_path / "out")], "is a directory; give a file path")):
        result = CliRunner().invoke(app, [str(tiny_export), "--scenario", "pair", *args])
        assert result.exit_code == 2 and says in result.output and "Traceback" not in result.output, result.output
    monkeypatch.setattr(bench, "run_benchmark", real)
    result = CliRunner().invoke(app, [str(tiny_export), "--scenario", "pair", "--backend", "foo"])
    assert result.exit_code == 2 and "no backend of this export could be made (foo: unknown backend" in result.output


def test_plot_without_matplotlib_fails_before_measuring(tiny_export, tmp_path, monkeypatch):
    import importlib.util

    from typer.testing import CliRunner

    from benchmarks import bench
    from benchmarks.cli import app

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    monkeypatch.setattr(bench, "run_benchmark", lambda *a, **k: pytest.fail("measured before refusing"))
    result = CliRunner().invoke(app, [str(tiny_export), "--plot", str(tmp_path / "p.png")])
    assert result.exit_code == 2 and "--plot needs matplotlib" in result.output


def test_default_backends_cover_every_variant_and_bf16_where_the_cpu_has_it(tiny_export, monkeypatch):
    from benchmarks import bench, machine
    from bt_runtime import read_manifest

    manifest = read_manifest(tiny_export)
    monkeypatch.setattr(machine, "cpu_info", lambda: {"flags": ["avx512_bf16"]})
    naive = ["onnxruntime-naive", "onnxruntime-naive:int8"]  # every report shows both peers
    assert bench.default_backends(manifest) == ["torch", "torch:bf16", "onnxruntime:fp32", *naive]
    monkeypatch.setattr(machine, "cpu_info", lambda: {"flags": ["avx2"]})
    assert bench.default_backends(manifest) == ["torch", "onnxruntime:fp32", *naive]


def test_cold_start_rows_per_way_of_loading(tiny_export, photos_dir):
    """Fresh processes to the first score: eager, and the runtime with cached digests, hashing every file, and
    without prepacked weights; each with its peak RSS and its score checked against eager's."""
    from benchmarks.bench import run_benchmark

    report = run_benchmark(tiny_export, ["cold-start"], ["torch", "onnxruntime:fp32"],
                           Settings(runs=1, warmup=0), [photos_dir], log=lambda m: None)
    rows = {r["backend"]: r for r in report["results"]}
    assert set(rows) == {"torch", "onnxruntime:fp32", "onnxruntime:fp32 (hash every file)",
                         "onnxruntime:fp32 (prepack_weights=False)"}
    for row in rows.values():
        assert row["extra"]["peak_rss_mb"] > 0 and row["agreement"]["passed"], row


def test_retrieve_scales_a_timed_eager_sample_and_ranks_against_the_whole_gallery(tiny_export, photos_dir):
    """A gallery larger than the brute-force sample: eager is timed on the sample and scaled; recall is measured
    against the fp32 runtime's ITM over every image (checked against eager on the sample). A shortlist as large as
    the gallery is brute force itself: recall 1."""
    from benchmarks.bench import run_benchmark

    settings = Settings(gallery=12, brute_force_sample=3, top_k=4, rerank=12, runs=1, warmup=0)
    report = run_benchmark(tiny_export, ["retrieve"], ["torch", "onnxruntime:fp32"], settings, [photos_dir],
                           log=lambda m: None)
    rows = {(r["scenario"], r["backend"]): r for r in report["results"]}
    eager, ours = rows[("retrieve", "torch")], rows[("retrieve", "onnxruntime:fp32")]
    assert eager["extra"] == {"brute_force_timed_on": 3, "scaled_by": 4.0} and eager["work"] == 12
    assert "runtime over all 12 images" in ours["extra"]["brute_force_ranking"]
    assert ours["agreement"]["recall_at_k_vs_brute_force"] == 1.0 and ours["agreement"]["passed"]
    assert ours["params"] == {"gallery": 12, "top_k": 4, "rerank": 12, "two_stage": True}
    assert rows[("retrieve-index", "onnxruntime:fp32")]["work"] == 12
    json.dumps(report)  # as --json writes it


def test_distinct_gallery_has_no_two_equal_images(photos_dir):
    from PIL import Image

    from benchmarks.scenarios import distinct_gallery

    photos = [Image.open(p).convert("RGB").resize((64, 48)) for p in sorted(photos_dir.iterdir())]
    gallery = distinct_gallery(photos, 300)
    assert len(gallery) == 300 and len({(im.size, im.tobytes()) for im in gallery}) == 300


def test_the_naive_export_has_fp32_and_int8_only(tiny_export):
    from benchmarks.backends import BackendUnavailable, make_backend
    from bt_runtime import read_manifest

    with pytest.raises(BackendUnavailable, match=r"fp32 \(`onnxruntime-naive`\) and int8 \(`onnxruntime-naive:int8`\)"):
        make_backend("onnxruntime-naive:fp16", tiny_export, read_manifest(tiny_export), None, "/nonexistent")


def test_the_header_says_when_the_cpu_was_shared(report):
    shared = dict(report, load_average=[report["machine"]["cpu"]["logical_cores"] + 1.0, 0.0, 0.0])
    assert "the CPU was shared" in markdown(shared)
    assert "the CPU was shared" not in markdown(dict(report, load_average=[0.0, 0.0, 0.0]))


def test_an_int8_recipe_label_is_for_int8_only(tiny_export):
    from benchmarks.backends import BackendUnavailable, agreement_bounds, make_backend
    from bt_export.specs import VARIANT_BOUNDS
    from bt_runtime import read_manifest

    with pytest.raises(BackendUnavailable, match="@<recipe> names an int8 recipe"):
        make_backend("onnxruntime:fp32@s8-all", tiny_export, read_manifest(tiny_export), None)
    assert agreement_bounds("onnxruntime:int8@s8-all") == VARIANT_BOUNDS["int8"]
