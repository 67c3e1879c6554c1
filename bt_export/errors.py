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
    """At least one exported output disagrees with eager PyTorch beyond its tolerance."""


class VariantsRejected(BtExportError):
    """The export was written, but reduced-precision variant(s) missed their bounds and were left out.
    args: (message, ExportResult)."""
