"""Interleaved timing: warm up, then run every case once per round, rotating the order each round, so machine
drift (thermal, other load) hits all cases alike. Summaries from per-iteration samples."""

from __future__ import annotations

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


def interleave(cases: list[Case], runs: int, warmup: int, on_round: Callable[[int], None] | None = None) -> None:
    """Fill each case's samples: `warmup` untimed rounds, then `runs` timed rounds, order rotated each round."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be ≥ 1 and warmup ≥ 0, got runs={runs}, warmup={warmup}")
    for round_index in range(warmup + runs):
        shift = round_index % len(cases)
        for case in cases[shift:] + cases[:shift]:
            started = time.perf_counter()
            case.output = case.run()
            elapsed = time.perf_counter() - started
            if round_index >= warmup:
                case.samples.append(elapsed)
        if on_round:
            on_round(round_index)


def summarize(samples: list[float]) -> dict[str, float]:
    """Latency percentiles in milliseconds (linear interpolation, as numpy.percentile)."""
    values = np.asarray(samples, dtype=np.float64) * 1000.0
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "mean_ms": float(values.mean()),
            "min_ms": float(values.min()), "runs": int(values.size)}
