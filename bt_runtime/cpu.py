"""The CPU's instruction-set class, as ONNX Runtime's int8 kernels see it (torch-free, /proc/cpuinfo).

ONNX Runtime picks its integer matmul kernels by instruction set: VNNI (AVX-512 or AVX) accumulates u8×s8 products
in 32 bits, plain AVX2/AVX-512 use pmaddubsw, whose 16-bit pair sums can saturate. An int8 variant records the
class it was validated on (`variants.int8.validated_isa`) and the runtime warns when it runs on another class.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path


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
