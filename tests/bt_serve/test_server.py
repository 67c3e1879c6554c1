"""bt-serve for real: Triton (PyTriton) started from the command line on loopback, every model round-tripped over
HTTP and gRPC, the load test (concurrent clients → batches formed, no request lost, answers identical to
bt_runtime), SIGTERM shutdown. The server runs in the serving environment (nvidia-pytriton pins numpy < 2):
BT_SERVE_PYTHON, else <repo>/.venv-serve/bin/python (docs/development.md); CI sets BT_REQUIRE_SERVE=1, so there a
missing environment fails instead of skipping."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.serve_load import free_ports, load_test
from bt_serve import smoke


def _bt_serve(python: str, export: Path, *extra: str, timeout: int = 300) -> subprocess.CompletedProcess:
    http, grpc, metrics = free_ports(3)
    return subprocess.run([python, "-m", "bt_serve.cli", str(export), "--address", "127.0.0.1", "--http-port",
                           str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics), *extra],
                          capture_output=True, text=True, timeout=timeout)


def test_smoke_round_trips_every_model_over_http_and_grpc(serve_python, tiny_export):
    result = _bt_serve(serve_python, tiny_export, "--smoke", "--max-request-bytes", "2000000")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # tritonserver writes a line or two of its own to stdout (e.g. "Error: Failed to initialize NVML" without a GPU)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    started, report = lines
    assert started["models"] == ["itm", "rerank", "embed_image", "embed_text", "fill_mask"]
    checks = {row["check"]: row for row in report["rows"]}
    for protocol in ("http", "grpc"):
        for model in ("itm", "rerank", "embed_image", "embed_text", "fill_mask", "itm bad image",
                      "itm body above --max-request-bytes"):
            assert checks[f"{protocol}:{model}"]["passed"], checks[f"{protocol}:{model}"]
    assert checks["grpc:itm bad image"]["note"].startswith("image[0]: not a decodable image")


def test_load_batches_concurrent_requests_and_loses_none(serve_python, tiny_export):
    """Two model instances (--instances 2) sharing one set of sessions, eight clients. The batcher waits up to 20 ms
    for company: with 2 ms, two instances sometimes kept up with eight tiny-model clients and formed no batch."""
    report = load_test(tiny_export, concurrency=8, seconds=4, server_python=serve_python, max_requests=400,
                       instances=2, queue_delay_us=20000, log=lambda message: None)
    sequential, concurrent = report["phases"]
    assert report["lost"] == 0, report["errors"]
    assert sequential["requests"] > 0 and concurrent["requests"] > 0
    assert report["max_abs_diff_vs_direct"] <= smoke.TOLERANCE
    assert sequential["batches"] == {"1": sequential["requests"]}, sequential
    assert max(int(size) for size in concurrent["batches"]) > 1, concurrent["batches"]  # the batcher merged
    assert sum(int(k) * v for k, v in concurrent["batches"].items()) == concurrent["requests"]
    assert report["server_shutdown_rc"] == 0  # SIGTERM: clean stop


@pytest.mark.slow
def test_load_on_the_full_size_export(serve_python, base_export, capsys):
    """Reported, not timed: the throughput goal (≥ 1.5× sequential at concurrency 8) is the benchmark's
    (benchmarks/results/serve-*.md); this checks the full-size path serves every request correctly."""
    report = load_test(base_export, concurrency=8, seconds=15, server_python=serve_python,
                       log=lambda message: None)
    from benchmarks.serve_load import markdown

    with capsys.disabled():
        print("\n" + markdown(report))
    assert report["lost"] == 0, report["errors"]
    assert report["max_abs_diff_vs_direct"] <= smoke.TOLERANCE


def test_bad_ports_are_refused_before_anything_starts(tiny_export):
    result = subprocess.run([sys.executable, "-m", "bt_serve.cli", str(tiny_export), "--http-port", "70000"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--http-port" in result.stderr and "1-65535" in result.stderr


def test_an_unknown_spinning_mode_is_refused_before_anything_starts(tiny_export):
    result = subprocess.run([sys.executable, "-m", "bt_serve.cli", str(tiny_export), "--spinning", "busy"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--spinning" in result.stderr and "'per-run', 'off', 'on'" in result.stderr


@pytest.mark.skipif(importlib.util.find_spec("pytriton") is not None, reason="pytriton is installed here")
def test_without_pytriton_bt_serve_says_how_to_install_it(tiny_export):
    result = subprocess.run([sys.executable, "-m", "bt_serve.cli", str(tiny_export)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and ".venv-serve/bin/pip install -e '.[serve]'" in result.stderr


def test_a_hostile_client_fails_no_good_request(serve_python, tiny_export):
    """Bounded smoke of benchmarks/serve_hostile.py: 7 good clients with and without 1 hostile one (every payload
    kind at least once, the 64 MB text included): no good request lost or wrong, every hostile one refused (the
    associated-alpha TIFF answered), the server's memory bounded."""
    from benchmarks.serve_hostile import hostile_test

    report = hostile_test(tiny_export, serve_python, good_clients=7, seconds=6, max_requests=500, max_hostile=14,
                          log=lambda message: None)
    assert report["good_lost"] == 0, report["good_errors"]
    assert report["max_abs_diff_vs_direct"] <= smoke.TOLERANCE
    hostile = {row["kind"]: row for row in report["hostile"]}
    assert len(hostile) == 7 and all(row["sent"] >= 1 for row in hostile.values())
    assert hostile.pop("associated-alpha TIFF (La)")["refused"] == 0
    assert all(row["refused"] == row["sent"] for row in hostile.values()), hostile
    # the bound docs/limits.md states for this setup (measured 753 MB peak in the 40 s interleaved run behind the
    # gate; 2.47 GB before it)
    assert report["phases"][1]["peak_rss_mb"] < 1536
    assert report["server_shutdown_rc"] == 0
