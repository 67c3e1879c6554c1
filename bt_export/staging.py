"""Write an export into a temporary sibling directory and move it into place only when it is complete.

A crash, a full disk, Ctrl-C or SIGTERM mid-export leaves the target untouched and the temporary directory removed;
after a SIGKILL, the next export to the same path removes the stale temporary directories it owns (their owner
process is gone). `--overwrite` replaces only what bt-export itself wrote: an empty directory, or an export whose
manifest.json lists every file in it; anything else is refused, naming what is there. The finished directory gets
the permissions the umask gives a new directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputDirError

OWNER_FILE = ".bt-export-owner"  # inside a staging directory: the pid of the process writing it
MANIFEST_NAME = "manifest.json"
EXTRA_OWNED = {MANIFEST_NAME, "ort_tensorrt_cache", "tensorrt.timing_cache"}  # written beside the listed files


def _names_in_manifest(data) -> set[str]:
    """Every file name a manifest (schema 1 or 2) lists: values of "file" keys and string lists under "files"."""
    names: set[str] = set()
    if isinstance(data, dict):
        for key, value in data.items():
            if key == "file" and isinstance(value, str):
                names.add(value)
            elif key == "files" and isinstance(value, list):
                names |= {v for v in value if isinstance(v, str)}
            names |= _names_in_manifest(value)
    elif isinstance(data, list):
        for value in data:
            names |= _names_in_manifest(value)
    return names


def _foreign_entries(directory: Path) -> list[str] | None:
    """Entries of an existing export directory that its manifest does not account for; None: not a bt export."""
    try:
        data = json.loads((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "schema_version" not in data or "graphs" not in data:
        return None
    owned = _names_in_manifest(data) | EXTRA_OWNED
    return sorted(p.name + ("/" if p.is_dir() else "") for p in directory.iterdir() if p.name not in owned)


def _writable_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def check_output_dir(output: Path, overwrite: bool) -> Path:
    """Refuse an output path that cannot or must not be written, before any work. Returns it made absolute."""
    given = str(output)
    output = Path(os.path.abspath(output))  # `-o .` → the current directory, by name
    if output == output.parent:
        raise OutputDirError(f"--output {given!r}: the filesystem root cannot be an export directory")
    if output.exists() and not output.is_dir():
        raise OutputDirError(f"--output {given!r} exists and is not a directory")
    if output.is_dir() and any(output.iterdir()):
        if not overwrite:
            raise OutputDirError(f"--output {given!r} already exists and is not empty; pass --overwrite to replace "
                                 "an earlier export there, or choose another directory")
        foreign = _foreign_entries(output)
        if foreign is None:
            shown = sorted(p.name for p in output.iterdir())[:8]
            raise OutputDirError(f"--output {given!r} is not a bt export (no bt manifest.json in it; it holds "
                                 f"{shown}…); --overwrite replaces only an earlier export or an empty directory")
        if foreign:
            raise OutputDirError(f"--output {given!r} holds entries its manifest does not list: {foreign[:8]}; "
                                 "--overwrite would delete them. Move them away, or choose another directory")
    ancestor = _writable_ancestor(output.parent)
    if not ancestor.is_dir():
        raise OutputDirError(f"--output {given!r}: {str(ancestor)!r} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputDirError(f"--output {given!r}: {str(ancestor)!r} is not writable")
    return output


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(output: Path) -> list[Path]:
    """Remove `.NAME.partial-*` / `.NAME.old-*` beside `output` whose writing process is gone (after a SIGKILL)."""
    removed = []
    for pattern in (f".{output.name}.partial-*", f".{output.name}.old-*"):
        for candidate in output.parent.glob(pattern):
            owner = candidate / OWNER_FILE
            try:
                pid = int(owner.read_text().strip())
            except (OSError, ValueError):
                continue  # not ours (no owner file): leave it alone
            if not _pid_alive(pid):
                shutil.rmtree(candidate, ignore_errors=True)
                removed.append(candidate)
    return removed


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C while staging, so the cleanup below runs (main thread only: signals need it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def staged_directory(output: Path, overwrite: bool) -> Iterator[Path]:
    """Yield an empty temp dir beside `output`; on clean exit it replaces `output`, on any exception it is removed."""
    output = check_output_dir(Path(output), overwrite)
    output.parent.mkdir(parents=True, exist_ok=True)  # `--output exports/tiny` on a fresh checkout
    remove_stale_partials(output)
    with _sigterm_as_interrupt():
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
        try:
            (staging / OWNER_FILE).write_text(str(os.getpid()))
            yield staging
            (staging / OWNER_FILE).unlink()
            os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700; a finished export follows the umask
            check_output_dir(output, overwrite)  # nothing foreign appeared there while we worked
            previous = None
            if output.exists():
                previous = output.with_name(f".{output.name}.old-{staging.name.rsplit('-', 1)[-1]}")
                output.rename(previous)
            staging.rename(output)
            if previous is not None:
                shutil.rmtree(previous, ignore_errors=True)
        except BaseException:  # KeyboardInterrupt and SIGTERM included: never leave a half-written export behind
            shutil.rmtree(staging, ignore_errors=True)
            raise
