"""BridgeTowerRuntime: image-text matching, fill-mask, contrastive embeddings and retrieval on an export.

`load()` opens an export on one backend; the work is in bt_runtime.features (towers once per input, cross-modal
per pair), bt_runtime.tasks and bt_runtime.retrieval.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .backends.base import check_type, options_for
from .errors import BtRuntimeError
from .features import PAIR_BATCH, Features, ImageFeatures, TextFeatures, softmax
from .images import DEFAULT_MAX_PIXELS, ImagePreprocessor
from .manifest import Manifest, read_manifest
from .retrieval import Retrieval, RetrievalHit
from .tasks import FillMaskResult, MaskPrediction, Tasks
from .text import TextTokenizer

__all__ = ["BridgeTowerRuntime", "FillMaskResult", "ImageFeatures", "MaskPrediction", "PAIR_BATCH", "RetrievalHit",
           "TextFeatures", "softmax"]


class BridgeTowerRuntime(Tasks, Retrieval, Features):
    @classmethod
    def load(cls, export_dir: str | Path | Manifest, precision: str = "fp32", backend: str = "onnxruntime",
             options=None, *, verify_checksums: bool = True, exif_transpose: bool | None = None,
             max_pixels: int = DEFAULT_MAX_PIXELS, **backend_options) -> "BridgeTowerRuntime":
        """Open an export directory (or a checked Manifest). Sessions/engines are created lazily, on the first call
        that needs each graph.

        backend "onnxruntime" (options: bt_runtime.backends.base.OnnxRuntimeOptions — providers, device="cuda[:N]",
        intra_op_threads, graph_optimization_level, tensorrt_profiles, spinning, prepack_weights) or
        "tensorrt" (engines built by `bt-run build-engines`; precision names the engines' precision). Backend
        options come as `options=` or as keywords, never both; an option the chosen backend would ignore is
        refused. Every file read is checked against the manifest's sha256 (verify_checksums=False opts out);
        images above max_pixels are refused. Use as a context manager, or call close(), to release the sessions."""
        if not isinstance(export_dir, (str, os.PathLike, Manifest)) or isinstance(export_dir, bytes):
            raise BtRuntimeError(f"export_dir must be a path (str or os.PathLike) or a Manifest, got "
                                 f"{type(export_dir).__name__}")
        check_type("precision", precision, str, "a string")
        check_type("backend", backend, str, "a string")
        check_type("verify_checksums", verify_checksums, (bool, np.bool_), "True or False")
        check_type("exif_transpose", exif_transpose, (bool, np.bool_), "True or False", optional=True)
        options = options_for(backend, options, backend_options)
        manifest = export_dir if isinstance(export_dir, Manifest) else read_manifest(export_dir)
        if backend == "onnxruntime":
            from .backends.onnxruntime import OnnxRuntimeBackend

            engine = OnnxRuntimeBackend(manifest, precision, options, verify_checksums)
        else:
            from .backends.tensorrt import TensorRTBackend

            engine = TensorRTBackend(manifest, precision, options, verify_checksums)
        return cls(manifest, engine,
                   ImagePreprocessor.from_manifest(manifest.preprocessing, exif_transpose, max_pixels),
                   TextTokenizer.from_manifest(manifest, verify_checksums))

    def close(self) -> None:
        """Release the backend's sessions or engines (their memory). A later call makes the ones it needs again, as
        on first use (bt_runtime.backends.base.Backend.close)."""
        self.backend.close()

    def __enter__(self) -> "BridgeTowerRuntime":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
