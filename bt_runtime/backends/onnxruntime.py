"""ONNX Runtime backend: one lazily created session per graph, named and checked by the manifest.

On CPU (CPUExecutionProvider) or CUDA (`device="cuda[:N]"`: CUDAExecutionProvider, then CPU for what it lacks).
On CUDA, `run_bound` uses IOBinding: outputs named in `keep` stay on the GPU as OrtValues and can be fed to the next
graph without a host round trip (the vision tower's image_bridge of one image feeds the cross-modal graph for all
texts). fp32 graphs run with TF32 off, so CUDA fp32 stays within the fp32 parity bounds.
"""

from __future__ import annotations

import logging
import threading
import warnings

import numpy as np

from ..cpu import cpu_class, isa_class
from ..errors import BackendError, BackendInputError, first_line
from ..integrity import CHANGED_FILE_REMEDY, verify_sha256
from ..manifest import Manifest
from ..onnx_refs import check_external_data
from .base import Backend, OnnxRuntimeOptions
from .feeds import check_declared, check_feeds, check_outputs

LOG = logging.getLogger("bt_runtime")
SAFE_RECIPE = "safe"  # the int8 variant's own files (docs/int8.md)

OPTIMIZATION_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                       "all": "ORT_ENABLE_ALL"}
# How intra-op threads wait. One session per graph means one thread pool per graph: a pool left spinning after its
# run holds the cores the next graph needs, and a pool that never spins wakes its threads through the OS between
# every two operators. "per-run" spins while a run executes and stops when it returns (session.force_spinning_stop,
# onnxruntime_session_options_config_keys.h). Full-size base pair, 2 cores, one process per setting: off 316.9 →
# per-run 307.5 ms fp32, 149.0 → 135.9 ms int8 (docs/int8.md, "Threads and fusions").
SPINNING = {"per-run": {"session.force_spinning_stop": "1"}, "off": {"session.intra_op.allow_spinning": "0"},
            "on": {}}
# ONNX Runtime's fused SkipLayerNormalization nodes took 12.5 ms of the pooled cross-modal graph's 120 on CPU; the
# Add + LayerNormalization they replace take ~6 (onnxruntime 1.32): unfused, the pair runs 317.5 → 307.5 ms fp32 and
# 146.5 → 135.9 ms int8 (docs/int8.md, "Threads and fusions"). CUDA sessions keep the fusion.
CPU_DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]


def check_spinning(spinning: str) -> None:
    if spinning not in SPINNING:
        raise BackendInputError(f"spinning {spinning!r}; valid: {list(SPINNING)} (per-run: spin while a graph runs, "
                                f"stop when it returns)")


def session_options(spinning: str = "per-run", intra_op_threads: int | None = None,
                    graph_optimization_level: str = "all", prepack_weights: bool = True):
    """The runtime's onnxruntime.SessionOptions; export-time checks (parity, the int8 search and recipe timing)
    use the same, so what they measure is what the runtime runs."""
    import onnxruntime as ort

    check_spinning(spinning)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                               OPTIMIZATION_LEVELS[graph_optimization_level])
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    for key, value in SPINNING[spinning].items():
        options.add_session_config_entry(key, value)
    if not prepack_weights:
        # MLAS keeps a second, repacked copy of each MatMul weight: measured +100 MB on the base vision tower
        # (346 MB of weights); without it the full-size pair runs 13% slower (docs/runtime.md)
        options.add_session_config_entry("session.disable_prepacking", "1")
    return options


def cpu_session(path, **options):
    """A CPUExecutionProvider session with the runtime's options (keywords: those of `session_options`)."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), session_options(**options), providers=["CPUExecutionProvider"],
                                disabled_optimizers=CPU_DISABLED_OPTIMIZERS)


# What to check when ONNX Runtime starts a session on a provider other than the one asked for (docs/gpu.md)
PROVIDER_FIXES = {
    "CUDAExecutionProvider": "its CUDA/cuDNN libraries did not load (with CUDA from pip's nvidia-* packages, call "
                             "onnxruntime.preload_dlls() before loading; the wheel's CUDA major must match)",
    "TensorrtExecutionProvider": "the TensorRT libraries (libnvinfer) did not load: they must be on the loader path "
                                 "(docs/tensorrt.md)",
}
DEVICE_OF = {"CPUExecutionProvider": "device='cpu'", "CUDAExecutionProvider": "device='cuda'"}


def _name(provider) -> str:
    """A provider's name, given as a name or as (name, options)."""
    return provider if isinstance(provider, str) else provider[0]


def parse_device(device: str) -> tuple[str, int]:
    """"cpu", "cuda" or "cuda:N" → (kind, index)."""
    kind, _, index = str(device).partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise BackendInputError(f"device {device!r}; valid: cpu, cuda, cuda:N")
    return kind, int(index or 0)


def cuda_options(precision: str, device_id: int = 0) -> dict[str, str]:
    """CUDAExecutionProvider options: fp32 sessions without TF32 (so they stay inside the fp32 parity bounds)."""
    return {"device_id": str(device_id), "arena_extend_strategy": "kSameAsRequested",
            "cudnn_conv_algo_search": "HEURISTIC", "do_copy_in_default_stream": "1",
            "use_tf32": "0" if precision == "fp32" else "1"}


def cuda_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


class OnnxRuntimeBackend(Backend):
    """One ONNX Runtime session per graph, created on its first run."""

    name = "onnxruntime"

    def __init__(self, manifest: Manifest, precision: str = "fp32", options: OnnxRuntimeOptions | None = None,
                 verify_checksums: bool = True):
        import onnxruntime as ort

        o = options or OnnxRuntimeOptions()
        available = ort.get_available_providers()
        kind, self.device_id = parse_device(o.device)
        providers = o.providers
        if kind == "cuda" and providers:
            raise BackendInputError("give either device='cuda' or providers=[…], not both")
        if kind == "cuda" and "CUDAExecutionProvider" not in available:
            warnings.warn(f"device {o.device!r} asked for, but this onnxruntime build has no CUDAExecutionProvider "
                          f"(available: {available}; install onnxruntime-gpu matching your CUDA): running on CPU",
                          RuntimeWarning, stacklevel=4)
            kind = "cpu"
        if kind == "cuda":
            providers = [("CUDAExecutionProvider", cuda_options(precision, self.device_id)), "CPUExecutionProvider"]
        providers = list(providers or ["CPUExecutionProvider"])
        unknown = [p for p in (p if isinstance(p, str) else p[0] for p in providers) if p not in available]
        if unknown:
            raise BackendInputError(f"providers: {unknown} not available in this onnxruntime build; available: "
                                    f"{available}")
        if o.graph_optimization_level not in OPTIMIZATION_LEVELS:
            raise BackendInputError(f"graph_optimization_level {o.graph_optimization_level!r}; valid: "
                                    f"{list(OPTIMIZATION_LEVELS)}")
        check_spinning(o.spinning)  # now, not at the first run
        if o.intra_op_threads is not None and o.intra_op_threads < 0:
            raise BackendInputError(f"intra_op_threads must be ≥ 0 (0 = onnxruntime's default), got "
                                    f"{o.intra_op_threads}")
        variant = manifest.variant(precision)  # names the available precisions (and why one was rejected)
        # sessions on the CPU provider: int8 recipe by CPU class, no SkipLayerNormalization fusion
        self.on_cpu = kind == "cpu" and _name(providers[0]) == "CPUExecutionProvider"
        if variant.validated_isa and self.on_cpu and variant.validated_isa != isa_class():
            _warn_isa_once(precision, variant.validated_isa, isa_class(), manifest.directory)
        super().__init__(manifest, precision, tuple(manifest.graphs), kind)
        self.options, self.providers, self.verify_checksums = o, providers, verify_checksums
        # int8_recipe: the recipe whose files run ("safe": the variant's own); int8_recipe_reason says why
        self.files, self.int8_recipe, self.int8_recipe_reason = choose_files(variant, o.int8_recipe, self.on_cpu)
        if precision == "int8":
            LOG.info(self.int8_recipe_reason)
        self._sessions: dict = {}
        self._locks = {graph: threading.Lock() for graph in self.graphs}  # one session per graph, even under threads

    def _providers_for(self, graph: str) -> list:
        """Providers as given; TensorrtExecutionProvider gets this graph's profile shapes and an engine cache."""
        if "TensorrtExecutionProvider" not in self.providers:
            return self.providers
        from .trt_profiles import ort_tensorrt_options, profile_ranges

        ranges = profile_ranges(**(self.options.tensorrt_profiles or {}),
                                max_seq=self.manifest.config.max_text_length)
        options = ort_tensorrt_options(self.manifest.graph_io(graph), ranges,
                                       str(self.manifest.directory / "ort_tensorrt_cache"),
                                       fp16=self.precision == "fp16")
        return [(p, options) if p == "TensorrtExecutionProvider" else p for p in self.providers]

    def session(self, graph: str):
        self.graph_io(graph)  # a known graph
        if graph in self._sessions:
            return self._sessions[graph]
        with self._locks[graph]:
            if graph not in self._sessions:
                self._sessions[graph] = self._create_session(graph)
        return self._sessions[graph]

    def _create_session(self, graph: str):
        import onnxruntime as ort

        entry = self.files[graph]
        path = self.manifest.path(entry.file)
        if self.verify_checksums:
            for name, sha256 in [(entry.file, entry.sha256)] + [(r.file, r.sha256) for r in entry.external_data]:
                verify_sha256(self.manifest.path(name), sha256, CHANGED_FILE_REMEDY)
            check_external_data(path, [r.file for r in entry.external_data],  # only files hashed just above
                                f"variants.{self.precision}.files.{graph}")
        o = self.options
        options = session_options(o.spinning, o.intra_op_threads, o.graph_optimization_level, o.prepack_weights)
        providers = self._providers_for(graph)
        try:
            session = ort.InferenceSession(str(path), options, providers=providers,
                                           disabled_optimizers=CPU_DISABLED_OPTIMIZERS if self.on_cpu else None)
        except Exception as err:  # ONNX Runtime raises its own types for a damaged or foreign file
            raise BackendError(f"ONNX Runtime could not load {graph} from {str(path)!r}: "
                               f"{first_line(err, 300)}") from err
        wanted, started = _name(providers[0]), session.get_providers()[0]
        if wanted != started:
            # A provider that fails to start (its libraries missing) only logs, and the session runs on the next
            # one: refuse it rather than serve a "cuda" or TensorRT runtime at another provider's speed.
            raise BackendError(f"{graph}: {wanted} was asked for but ONNX Runtime started the session on {started}: "
                               f"{PROVIDER_FIXES.get(wanted, 'its libraries did not load')}. To run on {started}, "
                               f"ask for it ({DEVICE_OF.get(started, f'providers=[{started!r}]')}).")
        check_declared(graph, entry.file, self.graph_io(graph), session)
        return session

    def close(self) -> None:
        self._sessions.clear()

    def run_bound(self, graph: str, feeds: dict, outputs: list[str], keep: tuple[str, ...] = ()) -> dict:
        """Run with IOBinding: feeds are arrays or device OrtValues (from an earlier run_bound); outputs in `keep`
        stay on this backend's device as OrtValues, the others come back as arrays (checked for NaN/Inf)."""
        check_feeds(graph, self.graph_io(graph).inputs, feeds)
        session = self.session(graph)
        binding = session.io_binding()
        for name, value in feeds.items():
            if isinstance(value, np.ndarray):
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
            else:
                binding.bind_ortvalue_input(name, value)
        for name in outputs:
            binding.bind_output(name, self.device if name in keep else "cpu", self.device_id if name in keep else 0)
        session.run_with_iobinding(binding)
        values = dict(zip(outputs, binding.get_outputs(), strict=True))
        results = {name: value if name in keep else value.numpy() for name, value in values.items()}
        check_outputs(graph, {name: value for name, value in results.items() if name not in keep})
        return results

    def _infer(self, graph: str, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        return dict(zip(outputs, self.session(graph).run(outputs, feeds), strict=True))


def choose_files(variant, asked: str | None, on_cpu: bool, here: str | None = None) -> tuple[dict, str, str]:
    """(graph → GraphFile, the recipe's name, why) for `variant` on this CPU (class `here`, default this machine's):
    `asked` ("safe" or a recipe name) if given, else the recipe measured for the class, else the safe files."""
    names = [SAFE_RECIPE] + [r.name for r in variant.recipes]
    if asked is not None and asked not in names:
        raise BackendInputError(f"int8_recipe {asked!r}; valid for this export: {names}")
    if asked == SAFE_RECIPE or not variant.recipes:
        return variant.files, SAFE_RECIPE, ("int8 recipe 'safe' as asked" if asked else
                                            "one set of files (no per-CPU recipes in this variant)")
    if asked is not None:
        recipe = next(r for r in variant.recipes if r.name == asked)
        return recipe.files, recipe.name, f"int8 recipe {recipe.name!r} as asked"
    if not on_cpu:  # recipes are chosen for CPU integer kernels; other providers get the safe files
        return variant.files, SAFE_RECIPE, "int8 recipe 'safe': not on ONNX Runtime's CPU provider"
    recipe, reason = variant.recipe_for(here or cpu_class())
    return (recipe.files, recipe.name, reason) if recipe else (variant.files, SAFE_RECIPE, reason)


_WARNED: set[tuple] = set()


def _warn_isa_once(precision: str, validated: str, here: str, directory) -> None:
    key = (str(directory), precision, here)
    if key in _WARNED:
        return
    _WARNED.add(key)
    warnings.warn(f"the {precision} variant of {str(directory)!r} was validated on a {validated} CPU and this one is "
                  f"{here}: ONNX Runtime's int8 kernels differ between these classes. Re-validate on this machine: "
                  f"export "
                  f"again here with `bt-export ... --precision fp32,int8` (its parity check measures this CPU's "
                  f"kernels and records the class).",
                  RuntimeWarning, stacklevel=4)
