"""Runtime errors. Bad input is a ValueError (BtRuntimeError) naming the argument, what came and what is valid;
a backend failure on valid input is a BackendError (RuntimeError)."""

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


class BackendInputError(BtRuntimeError):
    """What was asked of a backend is invalid: backend name, device, providers, options, graph, feeds, a shape
    outside an engine's profile, an engine precision the export cannot give."""


class BackendError(RuntimeError):
    """A backend failed on valid input: ONNX Runtime, CUDA or TensorRT could not load or run a graph (missing
    package or GPU, engines from another TensorRT or GPU, a damaged file), or a graph produced NaN/Inf. Not a
    ValueError: nothing the caller passed was wrong; the message says what to change on the machine or export."""


USER_FACING = (BtRuntimeError, BackendError)  # what a CLI reports in one line; anything else is a bug
