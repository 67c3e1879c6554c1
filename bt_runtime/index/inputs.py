"""What `bt-run index` embeds: image files (a directory or a glob), a list file (one path per line) or a Parquet
column (image paths as strings, or encoded images as binary), as one sorted list of (image id, source) — the fixed
order that shards are slices of, so a rerun with the same inputs gives the same shards."""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import BtRuntimeError
from ..images import not_a_file, regular_files

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
PARQUET_PREFIX = "parquet:"  # source of an image stored in a Parquet file: parquet:PATH:COLUMN:ROW


@dataclass(frozen=True)
class Inputs:
    kind: str  # "images", "list" or "parquet"
    spec: str  # the argument as given (recorded in the job manifest)
    ids: list[str]  # sorted; unique
    sources: list[str]  # a file path, or parquet:PATH:COLUMN:ROW

    def fingerprint(self) -> str:
        """sha256 of the (id, source) list: a rerun resumes only over the very same inputs."""
        digest = hashlib.sha256()
        for image_id, source in zip(self.ids, self.sources, strict=True):
            digest.update(f"{image_id}\0{source}\n".encode())
        return digest.hexdigest()


def from_arguments(images: list[str] | None, list_file: str | None, parquet: str | None) -> Inputs:
    """The inputs of exactly one of --images (each a directory, a file or a glob), --list and --parquet."""
    given = [(name, value) for name, value in (("--images", images), ("--list", list_file), ("--parquet", parquet))
             if value]
    if len(given) != 1:
        raise BtRuntimeError("index: give exactly one of --images DIR|GLOB, --list FILE or --parquet PATH:COLUMN, "
                             f"got {', '.join(n for n, _ in given) or 'none'}")
    name, value = given[0]
    if name == "--images":
        paths = [p for spec in value for p in _image_files(str(spec))]
        value = " ".join(str(v) for v in value)
    elif name == "--list":
        paths = _listed(value)
    else:
        return _parquet(value)
    files = sorted({str(Path(p).absolute()) for p in paths})
    return Inputs(name[2:], value, files, files)


def _image_files(spec: str) -> list[str]:
    if os.path.isdir(spec):  # never raises (Path.is_dir does on a name too long, up to Python 3.13)
        files = [str(p) for p in regular_files(Path(spec), IMAGE_SUFFIXES)]
    elif any(c in spec for c in "*?["):
        files = [p for p in glob.glob(spec, recursive=True) if not os.path.isdir(p)]  # "**" also matches folders
        odd = [f"{p} ({why})" for p in files if (why := not_a_file(p))]
        if odd:  # as for a directory: refused by name, never opened (a FIFO would block the job)
            raise BtRuntimeError(f"--images {spec}: {len(odd)} match(es) not a readable regular file: "
                                 f"{'; '.join(odd[:10])}; remove them or narrow the pattern")
    elif not (why := not_a_file(spec)):
        files = [spec]
    else:
        raise BtRuntimeError(f"--images {spec}: not a directory, an image file or a glob match ({why})")
    if not files:
        raise BtRuntimeError(f"--images {spec} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _listed(spec: str) -> list[str]:
    _check_regular("--list", spec, spec)
    try:
        lines = Path(spec).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise BtRuntimeError(f"--list {spec}: cannot be read as UTF-8 text ({type(err).__name__}); expected one "
                             "image path per line") from None
    paths = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not paths:
        raise BtRuntimeError(f"--list {spec}: no image path in it (one path per line; # starts a comment)")
    base = Path(spec).absolute().parent  # relative paths are relative to the list file, not the working directory
    return [str(base / p) if not Path(p).is_absolute() else p for p in paths]


def _parquet(spec: str) -> Inputs:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path, _, column = spec.rpartition(":")
    if not path or not column:
        raise BtRuntimeError(f"--parquet {spec}: expected PATH:COLUMN (a Parquet file and its image column)")
    _check_regular("--parquet", spec, path)
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as err:
        raise BtRuntimeError(f"--parquet {spec}: {path} is not a readable Parquet file ({type(err).__name__})") \
            from None
    if column not in schema.names:
        raise BtRuntimeError(f"--parquet {spec}: no column {column!r}; columns: {', '.join(schema.names)}")
    kind = schema.field(column).type
    values = pq.read_table(path, columns=[column]).column(column)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        files = sorted({str(Path(p).absolute()) for p in values.to_pylist() if p})
        return Inputs("parquet", spec, files, files)
    if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
        raise BtRuntimeError(f"--parquet {spec}: column {column!r} is {kind}; expected string (image paths) or "
                             "binary (encoded images)")
    absolute = str(Path(path).absolute())
    ids = [f"{absolute}#{row}" for row in range(len(values))]
    order = sorted(range(len(ids)), key=ids.__getitem__)
    return Inputs("parquet", spec, [ids[i] for i in order],
                  [f"{PARQUET_PREFIX}{absolute}:{column}:{i}" for i in order])


def not_regular(path: str) -> str | None:
    """Why `path` is not a readable regular file (bt_runtime.images.not_a_file: judged by stat, never opened), worded
    for a row's error; None when it is one."""
    why = not_a_file(path)
    return why if why is None or why.endswith("not a regular file") else f"cannot be read ({why})"


def _check_regular(option: str, spec: str, path: str) -> None:
    """Refuse a list or Parquet file that is not a regular file before it is read (a FIFO would hang the job)."""
    why = not_regular(path)
    if why:
        raise BtRuntimeError(f"{option} {spec}: {path}: {why}; expected a regular file")


def read_bytes(sources: list[str]) -> list[bytes | str]:
    """Each source's encoded bytes, or a one-line error naming it (a missing file, or one that is not a regular
    file, is that row's error: it is never opened)."""
    out: list[bytes | str] = [b""] * len(sources)
    parquet: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for k, source in enumerate(sources):
        if source.startswith(PARQUET_PREFIX):
            path, column, row = source[len(PARQUET_PREFIX):].rsplit(":", 2)
            parquet.setdefault((path, column), []).append((k, int(row)))
            continue
        why = not_regular(source)
        if why:
            out[k] = f"{source}: {why} (an image must be a regular file)"
            continue
        try:
            out[k] = Path(source).read_bytes()
        except OSError as err:
            out[k] = f"{source}: cannot be read ({err.strerror or type(err).__name__})"
    for (path, column), wanted in parquet.items():
        import pyarrow as pa
        import pyarrow.parquet as pq

        why = not_regular(path)
        try:  # the file may have changed or gone since it was indexed: its rows' errors, not the whole call's
            values = None if why else pq.read_table(path, columns=[column]).column(column)
        except (OSError, KeyError, pa.ArrowException) as err:
            why = f"cannot be read ({type(err).__name__}: {str(err)[:80]})"
        for k, row in wanted:
            if why or row >= len(values):
                out[k] = f"{sources[k]}: {path}: {why or f'now has {len(values)} row(s)'}"
                continue
            value = values[row].as_py()
            out[k] = value if value else f"{sources[k]}: empty image bytes"
    return out
