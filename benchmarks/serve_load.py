"""Load test for bt-serve on loopback: the same `itm` requests one at a time, then from N concurrent clients, each
phase bounded by time and count; p50/p99 latency, throughput, the batch sizes the server actually formed (Triton's
statistics endpoint, diffed around each phase), and every answer compared with bt_runtime called directly on the
same pair. Torch-free; starts the server itself (a subprocess of `--server-python`, which needs nvidia-pytriton).

    python -m benchmarks.serve_load EXPORT --concurrency 8 --seconds 20 --server-python .venv-serve/bin/python
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bt_serve import client as c
from bt_serve.gate import free_loopback_ports as free_ports

from .machine import cpu_info

SHARED_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "assets" / "images"
CAPTIONS = ["two cats sleeping on a pink blanket", "a remote control on a couch", "a football player scoring a goal",
            "a bird flying over the snow", "a plate of food on a wooden table", "a red bus in a city street",
            "a dog catching a frisbee in a park", "a sailboat on a calm lake at sunset"]


@dataclass
class Phase:
    name: str
    clients: int
    latencies_ms: list[float] = field(default_factory=list)
    answers: list[tuple[int, float]] = field(default_factory=list)  # (pair index, probability)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    batches: dict[int, int] = field(default_factory=dict)

    def summary(self) -> dict:
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.array([np.nan])
        sizes = sum(size * count for size, count in self.batches.items())
        runs = sum(self.batches.values())
        return {"phase": self.name, "clients": self.clients, "requests": len(self.answers),
                "errors": len(self.errors), "throughput_rps": len(self.answers) / self.wall_s if self.wall_s else 0,
                "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
                "batches": {str(k): v for k, v in sorted(self.batches.items())},
                "mean_batch": sizes / runs if runs else 0.0}


def pairs(export_dir: Path, count: int) -> list[tuple[bytes, str]]:
    """Real photos from ../shared/assets when present (else the export's golden image), each with a caption."""
    images = sorted(p for p in SHARED_IMAGES.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")) \
        if SHARED_IMAGES.is_dir() else []
    if not images:
        from bt_runtime.manifest import read_manifest

        manifest = read_manifest(export_dir)
        images = [manifest.path(manifest.golden.image.file)]
    encoded = [p.read_bytes() for p in images]
    return [(encoded[k % len(encoded)], CAPTIONS[k % len(CAPTIONS)]) for k in range(count)]


def run_phase(phase: Phase, work: list[tuple[bytes, str]], host: str, port: int, seconds: float,
              max_requests: int, protocol: str) -> None:
    lock, counter = threading.Lock(), iter(range(max_requests))
    deadline = time.monotonic() + seconds

    def worker():
        module, client = c.connect(protocol, host, port)
        try:
            while time.monotonic() < deadline:
                with lock:
                    k = next(counter, None)
                if k is None:
                    return
                index = k % len(work)
                start = time.perf_counter()
                try:
                    probability, error = c.itm(module, client, *work[index])
                except Exception as err:  # a lost request: counted, never hidden
                    with lock:
                        phase.errors.append(str(err)[:200])
                    continue
                elapsed = (time.perf_counter() - start) * 1e3
                with lock:
                    if error:
                        phase.errors.append(error)
                    else:
                        phase.latencies_ms.append(elapsed)
                        phase.answers.append((index, probability))
        finally:
            client.close()

    threads = [threading.Thread(target=worker) for _ in range(phase.clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    phase.wall_s += time.perf_counter() - start  # a phase may run in several rounds


def _diff(after: dict[int, int], before: dict[int, int]) -> dict[int, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


@dataclass
class Server:
    """A bt-serve subprocess on loopback (see `serving`); `shutdown_rc` is set once it stopped."""
    process: subprocess.Popen
    host: str
    http_port: int
    grpc_port: int
    shutdown_rc: int | str | None = None

    def port(self, protocol: str) -> int:
        return self.http_port if protocol == "http" else self.grpc_port


PORT_ATTEMPTS = 3
# the ports are probed free here and bound later by the server; in between something else may take one (another
# process, or a readiness poll's own connection landing on the port it polls: TCP self-connect)
PORT_TAKEN = re.compile(r"already in use|cannot listen", re.IGNORECASE)


@contextlib.contextmanager
def serving(export_dir: Path, server_python: str, *options: str, ready_timeout_s: float = 600):
    """Start `bt-serve EXPORT --address 127.0.0.1` on free ports with `options`, wait until `itm` is ready, yield a
    Server; SIGTERM on exit (bt-serve stops Triton cleanly), killed after 60 s. A start that fails because a probed
    port was taken meanwhile is tried again on new ports (PORT_ATTEMPTS in all); any other failure raises with the
    server's output."""
    host = "127.0.0.1"
    with tempfile.TemporaryDirectory() as tmp:
        for attempt in range(PORT_ATTEMPTS):
            http_port, grpc_port, metrics_port = free_ports(3)
            folder = Path(tmp) / f"attempt{attempt}"
            folder.mkdir()
            command = [server_python, "-m", "bt_serve.cli", str(export_dir), "--address", host,
                       "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port",
                       str(metrics_port), "--log-file", str(folder / "server.log"), *options]
            with open(folder / "stdout", "w") as out:
                process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
            try:
                c.wait_ready(host, http_port, ["itm"], timeout_s=ready_timeout_s, process=process)
                break
            except (RuntimeError, TimeoutError) as err:
                _stop(process)
                tails = _tails(folder)
                if attempt + 1 < PORT_ATTEMPTS and isinstance(err, RuntimeError) and PORT_TAKEN.search(tails):
                    continue
                raise type(err)(f"{err}\n{tails}") from None
            except BaseException:  # Ctrl+C, a missing client library: no server left behind
                _stop(process)
                raise
        server = Server(process, host, http_port, grpc_port)
        try:
            yield server
        finally:
            server.shutdown_rc = _stop(process)


def _stop(process: subprocess.Popen) -> int | str:
    process.terminate()
    try:
        return process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=60)
        return "killed after 60 s"


def _tails(folder: Path, lines: int = 40) -> str:
    """The last `lines` of the server's stdout and Triton's log in `folder`, for an error message."""
    parts = []
    for name in ("stdout", "server.log"):
        path = folder / name
        text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else ["(not written)"]
        parts.append(f"--- bt-serve {name} (last {lines} lines) ---\n" + "\n".join(text))
    return "\n".join(parts)


def load_test(export_dir: Path, concurrency: int, seconds: float, server_python: str, max_requests: int = 100000,
              protocol: str = "grpc", max_batch: int = 16, queue_delay_us: int = 2000, threads: int = 0,
              precision: str = "fp32", instances: int = 1, log=print, spinning: str = "off") -> dict:
    from bt_runtime import BridgeTowerRuntime

    work = pairs(export_dir, 16)
    with serving(export_dir, server_python, "--max-batch", str(max_batch), "--queue-delay-us", str(queue_delay_us),
                 "--threads", str(threads), "--precision", precision, "--instances", str(instances),
                 "--spinning", spinning) as server:
        host, http_port = server.host, server.http_port
        phases = [Phase("one request at a time", 1), Phase(f"{concurrency} concurrent clients", concurrency)]
        for phase in phases:
            log(f"{phase.name}: {seconds:.0f} s")
            before = c.batch_statistics(host, http_port, "itm")
            run_phase(phase, work, host, server.port(protocol), seconds, max_requests, protocol)
            phase.batches = _diff(c.batch_statistics(host, http_port, "itm"), before)
    with BridgeTowerRuntime.load(export_dir, precision=precision) as runtime:
        direct = runtime.itm_pairs([image for image, _ in work], [text for _, text in work])
    worst = max((abs(p - direct[i]) for phase in phases for i, p in phase.answers), default=float("nan"))
    summaries = [p.summary() for p in phases]
    return {"export": str(export_dir), "cpu": cpu_info(), "protocol": protocol, "seconds": seconds,
            "max_batch": max_batch, "queue_delay_us": queue_delay_us, "threads": threads, "precision": precision,
            "instances": instances, "spinning": spinning,
            "server_python": server_python, "phases": summaries,
            "throughput_ratio": (summaries[1]["throughput_rps"] / summaries[0]["throughput_rps"]
                                 if summaries[0]["throughput_rps"] else float("nan")),
            "max_abs_diff_vs_direct": float(worst), "lost": sum(len(p.errors) for p in phases),
            "errors": [e for p in phases for e in p.errors][:5], "server_shutdown_rc": server.shutdown_rc}


def batch_ceiling(export_dir: Path, sizes=(1, 4, 8), repeats: int = 3, precision: str = "fp32") -> list[dict]:
    """What batching can give at all on this machine: bt_runtime in-process (no server), per-pair milliseconds of
    each stage for batches of independent pairs, best of `repeats`. Throughput with batching can exceed
    one-at-a-time by at most batch-1 time / best per-pair time."""
    from bt_runtime import BridgeTowerRuntime

    work = pairs(export_dir, max(sizes))
    rows = []
    with BridgeTowerRuntime.load(export_dir, precision=precision) as runtime:
        runtime.itm_pairs([work[0][0]], [work[0][1]])  # sessions created outside the timing
        for size in sizes:
            images, texts = [w[0] for w in work[:size]], [w[1] for w in work[:size]]
            best: dict[str, float] = {}
            for _ in range(repeats):
                times = {}
                start = time.perf_counter()
                pixels = np.stack([runtime.preprocess.pixel_values(image) for image in images])
                times["preprocess"] = time.perf_counter() - start
                start = time.perf_counter()
                image_features = runtime.encode_pixels(pixels)
                times["vision"] = time.perf_counter() - start
                start = time.perf_counter()
                text_features = runtime.encode_texts(texts)
                times["text"] = time.perf_counter() - start
                index = np.arange(size)
                start = time.perf_counter()
                runtime.match_probabilities(text_features, image_features, index, index, batch_size=size)
                times["cross_modal"] = time.perf_counter() - start
                best = {k: min(best.get(k, float("inf")), v) for k, v in times.items()}
            rows.append({"batch": size, **{f"{k}_ms_per_pair": v / size * 1e3 for k, v in best.items()},
                         "total_ms_per_pair": sum(best.values()) / size * 1e3})
    return rows


def markdown(report: dict) -> str:
    cpu = report["cpu"]
    lines = [f"# bt-serve load test: {Path(report['export']).name}",
             "",
             f"CPU: {cpu['model']}, {cpu['logical_cores']} logical cores, ISA flags: "
             f"{', '.join(cpu['flags']) or 'none of ' + 'avx2/avx512'}. Loopback, {report['protocol']}, "
             f"{report['seconds']:.0f} s per phase, max batch {report['max_batch']}, queue delay "
             f"{report['queue_delay_us']} µs, {report['precision']}, server Python {report['server_python']}.",
             "",
             "| phase | requests | lost | throughput (req/s) | p50 (ms) | p99 (ms) | batches formed (size: count) | "
             "mean batch |",
             "|---|---|---|---|---|---|---|---|"]
    for p in report["phases"]:
        batches = ", ".join(f"{k}: {v}" for k, v in p["batches"].items())
        lines.append(f"| {p['phase']} | {p['requests']} | {p['errors']} | {p['throughput_rps']:.2f} | "
                     f"{p['p50_ms']:.1f} | {p['p99_ms']:.1f} | {batches} | {p['mean_batch']:.2f} |")
    lines += ["", f"Throughput, concurrent / sequential: **{report['throughput_ratio']:.2f}×**. "
              f"Max |Δ probability| vs bt_runtime called directly: {report['max_abs_diff_vs_direct']:.1e}. "
              f"Requests lost: {report['lost']}. Server exit status after SIGTERM: {report['server_shutdown_rc']}."]
    if report.get("ceiling"):
        first = report["ceiling"][0]["total_ms_per_pair"]
        lines += ["", "What batching can give here at all (bt_runtime in-process, no server; best of 3; ms per pair):",
                  "", "| batch | preprocess | vision tower | text tower | cross-modal | total | ceiling vs batch 1 |",
                  "|---|---|---|---|---|---|---|"]
        for row in report["ceiling"]:
            lines.append(f"| {row['batch']} | {row['preprocess_ms_per_pair']:.0f} | {row['vision_ms_per_pair']:.0f} | "
                         f"{row['text_ms_per_pair']:.0f} | {row['cross_modal_ms_per_pair']:.0f} | "
                         f"{row['total_ms_per_pair']:.0f} | {first / row['total_ms_per_pair']:.2f}× |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--max-requests", type=int, default=100000, help="per phase")
    parser.add_argument("--server-python", default=sys.executable)
    parser.add_argument("--protocol", choices=c.PROTOCOLS, default="grpc")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--queue-delay-us", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--spinning", default="off", help="bt-serve --spinning (off, per-run, on)")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--ceiling", action="store_true", help="also measure per-pair time at batch 1/4/8 in-process")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    report = load_test(args.export, args.concurrency, args.seconds, args.server_python, args.max_requests,
                       args.protocol, args.max_batch, args.queue_delay_us, args.threads, args.precision, args.instances,
                       log=lambda m: print(m, file=sys.stderr), spinning=args.spinning)
    if args.ceiling:
        report["ceiling"] = batch_ceiling(args.export, precision=args.precision)
    emit(report, markdown(report), args.json, args.markdown)
    return 0 if report["lost"] == 0 else 1


def emit(report: dict, text: str, json_path: Path | None, markdown_path: Path | None) -> None:
    """Print the markdown; write the JSON report and the markdown where asked."""
    print(text)
    if json_path:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    if markdown_path:
        markdown_path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
