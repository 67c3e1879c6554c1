"""Errors for bad user input to the exporter. Each names the input, what was received and what is valid."""

from __future__ import annotations


class BtExportError(ValueError):
    """Base class: a user-facing problem with what was asked of `bt_export` (never an internal bug)."""


class CheckpointError(BtExportError):
    """The checkpoint argument cannot be resolved or loaded."""


class UnsupportedConfigError(BtExportError):
    """The checkpoint's config uses a variant the exporter does not support."""


class OutputDirError(BtExportError):
    """The output directory cannot be written as asked."""


class ParityError(BtExportError):
    """At least one exported output disagrees with eager PyTorch beyond its tolerance. `rows`: precision → the
    parity rows measured (bt_export.parity.ParityRow), for the caller to show."""

    def __init__(self, message: str, rows: dict | None = None):
        super().__init__(message)
        self.message, self.rows = message, rows or {}


class VariantsRejected(BtExportError):
    """The export was written, but reduced-precision variant(s) missed their bounds and were left out. `result`:
    the ExportResult of what was written."""

    def __init__(self, message: str, result):
        super().__init__(message)
        self.message, self.result = message, result
