"""Checks shared by every backend: feeds against the manifest's input specs, outputs for non-finite values."""

from __future__ import annotations

import numpy as np

from ..errors import BackendError


def check_feeds(graph: str, specs: list[dict], feeds: dict[str, np.ndarray]) -> None:
    """Names, dtypes, ranks, fixed dims, and one size per symbolic axis; the error names the tensor."""
    expected = [s["name"] for s in specs]
    if sorted(feeds) != sorted(expected):
        raise BackendError(f"{graph}: inputs {sorted(feeds)} given; expected exactly {expected}")
    sizes: dict[str, tuple[int, str]] = {}
    for spec in specs:
        name, array = spec["name"], feeds[spec["name"]]
        if not isinstance(array, np.ndarray) or array.dtype != np.dtype(spec["dtype"]):
            got = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
            raise BackendError(f"{graph}: input {name!r} has dtype {got}; expected {spec['dtype']}")
        if array.ndim != len(spec["shape"]):
            raise BackendError(f"{graph}: input {name!r} has shape {array.shape}; expected {spec['shape']}")
        for axis, (size, dim) in enumerate(zip(array.shape, spec["shape"])):
            if isinstance(dim, int) and size != dim:
                raise BackendError(f"{graph}: input {name!r} has shape {array.shape}; expected {spec['shape']} "
                                   f"(axis {axis} must be {dim})")
            if isinstance(dim, str):
                if size == 0:
                    raise BackendError(f"{graph}: input {name!r} has an empty axis {dim!r} (shape {array.shape})")
                seen = sizes.setdefault(dim, (size, name))
                if seen[0] != size:
                    raise BackendError(f"{graph}: axis {dim!r} is {size} in {name!r} but {seen[0]} in {seen[1]!r}")


def check_outputs(graph: str, outputs: dict[str, np.ndarray]) -> None:
    for name, array in outputs.items():
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise BackendError(f"{graph}: output {name!r} contains NaN or Inf; the inputs may be out of range or "
                               "the graph damaged")
