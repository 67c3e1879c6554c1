"""Checks shared by every backend: feeds against the manifest's input specs, outputs for non-finite values."""

from __future__ import annotations

import numpy as np

from ..errors import BackendError, BackendInputError


def check_feeds(graph: str, specs: list, feeds: dict[str, np.ndarray]) -> None:
    """Names, dtypes, ranks, fixed dims, and one size per symbolic axis; the error names the tensor."""
    expected = [s.name for s in specs]
    if sorted(feeds) != sorted(expected):
        raise BackendInputError(f"{graph}: inputs {sorted(feeds)} given; expected exactly {expected}")
    sizes: dict[str, tuple[int, str]] = {}
    for spec in specs:
        name, array = spec.name, feeds[spec.name]
        dtype, shape = _dtype_and_shape(array)
        if dtype != spec.dtype:
            raise BackendInputError(f"{graph}: input {name!r} has dtype {dtype}; expected {spec.dtype}")
        if len(shape) != len(spec.shape):
            raise BackendInputError(f"{graph}: input {name!r} has shape {shape}; expected {spec.shape}")
        for axis, (size, dim) in enumerate(zip(shape, spec.shape, strict=True)):
            if isinstance(dim, int) and size != dim:
                raise BackendInputError(f"{graph}: input {name!r} has shape {shape}; expected {spec.shape} "
                                   f"(axis {axis} must be {dim})")
            if isinstance(dim, str):
                if size == 0:
                    raise BackendInputError(f"{graph}: input {name!r} has an empty axis {dim!r} (shape {shape})")
                seen = sizes.setdefault(dim, (size, name))
                if seen[0] != size:
                    raise BackendInputError(f"{graph}: axis {dim!r} is {size} in {name!r} but {seen[0]} in {seen[1]!r}")


_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
              "tensor(int32)": "int32"}


def _dtype_and_shape(value) -> tuple[str, tuple]:
    """A NumPy array's, or an ONNX Runtime OrtValue's (a device tensor fed through IOBinding), dtype and shape."""
    if isinstance(value, np.ndarray):
        return value.dtype.name, value.shape
    if hasattr(value, "data_type") and hasattr(value, "shape"):
        return _ORT_TYPES.get(value.data_type(), value.data_type()), tuple(value.shape())
    return type(value).__name__, ()


def check_outputs(graph: str, outputs: dict[str, np.ndarray]) -> None:
    for name, array in outputs.items():
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise BackendError(f"{graph}: output {name!r} contains NaN or Inf; the inputs may be out of range or "
                               "the graph damaged")


def check_declared(graph: str, file: str, io, session) -> None:
    """The manifest's inputs/outputs of `graph` against what the ONNX Runtime session of its file declares (names,
    dtypes, ranks, fixed dims): a manifest edited after export is a one-line error naming the field, not ONNX
    Runtime's InvalidArgument mid-run. Symbolic dims are not compared (exporters name them freely)."""
    from ..errors import ManifestError

    for kind, specs, declared in (("inputs", io.inputs, session.get_inputs()), ("outputs", io.outputs,
                                                                             session.get_outputs())):
        actual = {d.name: d for d in declared}
        if sorted(actual) != sorted(s.name for s in specs):
            raise ManifestError(f"manifest.graphs.{graph}.{kind}: {sorted(s.name for s in specs)}; {file} declares "
                                f"{sorted(actual)} (the manifest does not describe this graph: re-export)")
        for spec in specs:
            node = actual[spec.name]
            dtype = _ORT_TYPES.get(node.type, node.type)
            fixed = [d if isinstance(d, int) else None for d in node.shape]
            wanted = [d if isinstance(d, int) else None for d in spec.shape]
            if dtype != spec.dtype or len(fixed) != len(wanted) or any(
                    a is not None and b is not None and a != b for a, b in zip(fixed, wanted, strict=True)):
                raise ManifestError(f"manifest.graphs.{graph}.{kind}.{spec.name}: {spec.dtype} {spec.shape}; {file} "
                                    f"declares {dtype} {list(node.shape)} (re-export)")
