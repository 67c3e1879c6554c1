"""An ITC index of an image gallery on disk (`bt-run index`, `bt-run retrieve --index`): the contrastive
embeddings of every image, computed once, so that a query only embeds its text and reranks its shortlist.

The file is an .npz (NumPy, no pickle): `embeddings` (N, E) float32, `images` (N,) the absolute image paths, and
`vision_sha256` + `precision`: the vision tower file the embeddings came from. An index read with another export or
precision is refused (its similarities would rank with another model's embeddings). The images themselves are not
hashed: an image changed on disk after indexing keeps its old embedding; re-index after changing the gallery.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from .errors import BtRuntimeError
from .images import not_a_file
from .outputs import check_output_path, new_file_beside
from .retrieval import embedding_rows_problem

FORMAT = "bt-gallery-index/1"
STAGING_BYTES = len(".") + len(".") + 8 + len(".npz")  # `.NAME.XXXXXXXX.npz` (new_file_beside) beside the index


def vision_sha256(runtime) -> str:
    return runtime.manifest.variants[runtime.backend.precision].files["vision_tower"].sha256


def check_output(path: Path, overwrite: bool) -> Path:
    """Refuse a target before any image is embedded, not after: a link, a name too long for the staging file
    `.NAME.XXXXXXXX.npz` beside it, an unwritable parent (bt_runtime.outputs)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise BtRuntimeError(f"--output {path}: an index file must end in .npz")
    path = check_output_path(path, "--output", STAGING_BYTES)
    if path.exists() and not path.is_file():
        raise BtRuntimeError(f"--output {path} is not a file; it is never replaced")
    if path.exists() and not overwrite:
        raise BtRuntimeError(f"--output {path} exists; pass --overwrite to replace it")
    return path


def write(path: Path, runtime, images: list[Path], embeddings: np.ndarray, overwrite: bool = False) -> None:
    """Atomically: a crash leaves either no file or the previous one, never a partial index. Image paths are
    stored absolute as the index directory's ids are (not normalized: `dir/link/..` is not `dir` when `link` is a
    symbolic link), so `retrieve --index` finds them from any working directory."""
    path = check_output(path, overwrite)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, staged = new_file_beside(path, f".{path.name}.", ".npz")  # umask's mode, as faiss.index
    except OSError as err:
        raise BtRuntimeError(f"--output {path}: cannot write ({err.strerror or type(err).__name__})") from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            np.savez(handle, format=np.array(FORMAT), embeddings=np.asarray(embeddings, np.float32),
                     images=np.array([str(Path(p).absolute()) for p in images]),
                     vision_sha256=np.array(vision_sha256(runtime)), precision=np.array(runtime.backend.precision))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staged, path)
    except OSError as err:  # disk full, a directory appeared at `path`: the staged file is removed below
        Path(staged).unlink(missing_ok=True)
        raise BtRuntimeError(f"--output {path}: cannot write ({err.strerror or type(err).__name__})") from None
    except BaseException:
        Path(staged).unlink(missing_ok=True)
        raise


# What each member may hold, read from its .npy header before a byte of data is decompressed (a crafted index
# cannot make `retrieve` inflate a 400 MB junk member or build a 2-D `images`; object arrays are never unpickled).
MEMBERS = {"format": ("U", 0), "vision_sha256": ("U", 0), "precision": ("U", 0), "embeddings": ("f", 2),
           "images": ("U", 1)}
MAX_PATH_CHARS = 4096  # PATH_MAX on Linux: a longer `images` string is not a path bt-run index wrote


def _member_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, header bytes) of an .npy member, from its first bytes only."""
    with archive.open(info) as handle:
        version = np.lib.format.read_magic(handle)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f"npy format version {version}")
        shape, _, dtype = read_header(handle)
        return shape, dtype, handle.tell()


def _check_members(path: Path, archive: zipfile.ZipFile, option: str) -> None:
    problems = []
    infos = {info.filename: info for info in archive.infolist()}
    for name, info in infos.items():
        key = name.removesuffix(".npy")
        if key not in MEMBERS or not name.endswith(".npy"):
            problems.append(f"unexpected member {name!r}")
            continue
        shape, dtype, header = _member_header(archive, info)
        kind, ndim = MEMBERS[key]
        if dtype.hasobject or dtype.kind != kind or len(shape) != ndim:
            problems.append(f"{key}: {dtype} of shape {shape}; expected a {ndim}-D {'str' if kind == 'U' else 'float'}"
                            " array")
        elif kind == "U" and dtype.itemsize > 4 * MAX_PATH_CHARS:
            problems.append(f"{key}: strings of {dtype.itemsize // 4} characters; at most {MAX_PATH_CHARS}")
        elif info.file_size != header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            problems.append(f"{key}: {info.file_size} bytes where its header says {shape} × {dtype}")
    missing = sorted({"format", "embeddings", "images", "vision_sha256"} - {n.removesuffix(".npy") for n in infos})
    if missing:
        problems.append(f"no {missing}")
    if problems:
        raise BtRuntimeError(f"{option} {path}: not a {FORMAT} file ({'; '.join(problems[:4])}); write one with "
                             "`bt-run index`")


def read(path: Path, runtime, option: str = "--index") -> tuple[np.ndarray, list[Path]]:
    """(embeddings, image paths) of an index written for this runtime's export and precision. Every member's
    name, dtype, shape and size is checked from its header before any data is decompressed. Errors name the
    index as `option` (the CLI's --index, retrieve()'s index)."""
    path = Path(path)
    why = not_a_file(path)
    if why:
        raise BtRuntimeError(f"{option} {str(path)[:200]}: {why} (write an index with `bt-run index`)")
    try:
        with zipfile.ZipFile(path) as archive:
            _check_members(path, archive, option)
        with np.load(path, allow_pickle=False) as data:
            fields = {key: data[key] for key in data.files}
    except BtRuntimeError:
        raise
    except Exception as err:  # zipfile/NumPy raise several types for a damaged or foreign file
        raise BtRuntimeError(f"{option} {path}: not an index written by `bt-run index` ({type(err).__name__})") \
            from None
    if str(fields["format"]) != FORMAT:
        raise BtRuntimeError(f"{option} {path}: not a {FORMAT} file (write one with `bt-run index`)")
    if str(fields["vision_sha256"]) != vision_sha256(runtime):
        raise BtRuntimeError(f"{option} {path} was built with another vision tower (precision "
                             f"{fields.get('precision', '?')}, sha256 {str(fields['vision_sha256'])[:12]}…) than "
                             f"this export's {runtime.backend.precision} one; rebuild it with `bt-run index`")
    embeddings, images = fields["embeddings"], [Path(p) for p in fields["images"].tolist()]
    if embeddings.shape[0] != len(images):
        raise BtRuntimeError(f"{option} {path}: {embeddings.shape} embeddings for {len(images)} images")
    problem = embedding_rows_problem(embeddings)
    if problem:
        raise BtRuntimeError(f"{option} {path}: embeddings {problem}; rebuild it with `bt-run index`")
    return embeddings, images
