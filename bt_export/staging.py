"""Write an export into a temporary sibling directory and move it into place only when it is complete.

A crash, a full disk, Ctrl-C or SIGTERM mid-export leaves the target untouched and the temporary directory removed;
after a SIGKILL, the next export to the same path removes the stale temporary directories it owns (their owner
process is gone). `--overwrite` replaces only what bt-export itself wrote: an empty directory, or an export whose
manifest.json lists every file in it with the sha256 it still has (plus the TensorRT caches, holding only what their
writers write); anything else is refused, naming what is there, and nothing is touched. An `--output` that is a
symbolic link is refused (replacing the link by a directory would leave its target behind, following it would
replace a directory the user did not name), as is a name too long for the staging directory beside it. The
finished directory gets the permissions the umask gives a new directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from bt_runtime.outputs import export_manifest, swap_into_place

from .errors import OutputDirError

OWNER_FILE = ".bt-export-owner"  # inside a staging directory: the pid of the process writing it
MANIFEST_NAME = "manifest.json"
# Written beside the listed files by later steps, their content not recorded (rewritten by every build): the
# TensorRT timing cache (a regular file), and ONNX Runtime's TensorRT provider cache directory, which may hold only
# the regular files that provider writes (engine, profile, timing cache) — anything else in it is the user's.
TIMING_CACHE = "tensorrt.timing_cache"
ORT_TRT_CACHE = "ort_tensorrt_cache"
ORT_TRT_CACHE_FILES = re.compile(r"TensorrtExecutionProvider_[A-Za-z0-9_.-]+\.(engine|profile|timing)")
STAGING_SUFFIX_BYTES = len(".") + len(".partial-") + 8  # `.NAME.partial-XXXXXXXX` (tempfile.mkdtemp)


def _recorded_files(data) -> dict[str, set[str]]:
    """Every file a manifest (schema 1 or 2) names → the sha256 values recorded for it (empty: named without one):
    dicts with a "file" key (and "sha256" beside it), and string lists under "files"."""
    recorded: dict[str, set[str]] = {}
    if isinstance(data, dict):
        if isinstance(data.get("file"), str):
            digests = recorded.setdefault(data["file"], set())
            if isinstance(data.get("sha256"), str):
                digests.add(data["sha256"])
        for key, value in data.items():
            if key == "files" and isinstance(value, list):
                for name in value:
                    if isinstance(name, str):
                        recorded.setdefault(name, set())
            for name, digests in _recorded_files(value).items():
                recorded.setdefault(name, set()).update(digests)
    elif isinstance(data, list):
        for value in data:
            for name, digests in _recorded_files(value).items():
                recorded.setdefault(name, set()).update(digests)
    return recorded


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _kind(entry: os.DirEntry) -> str:
    if entry.is_symlink():
        return "a symbolic link"
    return "a directory" if entry.is_dir(follow_symlinks=False) else "not a regular file"


def _foreign_entries(directory: Path) -> list[str] | None:
    """Entries of an existing export directory that bt-export cannot prove it wrote, each with the reason; None:
    not a bt export. Judged by content, never by name: a listed file must be a regular file (not a link, not a
    directory) whose sha256 is one the manifest records; the caches above may hold only what their writer writes."""
    data = export_manifest(directory)
    if data is None:
        return None
    recorded = _recorded_files(data)
    foreign = []
    with os.scandir(directory) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            regular = entry.is_file(follow_symlinks=False)
            if entry.name in (MANIFEST_NAME, TIMING_CACHE) and regular:
                continue
            if entry.name == ORT_TRT_CACHE and entry.is_dir(follow_symlinks=False):
                foreign += _foreign_cache_entries(Path(entry.path))
            elif entry.name not in recorded:
                foreign.append(entry.name + ("/" if entry.is_dir(follow_symlinks=False) else ""))
            elif not regular:
                foreign.append(f"{entry.name} ({_kind(entry)} where the manifest lists a file)")
            elif not recorded[entry.name]:
                foreign.append(f"{entry.name} (the manifest records no sha256 for it)")
            elif _sha256(Path(entry.path)) not in recorded[entry.name]:
                foreign.append(f"{entry.name} (changed since bt-export wrote it: its sha256 differs)")
    return foreign


def _foreign_cache_entries(cache: Path) -> list[str]:
    with os.scandir(cache) as entries:
        return [f"{ORT_TRT_CACHE}/{entry.name}" + ("" if entry.is_file(follow_symlinks=False) else f" ({_kind(entry)})")
                for entry in sorted(entries, key=lambda e: e.name)
                if not (entry.is_file(follow_symlinks=False) and ORT_TRT_CACHE_FILES.fullmatch(entry.name))]


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
    _check_name_length(output, given, _writable_ancestor(output.parent))  # before any stat: ENAMETOOLONG raises
    if output.is_symlink():
        raise OutputDirError(f"--output {given!r} is a symbolic link (to {os.readlink(output)!r}); give the directory "
                             "it should be written to itself (bt-export neither follows nor replaces links)")
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
            raise OutputDirError(f"--output {given!r} holds entries its manifest does not list: "
                                 f"{foreign[:8]}{'…' if len(foreign) > 8 else ''}; --overwrite would delete "
                                 "them. Move them away, or choose another directory")
    ancestor = _writable_ancestor(output.parent)
    for parent in (ancestor, *ancestor.parents):
        if export_manifest(parent) is not None:  # its --overwrite would then refuse: an entry its manifest lacks
            raise OutputDirError(f"--output {given!r} is inside the export {str(parent)!r}; choose a directory "
                                 "outside it (an export holds only the files its manifest lists)")
    if not ancestor.is_dir():
        raise OutputDirError(f"--output {given!r}: {str(ancestor)!r} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputDirError(f"--output {given!r}: {str(ancestor)!r} is not writable")
    return output


def _check_name_length(output: Path, given: str, ancestor: Path) -> None:
    """The staging directory `.NAME.partial-XXXXXXXX` beside `output` must fit the filesystem's name limit."""
    try:
        limit = os.pathconf(ancestor, "PC_NAME_MAX")
    except (OSError, ValueError):  # ancestor not a directory: reported by the checks after this one
        limit = 255
    if len(os.fsencode(output.name)) + STAGING_SUFFIX_BYTES > limit:
        raise OutputDirError(f"--output {given!r}: the name {output.name[:40]!r}… is {len(os.fsencode(output.name))} "
                             f"bytes; at most {limit - STAGING_SUFFIX_BYTES} (the filesystem's {limit}, less the "
                             "staging suffix)")


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


def new_directory_mode(parent: Path) -> int:
    """The permissions a new directory in `parent` gets (umask, and a default ACL where one applies), read from a
    probe directory: reading the umask means setting it (os.umask), which races with other threads' file creation."""
    probe = Path(tempfile.mkdtemp(prefix=".mode-", dir=parent))  # a unique name; its 0700 is changed below
    try:
        probe.rmdir()
        probe.mkdir(0o777)  # the kernel applies the umask to the mode asked for, as for any new directory
        return probe.stat().st_mode & 0o777
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()


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
            os.chmod(staging, new_directory_mode(staging))  # mkdtemp makes 0700; a finished export follows the umask
            check_output_dir(output, overwrite)  # nothing foreign appeared there while we worked
            swap_into_place(staging, output)
        except BaseException:  # KeyboardInterrupt and SIGTERM included: never leave a half-written export behind
            shutil.rmtree(staging, ignore_errors=True)
            raise
