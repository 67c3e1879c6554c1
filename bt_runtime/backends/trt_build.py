"""Build one TensorRT engine per graph from an export's portable ONNX graphs (`--attention onnx`).

Written against TensorRT's official Python API, 10.x and 11.x, chosen at run time from `trt.__version__`:
- TensorRT 10: the fp32 graph with builder flags (fp16: BuilderFlag.FP16, bf16: BuilderFlag.BF16), or fp32.
- TensorRT 11 removed the FP16/INT8 builder flags: networks are strongly typed, so fp16 parses the export's fp16
  ONNX variant and fp32 the fp32 one (bf16 would need a bf16 variant, which bt-export does not write).
One optimization profile per engine from the manifest's symbolic axes (bt_runtime.backends.trt_profiles); a timing
cache file reused across builds; a workspace limit. Engines and the manifest's `tensorrt` section (TensorRT
version, GPU name and compute capability, profiles, precision, sha256 of each engine) are written atomically.

Lives in bt_runtime (no torch, no onnx): engines are built on the machine that runs them (`bt-run build-engines
EXPORT`, the one builder).

Nothing here was run on this project's machines: TensorRT cannot be installed on them. The CPU-side parts
(profiles, manifest, version checks) are tested; the build itself runs where `tensorrt` imports and a GPU exists.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import BackendError, BackendInputError
from ..integrity import sha256_file
from ..manifest import EngineFile, TensorRTEngines, read_manifest, write_manifest
from .tensorrt import gpu_identity
from .trt_profiles import input_shapes, profile_ranges

TRT_PRECISIONS = ("fp16", "bf16", "fp32")


def trt_major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError as err:
        raise BackendError(f"unrecognized TensorRT version {version!r}") from err


def build_plan(manifest, precision: str, trt_version: str) -> dict[str, dict]:
    """Which ONNX file and which builder settings each engine uses, for this TensorRT version (pure logic)."""
    if precision not in TRT_PRECISIONS:
        raise BackendInputError(f"TensorRT precision {precision!r}; valid: {list(TRT_PRECISIONS)}")
    major = trt_major(trt_version)
    if major < 10:
        raise BackendError(f"TensorRT {trt_version} is too old: the graphs use ONNX Attention (TensorRT ≥ 10.14)")
    variants = manifest.variants
    if "fp32" not in variants or variants["fp32"].attention != "onnx":
        raise BackendInputError("TensorRT engines need the portable graphs: re-export with --attention onnx")
    strongly_typed = major >= 11
    source = precision if strongly_typed and precision != "fp32" else "fp32"
    if source not in variants:
        raise BackendInputError(f"TensorRT {trt_version} builds {precision} from the {source} ONNX variant, which this "
                            f"export lacks; re-export with --precision fp32,{source}" if source != "bf16" else
                            f"TensorRT {trt_version} (strongly typed) needs a bf16 ONNX variant, which bt-export "
                            "does not write; use --precision fp16")
    flags = [] if strongly_typed or precision == "fp32" else [precision.upper()]
    return {graph: {"onnx": variants[source].files[graph].file, "strongly_typed": strongly_typed,
                    "builder_flags": flags, "engine": f"{graph}.{precision}.engine"} for graph in manifest.graphs}


def build_engines(export_dir: str | Path, precision: str = "fp16", batch: tuple[int, int, int] = (1, 8, 32),
                  seq: tuple[int, int, int] = (8, 40, 512), workspace_gib: float | None = None,
                  timing_cache: str | Path | None = None, log=lambda message: None) -> TensorRTEngines:
    """Build the three engines into `export_dir` and record them in its manifest; returns the `tensorrt` section."""
    try:
        import tensorrt as trt
    except ImportError as err:
        raise BackendError("building engines needs TensorRT (pip install 'bt-toolkit[trt]' on a machine with an "
                           "NVIDIA GPU); "
                            "`bt-export --trt-check` runs the compatibility lint without it") from err
    export_dir = Path(export_dir)
    manifest = read_manifest(export_dir)
    plan = build_plan(manifest, precision, trt.__version__)
    ranges = profile_ranges(batch, seq, max_seq=manifest.config.max_text_length)
    try:
        gpu = gpu_identity()
    except ValueError as err:
        raise BackendError(str(err)) from err
    cache_path = Path(timing_cache) if timing_cache else export_dir / "tensorrt.timing_cache"
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    engines = {}
    for graph, step in plan.items():
        log(f"building {step['engine']} from {step['onnx']} (TensorRT {trt.__version__})")
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if step["strongly_typed"] else 0
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(export_dir / step["onnx"])):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendError(f"TensorRT could not parse {step['onnx']}: {errors}")
        config = builder.create_builder_config()
        if workspace_gib:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
        for flag in step["builder_flags"]:
            config.set_flag(getattr(trt.BuilderFlag, flag))
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in input_shapes(manifest.graph_io(graph), ranges).items():
            profile.set_shape(name, low, opt, high)
        config.add_optimization_profile(profile)
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendError(f"TensorRT failed to build {step['engine']} (see the TensorRT log above)")
        partial = export_dir / f".{step['engine']}.partial"
        partial.write_bytes(bytes(serialized))
        os.replace(partial, export_dir / step["engine"])
        cache_partial = cache_path.with_name(cache_path.name + ".partial")
        cache_partial.write_bytes(bytes(config.get_timing_cache().serialize()))
        os.replace(cache_partial, cache_path)
        engines[graph] = EngineFile(file=step["engine"], sha256=sha256_file(export_dir / step["engine"]),
                                    onnx=step["onnx"])
    section = TensorRTEngines(
        version=trt.__version__, gpu=gpu["name"], compute_capability=gpu["compute_capability"], precision=precision,
        strongly_typed=plan["vision_tower"]["strongly_typed"], profiles={axis: list(r) for axis, r in ranges.items()},
        workspace_gib=workspace_gib,
        timing_cache=cache_path.name if cache_path.parent == export_dir else str(cache_path), engines=engines)
    write_tensorrt_section(export_dir, precision, section)
    return section


def write_tensorrt_section(export_dir: Path, precision: str, section: TensorRTEngines) -> None:
    """Record engines under the manifest's `tensorrt`[precision], replacing manifest.json atomically."""
    manifest = read_manifest(export_dir)
    manifest.tensorrt[precision] = section
    write_manifest(export_dir, manifest)
