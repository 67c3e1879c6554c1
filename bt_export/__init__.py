"""bt_export: BridgeTower checkpoint → vision tower, text tower and cross-modal ONNX graphs, validated against
eager PyTorch, with manifest.json. Needs torch and transformers (`pip install bt-toolkit[export]`)."""

from .errors import BtExportError, CheckpointError, OutputDirError, ParityError, UnsupportedConfigError


def export_checkpoint(*args, **kwargs):
    """See bt_export.export.export_checkpoint (imported lazily: torch loads only when exporting)."""
    from .export import export_checkpoint as _export

    return _export(*args, **kwargs)


__all__ = ["export_checkpoint", "BtExportError", "CheckpointError", "OutputDirError", "ParityError",
           "UnsupportedConfigError"]
