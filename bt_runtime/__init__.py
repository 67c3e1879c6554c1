"""bt_runtime: serve BridgeTower exports without PyTorch (numpy, onnxruntime, tokenizers, Pillow).

    rt = BridgeTowerRuntime.load("exports/base")
    rt.itm_scores(image, ["two cats on a couch", "a football player"])
"""

from .errors import (
                     BackendError,
                     BackendInputError,
                     BtRuntimeError,
                     ImageInputError,
                     ManifestError,
                     TaskUnavailableError,
                     TextInputError,
)
from .images import ImagePreprocessor
from .manifest import Manifest, read_manifest
from .runtime import BridgeTowerRuntime, FillMaskResult, MaskPrediction, RetrievalHit
from .text import TextTokenizer

__all__ = ["BridgeTowerRuntime", "FillMaskResult", "MaskPrediction", "RetrievalHit", "ImagePreprocessor",
           "TextTokenizer", "Manifest", "read_manifest", "BtRuntimeError", "ManifestError", "ImageInputError",
           "TextInputError", "TaskUnavailableError", "BackendError", "BackendInputError"]
