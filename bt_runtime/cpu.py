"""The CPU's instruction-set class, as ONNX Runtime's int8 kernels see it (torch-free, /proc/cpuinfo).

ONNX Runtime picks its integer matmul kernels by instruction set: AMX tiles and VNNI (AVX-512 or AVX) accumulate
u8×s8 products in 32 bits; plain AVX2/AVX-512 use pmaddubsw, whose 16-bit pair sums can saturate with s8 weights.
So the int8 recipe (weight type, which graphs) is chosen per `cpu_class` (docs/int8.md); an int8 variant also
records the finer `isa_class` its parity was validated on (`variants.int8.validated_isa`).
"""

from __future__ import annotations

import functools
import platform
import typing
from pathlib import Path
from typing import Literal

# amx: AMX-INT8 tiles (Sapphire Rapids and later); avx512-vnni / avx-vnni: VNNI dot products; avx2: AVX2 or AVX-512
# without VNNI (pmaddubsw, saturating int16 pair sums); other: no x86 int8 SIMD ONNX Runtime uses (arm64, …)
CpuClass = Literal["amx", "avx512-vnni", "avx-vnni", "avx2", "other"]
CPU_CLASSES: tuple[str, ...] = typing.get_args(CpuClass)


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def isa_class(flags: frozenset[str] | None = None) -> str:
    """avx512-vnni, avx-vnni, avx512, avx2, or the machine name (arm64, …) where none applies."""
    flags = cpu_flags() if flags is None else flags
    if "avx512_vnni" in flags:
        return "avx512-vnni"
    if "avx_vnni" in flags:
        return "avx-vnni"
    if "avx512f" in flags or "avx512bw" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return platform.machine() or "unknown"


def cpu_class(flags: frozenset[str] | None = None) -> str:
    """The int8 recipe class of a CPU with these /proc/cpuinfo flags (default: this machine's): one of CPU_CLASSES."""
    flags = cpu_flags() if flags is None else frozenset(flags)
    if {"amx_tile", "amx_int8"} <= flags:
        return "amx"
    if "avx512_vnni" in flags:
        return "avx512-vnni"
    if "avx_vnni" in flags:
        return "avx-vnni"
    if "avx2" in flags:  # AVX-512F/BW without VNNI multiplies like AVX2 (pmaddubsw)
        return "avx2"
    return "other"
