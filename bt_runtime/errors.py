"""Errors for bad input to the runtime. Each is a ValueError naming the argument, what came and what is valid."""

from __future__ import annotations


def first_line(err: BaseException, limit: int = 200) -> str:
    """A library exception's message for one of our one-line errors: its first line, cut at `limit`, or its type
    name when it has no message (tokenizers, safetensors and ONNX Runtime raise long or empty ones)."""
    lines = str(err).strip().splitlines()
    return lines[0][:limit] if lines else type(err).__name__


class BtRuntimeError(ValueError):
    """Base class of every user-facing runtime error."""


class ManifestError(BtRuntimeError):
    """An export directory or its manifest.json is missing, unreadable, tampered with or of an unknown schema."""


class ImageInputError(BtRuntimeError):
    """An image argument cannot be decoded or is of an unsupported type."""


class TextInputError(BtRuntimeError):
    """A text argument is empty, of the wrong type, or lacks what the task needs (e.g. <mask>)."""


class TaskUnavailableError(BtRuntimeError):
    """The export lacks the head a task needs (e.g. embeddings without ITC heads)."""


class BackendError(BtRuntimeError):
    """A backend cannot be created as asked (unknown provider, wrong feeds, non-finite outputs)."""
