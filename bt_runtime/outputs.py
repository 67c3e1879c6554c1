"""Checks on a path a command is about to write (`bt-run index -o`, `bt-run triton-repo REPO`), made before any
work: a symbolic link (dangling or not), a name too long for the staging file beside it, a parent that cannot be
written, or a place inside an export is a one-line error naming the path, never a traceback after minutes of work
(docs/limits.md)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

from .errors import BtRuntimeError


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path("/")


def export_manifest(directory: Path) -> dict | None:
    """The manifest of the bt export in `directory`; None if there is none (a FIFO named manifest.json is not read)."""
    path = directory / "manifest.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "schema_version" in data and "graphs" in data else None


def _inside_export(output: Path) -> Path | None:
    """The export `output` is, or is inside: writing there adds entries its manifest does not list, and bt-export's
    --overwrite of that export then refuses."""
    return next((d for d in (output, *output.parents) if export_manifest(d) is not None), None)


def check_output_path(output: Path, option: str, staging_bytes: int) -> Path:
    """`output` made absolute (by name: links in it are not resolved), or an error naming `option` and the path.
    `staging_bytes`: how many bytes the staging name written beside it adds to `output.name`."""
    given = str(output)
    output = Path(os.path.abspath(output))
    if output == output.parent:
        raise BtRuntimeError(f"{option} {given!r}: the filesystem root cannot be written")
    ancestor = _existing_ancestor(output.parent)
    try:
        limit = os.pathconf(ancestor, "PC_NAME_MAX")
    except (OSError, ValueError):  # not a directory: reported below
        limit = 255
    size = len(os.fsencode(output.name))
    if size + staging_bytes > limit:
        raise BtRuntimeError(f"{option} {given[:60]!r}…: the name is {size} bytes; at most {limit - staging_bytes} "
                             f"(the filesystem's {limit}, less {staging_bytes} for the staging name beside it)")
    if output.is_symlink():
        raise BtRuntimeError(f"{option} {given!r} is a symbolic link (to {os.readlink(output)!r}); give the real "
                             "path (links are neither followed nor replaced)")
    export = _inside_export(output)
    if export is not None:
        where = "is the export" if export == output else "is inside the export"
        raise BtRuntimeError(f"{option} {given!r} {where} {str(export)!r}; choose a path outside it (an export holds "
                             "only the files its manifest lists)")
    if not ancestor.is_dir():
        raise BtRuntimeError(f"{option} {given!r}: {str(ancestor)!r} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise BtRuntimeError(f"{option} {given!r}: {str(ancestor)!r} is not writable")
    return output


def swap_into_place(staging: Path, output: Path) -> None:
    """Put the finished `staging` directory at `output`: the previous one (already judged replaceable) is renamed
    aside first and removed only after the rename, so `output` is at every moment the old or the new one, whole."""
    previous = None
    if output.exists():
        previous = output.with_name(f".{output.name}.old-{staging.name.rsplit('-', 1)[-1]}")
        output.rename(previous)
    staging.rename(output)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def new_file_beside(path: Path, prefix: str, suffix: str) -> tuple[int, Path]:
    """A new empty file `PREFIX` + 8 hex digits + `SUFFIX` in `path`'s directory, open for writing: (descriptor,
    path). Created with mode 0o666 for the kernel to apply the umask, as to any new file (mkstemp's 0600 would not
    follow it, and reading the umask means setting it, which races with other threads)."""
    for _ in range(100):
        staged = path.parent / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            return os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), staged
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: could not create a staging file beside {path.name}")
