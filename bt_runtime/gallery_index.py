"""An ITC index of an image gallery on disk (`bt-run index`, `bt-run retrieve --index`): the contrastive
embeddings of every image, computed once, so that a query only embeds its text and reranks its shortlist.

The file is an .npz (NumPy, no pickle): `embeddings` (N, E) float32, `images` (N,) the absolute image paths, and
`vision_sha256` + `precision`: the vision tower file the embeddings came from. An index read with another export or
precision is refused (its similarities would rank with another model's embeddings). The images themselves are not
hashed: an image changed on disk after indexing keeps its old embedding; re-index after changing the gallery.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import BtRuntimeError

FORMAT = "bt-gallery-index/1"


def vision_sha256(runtime) -> str:
    return runtime.manifest.variants[runtime.backend.precision].files["vision_tower"].sha256


def check_output(path: Path, overwrite: bool) -> Path:
    """Refuse a target before any image is embedded, not after."""
    path = Path(path)
    if path.suffix != ".npz":
        raise BtRuntimeError(f"--output {path}: an index file must end in .npz")
    if path.exists() and not path.is_file():
        raise BtRuntimeError(f"--output {path} is not a file; it is never replaced")
    if path.exists() and not overwrite:
        raise BtRuntimeError(f"--output {path} exists; pass --overwrite to replace it")
    return path


def write(path: Path, runtime, images: list[Path], embeddings: np.ndarray, overwrite: bool = False) -> None:
    """Atomically: a crash leaves either no file or the previous one, never a partial index. Image paths are
    stored absolute (symbolic links kept as given), so `retrieve --index` finds them from any working directory."""
    path = check_output(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, staged = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            np.savez(handle, format=np.array(FORMAT), embeddings=np.asarray(embeddings, np.float32),
                     images=np.array([os.path.abspath(p) for p in images]),
                     vision_sha256=np.array(vision_sha256(runtime)), precision=np.array(runtime.backend.precision))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staged, path)
    except BaseException:
        Path(staged).unlink(missing_ok=True)
        raise


def read(path: Path, runtime) -> tuple[np.ndarray, list[Path]]:
    """(embeddings, image paths) of an index written for this runtime's export and precision."""
    path = Path(path)
    if not path.is_file():
        raise BtRuntimeError(f"--index {path}: no such file (write one with `bt-run index`)")
    try:
        with np.load(path, allow_pickle=False) as data:
            fields = {key: data[key] for key in data.files}
    except Exception as err:  # zipfile/NumPy raise several types for a damaged or foreign file
        raise BtRuntimeError(f"--index {path}: not an index written by `bt-run index` ({type(err).__name__})") \
            from None
    if str(fields.get("format", "")) != FORMAT or not {"embeddings", "images", "vision_sha256"} <= set(fields):
        raise BtRuntimeError(f"--index {path}: not a {FORMAT} file (write one with `bt-run index`)")
    if str(fields["vision_sha256"]) != vision_sha256(runtime):
        raise BtRuntimeError(f"--index {path} was built with another vision tower (precision "
                             f"{fields.get('precision', '?')}, sha256 {str(fields['vision_sha256'])[:12]}…) than "
                             f"this export's {runtime.backend.precision} one; rebuild it with `bt-run index`")
    embeddings, images = fields["embeddings"], [Path(p) for p in fields["images"].tolist()]
    if embeddings.ndim != 2 or embeddings.shape[0] != len(images):
        raise BtRuntimeError(f"--index {path}: {embeddings.shape} embeddings for {len(images)} images")
    return embeddings, images
