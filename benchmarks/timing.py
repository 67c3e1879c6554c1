"""Interleaved timing: warm up, then run every case once per round, in a new order each round, so machine drift
(thermal, other load) hits all cases alike. Summaries from per-iteration samples.

The order is a seeded shuffle, not a rotation: a rotation keeps every case behind the same neighbour in every round,
and a backend that leaves threads spinning or caches cold after its call (eager PyTorch's OpenMP pool, ONNX
Runtime's spinning intra-op pool) would then tax the same next case every time. A pause before each call
(`settle_s`) lets such threads stop first: ONNX Runtime's pool spins up to 2**20 pause instructions after a run
(tens of ms) unless told otherwise, and a user's process running one backend never pays that on the next call."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Case:
    name: str  # backend label, e.g. "torch", "onnxruntime:int8"
    run: Callable[[], object]  # one timed call; returns the outputs checked for agreement
    work: int = 1  # items one call processes (pairs, images, texts)
    samples: list[float] = field(default_factory=list)  # seconds per call, after warm-up
    output: object = None  # the last call's output


def interleave(cases: list[Case], runs: int, warmup: int, on_round: Callable[[int], None] | None = None,
               settle_s: float = 0.0) -> None:
    """Fill each case's samples: `warmup` untimed rounds, then `runs` timed rounds, each round in its own order
    (`round_order`), with `settle_s` of sleep before every call."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be ≥ 1 and warmup ≥ 0, got runs={runs}, warmup={warmup}")
    for round_index in range(warmup + runs):
        for case in round_order(cases, round_index):
            if settle_s:
                time.sleep(settle_s)
            started = time.perf_counter()
            case.output = case.run()
            elapsed = time.perf_counter() - started
            if round_index >= warmup:
                case.samples.append(elapsed)
        if on_round:
            on_round(round_index)


def round_order(cases: list, round_index: int) -> list:
    """Round `round_index`'s order: a shuffle seeded by the round, so reruns repeat it and neighbours vary."""
    order = list(cases)
    random.Random(round_index).shuffle(order)
    return order


def summarize(samples: list[float]) -> dict[str, float]:
    """Latency percentiles in milliseconds (linear interpolation, as numpy.percentile)."""
    values = np.asarray(samples, dtype=np.float64) * 1000.0
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "mean_ms": float(values.mean()),
            "min_ms": float(values.min()), "runs": int(values.size)}
