"""The index job's output directory: `job.json` (what was asked: inputs, export, precision, shard size) and one Parquet
file per shard — shard k is the fixed slice [k·S, (k+1)·S) of the sorted input list, with columns id (string), source
(string), embedding (fixed-size list of float32; zeros for an error row: pyarrow 25 cannot read back null fixed-size
lists from Parquet) and error (string, null for a good row). A shard file is written whole or not at all (staged,
then renamed), so after any crash the files present are complete and a rerun with the same arguments embeds only the
missing shards."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import BtRuntimeError
from ..outputs import check_output_path, new_file_beside

JOB_FORMAT = "bt-index-job/1"
JOB_FILE = "job.json"
DEFAULT_SHARD_SIZE = 1024  # images per shard: ~4 MB of embeddings at E=1024; a rerun loses at most one per worker


@dataclass(frozen=True)
class Job:
    format: str
    inputs: str  # "--images DIR", "--list FILE", "--parquet PATH:COLUMN" as given
    inputs_sha256: str  # of the sorted (id, source) list (inputs.Inputs.fingerprint)
    count: int
    shard_size: int
    precision: str
    towers_sha256: dict  # vision_tower / text_tower file sha256 of the export's precision variant
    embedding_size: int

    @property
    def shards(self) -> int:
        return -(-self.count // self.shard_size)


def towers_sha256(runtime_or_manifest, precision: str) -> dict:
    manifest = getattr(runtime_or_manifest, "manifest", runtime_or_manifest)
    files = manifest.variants[precision].files
    return {name: files[name].sha256 for name in ("vision_tower", "text_tower") if name in files}


def shard_path(directory: Path, shard: int) -> Path:
    return Path(directory) / f"shard-{shard:06d}.parquet"


def schema(embedding_size: int):
    import pyarrow as pa

    return pa.schema([("id", pa.string()), ("source", pa.string()),
                      ("embedding", pa.list_(pa.float32(), embedding_size)), ("error", pa.string())])


def check_output_dir(directory: Path) -> Path:
    """`directory` made absolute, or a one-line error naming `--output`: a symbolic link (never followed, never
    replaced), a name too long, a parent that is not a writable directory (bt_runtime.outputs, as for a .npz); an
    existing directory, written inside only, must itself be writable. Nothing is staged beside it (0 bytes)."""
    path = Path(os.path.abspath(directory))
    if not os.path.isdir(path) or os.path.islink(path):  # a new directory, made in its parent (os.path: never raises)
        return check_output_path(Path(directory), "--output", 0)
    if not os.access(path, os.W_OK | os.X_OK):
        raise BtRuntimeError(f"--output {str(directory)!r} is not writable")
    return path


def _job_directory(directory: Path) -> Path:
    """`directory` checked as an index job's output (check_output_dir), made absolute."""
    directory = check_output_dir(directory)
    if directory.exists() and not directory.is_dir():
        raise BtRuntimeError(f"--output {directory} is not a directory; an index is a directory of shards")
    return directory


@contextlib.contextmanager
def job_lock(directory: Path, log=None) -> Iterator[Path]:
    """Hold `directory` (made if new) for one job: a second job on the same directory, which would delete
    (--overwrite) or interleave this one's shards, is refused while this one runs. An advisory flock(2) on the
    directory itself: nothing is written for it, and the kernel releases it when the process ends, SIGKILL included
    (a lock file would outlive a killed job and need a stale-lock rule). Where the filesystem cannot lock a
    directory (NFS emulates flock with a write lock, which needs a file open for writing: EBADF), the job runs
    unlocked, as before locks, and `log` says so."""
    directory = _job_directory(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as err:  # /proc/x: the parent said writable, the filesystem disagreed
        raise BtRuntimeError(f"--output {directory}: cannot write ({err.strerror or type(err).__name__})") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BtRuntimeError(f"--output {directory}: another index job is writing to it now; wait for it to "
                                 "finish, or choose another --output") from None
        except OSError as err:
            if log:
                log(f"--output {directory}: this filesystem cannot lock the directory ({err.strerror}); run one "
                    "index job at a time there")
        yield directory
    finally:
        os.close(handle)  # releases the lock


def open_job(directory: Path, job: Job, overwrite: bool = False) -> list[int]:
    """Create or resume the job in `directory`; returns the shards still to embed. A directory holding another
    job (other inputs, export or shard size) is refused unless `overwrite` (its shards are then removed)."""
    directory = _job_directory(directory)
    path = directory / JOB_FILE
    if path.is_file():
        previous = read_job(directory)
        if previous != job:
            if not overwrite:
                changed = [k for k, v in asdict(job).items() if asdict(previous).get(k) != v]
                raise BtRuntimeError(f"--output {directory} holds another index job (differs in "
                                     f"{', '.join(changed)}); pass --overwrite to replace it, or another --output")
            for old in written_files(directory, previous):
                old.unlink()
    elif directory.exists() and any(directory.iterdir()):
        raise BtRuntimeError(f"--output {directory} exists and is not an index job directory; choose an empty or "
                             "new directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(asdict(job), indent=2).encode())
    except OSError as err:  # /proc/x: the parent said writable, the filesystem disagreed; or a full disk
        raise BtRuntimeError(f"--output {directory}: cannot write ({err.strerror or type(err).__name__})") from None
    return [k for k in range(job.shards) if not shard_path(directory, k).is_file()]


def written_files(directory: Path, job: Job) -> list[Path]:
    """What a job wrote in `directory`, the files an `--overwrite` removes (FAISS manifest first, so an interrupted
    replacement never leaves an index that claims shards which are gone): exact names only, so a user's
    `faiss-notes.txt` or `shard-old.parquet` next to them stays."""
    from .faiss_index import INDEX_FILE, MANIFEST_FILE, ROWS_FILE  # faiss_index imports this module

    names = [directory / name for name in (MANIFEST_FILE, INDEX_FILE, ROWS_FILE)]
    shards = sorted(p for p in directory.iterdir()  # the entries there, not one name per shard job.json claims
                    if (m := re.fullmatch(r"shard-(\d{6,})\.parquet", p.name)) and int(m[1]) < job.shards
                    and p == shard_path(directory, int(m[1])))
    return [p for p in names if p.is_file()] + [p for p in shards if p.is_file()]


def typed(cls, data, types: dict[str, tuple[type, ...]]):
    """`cls(**data)` from a JSON object whose fields have the Python types `types` gives (a bool is never taken for
    a number), or ValueError naming the field; TypeError for a field missing or unknown. For the files this package
    writes (job.json, faiss.json), read back before any field is used."""
    if not isinstance(data, dict):
        raise ValueError(f"a JSON {type(data).__name__}, expected an object")
    value = cls(**data)
    for name, kinds in types.items():
        field = getattr(value, name)
        if isinstance(field, bool) or not isinstance(field, kinds):
            raise ValueError(f"{name} is {field!r}; expected {' or '.join(k.__name__ for k in kinds)}")
    return value


JOB_TYPES = {"format": (str,), "inputs": (str,), "inputs_sha256": (str,), "count": (int,), "shard_size": (int,),
             "precision": (str,), "towers_sha256": (dict,), "embedding_size": (int,)}


def read_job(directory: Path) -> Job:
    path = Path(directory) / JOB_FILE
    try:
        job = typed(Job, json.loads(path.read_text()), JOB_TYPES)
        if job.count < 0 or job.shard_size < 1 or job.embedding_size < 1:
            raise ValueError(f"count {job.count}, shard_size {job.shard_size}, embedding_size {job.embedding_size}")
    except (OSError, ValueError, TypeError) as err:
        raise BtRuntimeError(f"{directory}: no readable {JOB_FILE} ({type(err).__name__}: {str(err)[:120]}); not a "
                             "directory written by `bt-run index`") from None
    if job.format != JOB_FORMAT:
        raise BtRuntimeError(f"{path}: format {job.format!r}, expected {JOB_FORMAT!r}")
    return job


def write_shard(directory: Path, shard: int, ids: list[str], sources: list[str], embeddings: np.ndarray,
                errors: list[str], embedding_size: int) -> Path:
    """One shard, atomically. embeddings (n, E) float32; rows whose error is non-empty get a zero embedding."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors = np.array(embeddings, np.float32).reshape(len(ids), embedding_size)  # (n, E), a copy
    vectors[[k for k, e in enumerate(errors) if e]] = 0.0
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), embedding_size)
    table = pa.table({"id": pa.array(ids, pa.string()), "source": pa.array(sources, pa.string()),
                      "embedding": column, "error": pa.array([e or None for e in errors], pa.string())},
                     schema=schema(embedding_size))
    path = shard_path(directory, shard)
    with _replacing(path) as staged:
        pq.write_table(table, staged)
    return path


def read_shards(directory: Path, job: Job | None = None):
    """Every row of a finished job, in input order: a pyarrow Table. Refuses an unfinished job by name."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    job = job or read_job(directory)
    missing = [k for k in range(job.shards) if not shard_path(directory, k).is_file()]
    if missing:
        raise BtRuntimeError(f"{directory}: {len(missing)} of {job.shards} shards are not written yet (first: "
                             f"{shard_path(directory, missing[0]).name}); rerun the same `bt-run index` to finish")
    return pa.concat_tables([pq.read_table(shard_path(directory, k)) for k in range(job.shards)])


def embeddings_of(table) -> tuple[np.ndarray, np.ndarray]:
    """(good row numbers, their embeddings (n, E) float32) of a shard table."""
    good = np.flatnonzero(~table.column("error").is_valid().to_numpy(zero_copy_only=False))
    column = table.column("embedding").combine_chunks().take(good)
    size = column.type.list_size
    return good, column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(good), size)


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[str]:
    """A staging file beside `path` to write; on success it is synced and renamed over `path`, on any failure
    removed, so `path` is always whole or absent. Created with mode 0o666 for the kernel to apply the umask, as to
    any new file (bt_runtime.outputs.new_file_beside)."""
    try:
        descriptor, staged = new_file_beside(path, f".{path.name}.", ".tmp")
    except FileExistsError as err:
        raise BtRuntimeError(str(err)) from None
    os.close(descriptor)
    try:
        yield str(staged)
        with open(staged, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(staged, path)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: bytes) -> None:
    with _replacing(path) as staged:
        Path(staged).write_bytes(data)
