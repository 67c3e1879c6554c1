"""Machine and library facts recorded with every report, and this machine's own matmul rate, measured in the run
(never a hard-coded peak)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from pathlib import Path

CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def cpu_info() -> dict:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"model": model, "logical_cores": os.cpu_count(), "flags": [f for f in CPU_FLAGS if f in flags]}


def load_average() -> list[float] | None:
    """1/5/15-minute load averages: above the core count, other processes shared the CPU while it was measured."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def gpu_info() -> dict | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    properties = torch.cuda.get_device_properties(0)
    return {"name": properties.name, "memory_gib": round(properties.total_memory / 2**30, 1),
            "compute_capability": f"{properties.major}.{properties.minor}"}


def versions() -> dict:
    found = {"python": platform.python_version()}
    for package in ("bt-toolkit", "numpy", "onnxruntime", "torch", "transformers", "tensorrt"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found


def matmul_gflops(size: int = 2048, repeats: int = 5) -> dict:
    """Best-of-`repeats` fp32 square matmul rate of this machine, with torch (what eager uses) and NumPy."""
    import numpy as np

    rates = {}
    a = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    rates["numpy_fp32"] = _best_rate(lambda: a @ a, size, repeats)
    try:
        import torch

        t = torch.from_numpy(a)
        rates["torch_fp32"] = _best_rate(lambda: t @ t, size, repeats)
    except ImportError:
        pass
    rates["best_fp32"] = max(rates.values())
    return rates


def _best_rate(multiply, size: int, repeats: int) -> float:
    multiply()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        multiply()
        best = min(best, time.perf_counter() - started)
    return 2.0 * size**3 / best / 1e9


def thread_settings() -> dict:
    settings = {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    try:
        import torch

        settings["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return settings
