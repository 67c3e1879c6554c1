"""Integrity of an export's files: sha256 hashing, the verified-digest cache, and confinement of file names.

File names in a manifest are bare names inside the export directory: no path separators, no `..`, no leading dot,
no symbolic links; anything else is refused before a byte of it is read.

Verified digests: a file whose sha256 was checked once is not hashed again while it stays the same file. Loading a
full-size export hashes about 1.3 GB on every cold start. The cache remembers, per file, the sha256 it was verified
against together with what the filesystem says about that file version: device, inode, size, modification and
status-change times in nanoseconds. A later check of the same path against the same sha256 skips the hash only when
all of these still agree; any write, truncation, copy over it, rename onto it or `touch` changes the status-change
time (ctime, which user programs cannot set back), so the file is hashed again.

What this does not catch: a change that bypasses the filesystem (media corruption under an unchanged inode, a raw
block-device write). `bt-run verify` always hashes every file; set BT_DIGEST_CACHE=off to hash on every load.

The cache is one small JSON file (BT_DIGEST_CACHE=<path>, else $XDG_CACHE_HOME/bt-toolkit/verified-digests.json,
else ~/.cache/…), written atomically; a cache that cannot be read or written is ignored (the file is then hashed,
as without a cache), never an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import threading
from pathlib import Path

from .errors import ManifestError

ENV = "BT_DIGEST_CACHE"
MAX_ENTRIES = 512
_lock = threading.Lock()
_disabled = threading.local()
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")

# What a file that no longer matches its sha256 says to do (bt-run has no flag to skip the check, on purpose)
CHANGED_FILE_REMEDY = ("Re-export it (or copy the export again); to load it anyway, from Python: "
                       "BridgeTowerRuntime.load(..., verify_checksums=False).")


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str, remedy: str) -> None:
    """Refuse a file whose content no longer matches the sha256 the manifest recorded; `remedy` says what to do.
    A file verified before and unchanged since (same inode, size, mtime and ctime) is not hashed again."""
    if known(path, expected):
        return
    before = stat_token(path)
    try:
        actual = sha256_file(path)
    except OSError as err:
        raise ManifestError(f"{str(path)!r} cannot be read: {err.strerror or err}") from err
    if actual != expected:
        raise ManifestError(f"{str(path)!r} does not match the sha256 recorded in manifest.json: the file was "
                            f"modified, replaced or truncated. {remedy}")
    remember(path, actual, before)


def confined_path(directory: Path, name, where: str) -> Path:
    """`directory/name` for a bare file name that stays inside `directory`; anything else is a ManifestError."""
    if not isinstance(name, str) or not _FILE_NAME.match(name) or name in (".", ".."):
        raise ManifestError(f"{where}: file name {name!r} is not a bare file name inside the export directory "
                            "(no path separators, '..', absolute paths or leading dots)")
    path = directory / name
    if path.is_symlink():
        raise ManifestError(f"{where}: {name!r} is a symbolic link; an export holds regular files only")
    return path


def cache_path() -> Path | None:
    """Where the cache lives, or None when BT_DIGEST_CACHE=off (or 0/no/false) or inside `disabled()`."""
    setting = os.environ.get(ENV, "")
    if getattr(_disabled, "depth", 0) or setting.lower() in ("off", "0", "no", "false"):
        return None
    if setting:
        return Path(setting)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bt-toolkit" / "verified-digests.json"


@contextlib.contextmanager
def disabled():
    """Hash every file checked inside this block (in this thread), whatever the cache holds."""
    _disabled.depth = getattr(_disabled, "depth", 0) + 1
    try:
        yield
    finally:
        _disabled.depth -= 1


def _identity(path: Path) -> tuple[str, str] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = os.path.realpath(path)
    return key, f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def _read(cache: Path) -> dict:
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def known(path: Path, sha256: str) -> bool:
    """True when `path` was verified against `sha256` and the file has not changed since."""
    cache, identity = cache_path(), _identity(path)
    if cache is None or identity is None:
        return False
    entry = _read(cache).get(identity[0])
    return isinstance(entry, dict) and entry.get("sha256") == sha256 and entry.get("stat") == identity[1]


def remember(path: Path, sha256: str, stat_before: str | None) -> None:
    """Record that `path` hashed to `sha256`, if its identity did not change while it was hashed."""
    cache, identity = cache_path(), _identity(path)
    if cache is None or identity is None or identity[1] != stat_before:
        return
    with _lock:
        data = _read(cache)
        data.pop(identity[0], None)
        data[identity[0]] = {"sha256": sha256, "stat": identity[1]}
        while len(data) > MAX_ENTRIES:  # oldest first (insertion order)
            data.pop(next(iter(data)))
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=cache.parent, prefix=".verified-", suffix=".tmp",
                                             delete=False, encoding="utf-8") as f:
                json.dump(data, f)
            os.replace(f.name, cache)
        except OSError:
            with contextlib.suppress(OSError, UnboundLocalError):
                os.unlink(f.name)


def stat_token(path: Path) -> str | None:
    """The identity `remember` compares with: take it before hashing."""
    identity = _identity(path)
    return identity[1] if identity else None
