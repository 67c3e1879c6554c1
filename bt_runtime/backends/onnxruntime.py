"""ONNX Runtime backend: one lazily created session per graph, named and checked by the manifest."""

from __future__ import annotations

import numpy as np

from ..errors import BackendError, ManifestError
from ..manifest import GRAPH_NAMES, Manifest, verify_sha256
from .feeds import check_feeds, check_outputs

OPTIMIZATION_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                       "all": "ORT_ENABLE_ALL"}


class OnnxRuntimeBackend:
    """run(graph, feeds) → {output name: array}. Sessions are created on first use of each graph."""

    name = "onnxruntime"

    def __init__(self, manifest: Manifest, precision: str = "fp32", providers: list[str] | None = None,
                 intra_op_threads: int | None = None, graph_optimization_level: str = "all",
                 verify_checksums: bool = True, tensorrt_profiles: dict | None = None):
        import onnxruntime as ort

        available = ort.get_available_providers()
        providers = list(providers or ["CPUExecutionProvider"])
        unknown = [p for p in providers if p not in available]
        if unknown:
            raise BackendError(f"providers: {unknown} not available in this onnxruntime build; available: {available}")
        if graph_optimization_level not in OPTIMIZATION_LEVELS:
            raise BackendError(f"graph_optimization_level {graph_optimization_level!r}; valid: {list(OPTIMIZATION_LEVELS)}")
        if intra_op_threads is not None and intra_op_threads < 0:
            raise BackendError(f"intra_op_threads must be ≥ 0 (0 = onnxruntime's default), got {intra_op_threads}")
        if precision not in manifest.precisions:
            raise ManifestError(f"precision {precision!r} is not in this export; available: {list(manifest.precisions)}")
        self.manifest, self.precision, self.providers = manifest, precision, providers
        self.intra_op_threads, self.graph_optimization_level = intra_op_threads, graph_optimization_level
        self.verify_checksums = verify_checksums
        self.tensorrt_profiles = tensorrt_profiles or {}
        self._sessions: dict = {}

    def _providers_for(self, graph: str) -> list:
        """Providers as given; TensorrtExecutionProvider gets this graph's profile shapes and an engine cache."""
        if "TensorrtExecutionProvider" not in self.providers:
            return self.providers
        from .trt_profiles import ort_tensorrt_options, profile_ranges

        ranges = profile_ranges(**self.tensorrt_profiles,
                                max_seq=self.manifest.data["config"]["max_text_length"])
        options = ort_tensorrt_options(self.manifest.graph_io(graph), ranges,
                                       str(self.manifest.directory / "ort_tensorrt_cache"),
                                       fp16=self.precision == "fp16")
        return [(p, options) if p == "TensorrtExecutionProvider" else p for p in self.providers]

    def session(self, graph: str):
        if graph not in GRAPH_NAMES:
            raise BackendError(f"graph {graph!r}; valid: {list(GRAPH_NAMES)}")
        if graph not in self._sessions:
            import onnxruntime as ort

            entry = self.manifest.data["variants"][self.precision]["files"][graph]
            path = self.manifest.directory / entry["file"]
            if self.verify_checksums:
                remedy = "Re-export it, or pass verify_checksums=False to load it anyway."
                verify_sha256(path, entry["sha256"], remedy)
                if "external_data" in entry:
                    verify_sha256(self.manifest.directory / entry["external_data"]["file"],
                                  entry["external_data"]["sha256"], remedy)
            options = ort.SessionOptions()
            options.log_severity_level = 3
            options.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                                       OPTIMIZATION_LEVELS[self.graph_optimization_level])
            if self.intra_op_threads:
                options.intra_op_num_threads = self.intra_op_threads
            self._sessions[graph] = ort.InferenceSession(str(path), options, providers=self._providers_for(graph))
        return self._sessions[graph]

    def run(self, graph: str, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        io = self.manifest.graph_io(graph)
        check_feeds(graph, io["inputs"], feeds)
        names = outputs or [t["name"] for t in io["outputs"]]
        results = dict(zip(names, self.session(graph).run(names, feeds)))
        check_outputs(graph, results)
        return results
