"""Write an export into a temporary sibling directory and move it into place only when it is complete.

A crash, a full disk or Ctrl-C mid-export leaves the target untouched (and the temporary directory removed).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputDirError


def check_output_dir(output: Path, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise OutputDirError(f"--output {str(output)!r} exists and is not a directory")
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise OutputDirError(f"--output {str(output)!r} already exists and is not empty; pass --overwrite to "
                             "replace it, or choose another directory")
    parent = output.resolve().parent
    if parent.exists() and not parent.is_dir():
        raise OutputDirError(f"--output {str(output)!r}: {str(parent)!r} is not a directory")


@contextlib.contextmanager
def staged_directory(output: Path, overwrite: bool) -> Iterator[Path]:
    """Yield an empty temp dir beside `output`; on clean exit it replaces `output`, on any exception it is removed."""
    output = Path(output)
    check_output_dir(output, overwrite)
    output.resolve().parent.mkdir(parents=True, exist_ok=True)  # `--output exports/tiny` on a fresh checkout
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.resolve().parent))
    try:
        yield staging
        previous = None
        if output.exists():
            previous = output.with_name(f".{output.name}.old-{staging.name.rsplit('-', 1)[-1]}")
            output.rename(previous)
        staging.rename(output)
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
    except BaseException:  # KeyboardInterrupt included: never leave a half-written export behind
        shutil.rmtree(staging, ignore_errors=True)
        raise
