"""Hostile-client load test for bt-serve on loopback (issue 22): N good `itm` clients alone, then the same N with one
hostile client cycling inputs that must fail only themselves (images Pillow cannot convert or must not decode,
a 64 MB text, an 81 Mpx image, an encoded image above --max-image-bytes). Every good answer is compared with
bt_runtime called directly; p50/p99 of good requests per phase; the server's resident memory (bt-serve, tritonserver
and the Python backend stubs together) sampled every 0.2 s. Torch-free; starts the server itself.

    python -m benchmarks.serve_hostile EXPORT --good-clients 7 --seconds 20 --server-python .venv-serve/bin/python
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

from bt_serve import client as c

from .machine import cpu_info
from .serve_load import Phase, emit, pairs, run_phase, serving

RSS_INTERVAL_S = 0.2


def associated_alpha_tiff(gray: int, alpha: int, size: int = 16) -> bytes:
    """A grayscale TIFF with associated (premultiplied) alpha: Pillow decodes it as mode 'La' but cannot write one,
    so write LA (unassociated, ExtraSamples=2) premultiplied by hand and flip that tag to 1."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("LA", (size, size), (round(gray * alpha / 255), alpha)).save(buffer, "TIFF")
    data = buffer.getvalue()
    entry = (338).to_bytes(2, "little") + (3).to_bytes(2, "little") + (1).to_bytes(4, "little")  # SHORT × 1
    at = data.index(entry) + len(entry)
    return data[:at] + (1).to_bytes(2, "little") + data[at + 2:]


def hostile_payloads(image: bytes, text_mb: int = 64, max_image_bytes: int = 32 * 2**20) -> list[tuple[str, bytes,
                                                                                                     bytes]]:
    """(kind, image bytes, text bytes) the hostile client cycles; each must be refused as that request's error,
    except the associated-alpha TIFF, which is answered (it converts) — it used to fail whole batches."""
    from PIL import Image

    def encoded(pil, fmt, **kwargs) -> bytes:
        buffer = io.BytesIO()
        pil.save(buffer, fmt, **kwargs)
        return buffer.getvalue()

    rng = np.random.default_rng(0)
    return [
        ("associated-alpha TIFF (La)", associated_alpha_tiff(200, 128, 64), b"a cat"),
        ("16-bit grayscale PNG (I;16)", encoded(Image.new("I;16", (64, 64), 300), "PNG"), b"a cat"),
        ("EPS (not allow-listed)", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nshowpage\n", b"a cat"),
        ("garbage bytes", rng.bytes(4096), b"a cat"),
        (f"{text_mb} MB text", image, b"a" * (text_mb * 2**20)),
        ("81 Mpx PNG", encoded(Image.new("1", (9000, 9000)), "PNG"), b"a cat"),
        (f"{(max_image_bytes + 2**20) // 2**20} MiB encoded image",
         image + rng.bytes(max_image_bytes + 2**20 - len(image)), b"a cat"),
    ]


def process_tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        stack += children.get(current, [])
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class RssSampler:
    """Peak resident memory of a process tree while active (a bounded daemon thread)."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, process_tree_rss(self.pid))
            self._stop.wait(RSS_INTERVAL_S)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)


def run_hostile(payloads, host: str, port: int, stop: threading.Event, max_requests: int, outcomes: list) -> None:
    """Cycle `payloads` over gRPC until `stop` (but at least once through) or `max_requests`; record (kind,
    refused?, seconds, message)."""
    from tritonclient.utils import InferenceServerException

    module, client = c.connect("grpc", host, port)
    # serialized once: on a small machine the client's own copying of 64 MB would otherwise compete with the server
    inputs = [[c.bytes_input(module, "image", [image]), c.bytes_input(module, "text", [text])]
              for _, image, text in payloads]
    try:
        for k in range(max_requests):
            if stop.is_set() and k >= len(payloads):  # every kind at least once, even in a short phase
                return
            kind = payloads[k % len(payloads)][0]
            start = time.perf_counter()
            try:
                result = client.infer("itm", inputs[k % len(payloads)])
                message = result.as_numpy("error").reshape(-1)[0].decode("utf-8")
            except InferenceServerException as err:  # a Triton error response: the answer to a lone bad request
                message = str(err) or type(err).__name__
            outcomes.append((kind, bool(message), time.perf_counter() - start, message[:160]))
    finally:
        client.close()


def _attack(payloads, host: str, port: int, max_requests: int, ready, stop, results, nice: int) -> None:
    outcomes: list = []
    os.nice(nice)
    try:
        ready.set()
        run_hostile(payloads, host, port, stop, max_requests, outcomes)
    finally:
        results.put(outcomes)


class Attacker:
    """run_hostile in its own process, as a real attacker is: in a thread of the measuring process, its gRPC
    serialization of each 64 MB body held the GIL that the good clients' threads (and their timers) need, so the
    harness charged the attacker's own client work to the server. `with Attacker(...) as outcomes:` attacks while
    the block runs; `outcomes` is filled when the block ends."""

    def __init__(self, payloads, host: str, port: int, max_requests: int, nice: int = 0):
        context = multiprocessing.get_context("spawn")  # no fork of a process with live gRPC threads
        self.ready, self.stop, self.results = context.Event(), context.Event(), context.Queue()
        self.process = context.Process(target=_attack, args=(payloads, host, port, max_requests, self.ready,
                                                              self.stop, self.results, nice), daemon=True)
        self.outcomes: list = []

    def __enter__(self) -> list:
        self.process.start()
        if not self.ready.wait(timeout=120):
            raise RuntimeError("the hostile client process did not start within 120 s")
        return self.outcomes

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.outcomes += self.results.get(timeout=600)  # before join: a full pipe would block the child's exit
        self.process.join(timeout=60)


def hostile_test(export_dir: Path, server_python: str, good_clients: int = 7, seconds: float = 20.0,
                 max_requests: int = 100000, max_hostile: int = 1000, text_mb: int = 64,
                 server_options: tuple[str, ...] = (), log=print, rounds: int = 1, hostile_nice: int = 0) -> dict:
    from bt_runtime import BridgeTowerRuntime

    work = pairs(export_dir, 16)
    payloads = hostile_payloads(work[0][0], text_mb)
    phases = [Phase(f"{good_clients} good clients", good_clients),
              Phase(f"{good_clients} good clients + 1 hostile", good_clients)]
    outcomes: list = []
    peaks = [0, 0]
    with serving(export_dir, server_python, *server_options) as server:
        idle_rss = process_tree_rss(server.process.pid)
        # Interleaved (without, with, without, with, …): on a shared machine whose load drifts, back-to-back
        # phases would compare two different machines (STYLE.md: benchmarks interleave the things compared)
        for round_ in range(rounds):
            for k, (phase, hostile) in enumerate(zip(phases, (False, True), strict=True)):
                log(f"{phase.name}: round {round_ + 1}/{rounds}, {seconds / rounds:.0f} s")
                with RssSampler(server.process.pid) as rss:
                    attacker = Attacker(payloads, server.host, server.grpc_port, max_hostile - len(outcomes),
                                        hostile_nice) if hostile else contextlib.nullcontext([])
                    with attacker as theirs:
                        run_phase(phase, work, server.host, server.grpc_port, seconds / rounds, max_requests, "grpc")
                    outcomes += theirs
                peaks[k] = max(peaks[k], rss.peak)
    with BridgeTowerRuntime.load(export_dir) as runtime:
        direct = runtime.itm_pairs([image for image, _ in work], [text for _, text in work])
    worst = max((abs(p - direct[i]) for phase in phases for i, p in phase.answers), default=float("nan"))
    summaries = [p.summary() for p in phases]
    for summary, peak in zip(summaries, peaks, strict=True):
        summary["peak_rss_mb"] = peak / 2**20
    kinds = {}
    for kind, refused, elapsed, message in outcomes:
        row = kinds.setdefault(kind, {"kind": kind, "sent": 0, "refused": 0, "max_s": 0.0, "message": message})
        row["sent"] += 1
        row["refused"] += refused
        row["max_s"] = max(row["max_s"], elapsed)
    return {"export": str(export_dir), "cpu": cpu_info(), "seconds": seconds, "rounds": rounds,
            "hostile_nice": hostile_nice,
            "good_clients": good_clients,
            "server_python": server_python, "server_options": list(server_options), "idle_rss_mb": idle_rss / 2**20,
            "phases": summaries,
            "p99_ratio": summaries[1]["p99_ms"] / summaries[0]["p99_ms"],
            "good_lost": sum(len(p.errors) for p in phases), "good_errors": [e for p in phases for e in p.errors][:5],
            "max_abs_diff_vs_direct": float(worst), "hostile": list(kinds.values()),
            "server_shutdown_rc": server.shutdown_rc}


def markdown(report: dict) -> str:
    cpu = report["cpu"]
    options = " ".join(report["server_options"]) or "defaults"
    lines = [f"# bt-serve with a hostile client: {Path(report['export']).name}", "",
             (f"CPU: {cpu['model']}, {cpu['logical_cores']} logical cores. Loopback gRPC, {report['seconds']:.0f} s "
              f"per phase in {report.get('rounds', 1)} interleaved round(s), hostile client in its own process at "
              f"nice {report.get('hostile_nice', 0)}, bt-serve {options}. Server RSS "
              "(bt-serve + tritonserver + stubs) idle: "
              f"{report['idle_rss_mb']:.0f} MB."), "",
             "| phase | good requests | good lost | p50 (ms) | p99 (ms) | peak server RSS (MB) |",
             "|---|---|---|---|---|---|"]
    for p in report["phases"]:
        lines.append(f"| {p['phase']} | {p['requests']} | {p['errors']} | {p['p50_ms']:.1f} | {p['p99_ms']:.1f} | "
                     f"{p['peak_rss_mb']:.0f} |")
    lines += ["", (f"Good p99 with / without the hostile client: **{report['p99_ratio']:.2f}×**. Max |Δ probability| "
                   f"of good answers vs bt_runtime: {report['max_abs_diff_vs_direct']:.1e}. Good requests lost: "
                   f"{report['good_lost']}."), "", "| hostile input | sent | refused | slowest (s) | answer |",
              "|---|---|---|---|---|"]
    for row in report["hostile"]:
        lines.append(f"| {row['kind']} | {row['sent']} | {row['refused']} | {row['max_s']:.2f} | "
                     f"{row['message'].replace('|', '/') or '(answered)'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path)
    for flag, kind, default, meaning in (
            ("--good-clients", int, 7, "concurrent good itm clients"),
            ("--seconds", float, 20.0, "per phase"),
            ("--max-requests", int, 100000, "good requests per phase"),
            ("--max-hostile", int, 1000, "hostile requests in all"),
            ("--text-mb", int, 64, "size of the hostile text"),
            ("--rounds", int, 1, "alternate the two phases this many times (seconds split between rounds)"),
            ("--hostile-nice", int, 0, "niceness of the hostile client's process (on one machine: its own client "
                                       "CPU yields to the server's, as a remote attacker's would not be here)"),
            ("--server-python", str, sys.executable, "a Python with nvidia-pytriton"),
            ("--json", Path, None, "write the report here"),
            ("--markdown", Path, None, "write the markdown here")):
        parser.add_argument(flag, type=kind, default=default, help=meaning)
    parser.add_argument("--server-option", action="append", default=[], help="passed to bt-serve (repeat)")
    args = parser.parse_args(argv)
    report = hostile_test(args.export, args.server_python, args.good_clients, args.seconds, args.max_requests,
                          args.max_hostile, args.text_mb, tuple(args.server_option),
                          log=lambda m: print(m, file=sys.stderr), rounds=args.rounds, hostile_nice=args.hostile_nice)
    emit(report, markdown(report), args.json, args.markdown)
    return 0 if report["good_lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
