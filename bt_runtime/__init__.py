"""bt_runtime: serve BridgeTower exports without PyTorch (numpy, onnxruntime, tokenizers, Pillow)."""

from .manifest import Manifest, ManifestError, read_manifest

__all__ = ["Manifest", "ManifestError", "read_manifest"]
