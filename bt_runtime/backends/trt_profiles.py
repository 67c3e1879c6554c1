"""TensorRT optimization profiles from the manifest's symbolic axes, and ONNX Runtime TensorRT-EP options.

Pure Python (no TensorRT): the engine builder (bt_runtime.backends.trt_build), the ONNX Runtime TensorRT execution
provider route and the tests all use these. A profile gives each dynamic axis a (min, opt, max) range; every input
shape in the manifest is resolved against it.
"""

from __future__ import annotations

from ..errors import BackendInputError

# batch 1/8/32, text length 8/40/512 (capped by the model), one image scored against up to `batch` texts
DEFAULT_PROFILE_AXES = {"batch": (1, 8, 32), "seq": (8, 40, 512), "image_batch": (1, 1, 32)}


def parse_triple(text: str, option: str) -> tuple[int, int, int]:
    """A command-line "min,opt,max" → three integers 1 ≤ min ≤ opt ≤ max; errors name the option."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not 1 <= values[0] <= values[1] <= values[2]:
        raise BackendInputError(f"{option} {text!r}: expected min,opt,max (three integers, 1 ≤ min ≤ opt ≤ max)")
    return values


def profile_ranges(batch: tuple[int, int, int] = DEFAULT_PROFILE_AXES["batch"],
                   seq: tuple[int, int, int] = DEFAULT_PROFILE_AXES["seq"],
                   max_seq: int | None = None) -> dict[str, tuple[int, int, int]]:
    """(min, opt, max) per symbolic axis. seq is capped at the model's `max_seq`; image_batch spans 1..batch max."""
    ranges = {"batch": tuple(batch), "seq": tuple(seq)}
    if max_seq is not None:
        low, opt, high = ranges["seq"]
        ranges["seq"] = (min(low, max_seq), min(opt, max_seq), min(high, max_seq))
    for axis, values in ranges.items():
        integers = len(values) == 3 and all(isinstance(v, int) for v in values)
        if not integers or not 1 <= values[0] <= values[1] <= values[2]:
            raise BackendInputError(f"profile {axis}={values}: need three integers 1 ≤ min ≤ opt ≤ max")
    ranges["image_batch"] = (1, 1, ranges["batch"][2])
    return ranges


def input_shapes(graph_io, ranges: dict[str, tuple[int, int, int]]) -> dict[str, tuple[tuple, tuple, tuple]]:
    """Each input of a graph → (min_shape, opt_shape, max_shape), symbolic axes replaced from `ranges`."""
    shapes = {}
    for tensor in graph_io.inputs:
        resolved = []
        for dim in tensor.shape:
            if isinstance(dim, int):
                resolved.append((dim, dim, dim))
            elif dim in ranges:
                resolved.append(ranges[dim])
            else:
                raise BackendInputError(f"input {tensor.name!r}: axis {dim!r} has no profile range "
                                   f"(ranges given for {sorted(ranges)})")
        shapes[tensor.name] = tuple(tuple(r[i] for r in resolved) for i in range(3))
    return shapes


def check_shape_in_profile(name: str, shape: tuple, profile: tuple[tuple, tuple, tuple]) -> None:
    low, _, high = profile
    if len(shape) != len(low) or any(not lo <= s <= hi for s, lo, hi in zip(shape, low, high, strict=True)):
        raise BackendInputError(f"input {name!r} of shape {tuple(shape)} is outside the engine's optimization profile "
                           f"(min {low}, max {high}); rebuild the engines with wider --batch/--seq ranges "
                           "(bt-run build-engines)")


def _shape_string(shapes: dict[str, tuple[tuple, tuple, tuple]], index: int) -> str:
    return ",".join(f"{name}:{'x'.join(str(d) for d in triple[index])}" for name, triple in shapes.items())


def ort_tensorrt_options(graph_io, ranges: dict[str, tuple[int, int, int]], cache_dir: str,
                         fp16: bool = True) -> dict[str, str]:
    """Provider options for ONNX Runtime's TensorrtExecutionProvider for one graph: explicit profile shapes (so
    ONNX Runtime builds one engine for the whole range) and an engine + timing cache directory."""
    shapes = input_shapes(graph_io, ranges)
    return {
        "trt_profile_min_shapes": _shape_string(shapes, 0),
        "trt_profile_opt_shapes": _shape_string(shapes, 1),
        "trt_profile_max_shapes": _shape_string(shapes, 2),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": cache_dir,
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": cache_dir,
        "trt_fp16_enable": "True" if fp16 else "False",
    }
