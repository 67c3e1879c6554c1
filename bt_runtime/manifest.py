"""`manifest.json`: the one IO contract between the exporter and everything that reads an export.

The exporter writes it (bt_export.manifest builds the dict); the runtime, benchmarks, the C++ example and the tests
read graph files, tensor names, dtypes, shapes, preprocessing and tokenizer settings from it. Schema (version 1):

    schema_version       1
    checkpoint           {kind, alias?, hub_id?, path?, revision?, random_init, heads, head_classes}
    config               {hidden_size, num_cross_layers, num_image_tokens, image_size, vocab_size, max_text_length, …}
    preprocessing        {image_size, resize{…}, center_crop{…}, rescale_factor, mean, std, layout}
    tokenizer            {file, max_length, pad_token_id, mask_token, mask_token_id, bos_token_id, eos_token_id}
    graphs               {vision_tower|text_tower|cross_modal: {inputs: [{name, dtype, shape}], outputs: […]}}
    variants             {fp32: {attention, io_dtype, files: {graph: {file, sha256, external_data?}}, parity}}
    cross_modal_broadcast how one image meets many texts (the graph gathers image_bridge rows by image_index)
    opset, versions, created
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import ManifestError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
GRAPH_NAMES = ("vision_tower", "text_tower", "cross_modal")
REQUIRED_KEYS = ("schema_version", "checkpoint", "config", "preprocessing", "tokenizer", "graphs", "variants")


@dataclass(frozen=True)
class Manifest:
    directory: Path
    data: dict

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(self.data["checkpoint"]["heads"])

    @property
    def precisions(self) -> tuple[str, ...]:
        return tuple(self.data["variants"])

    def graph_io(self, graph: str) -> dict:
        return self.data["graphs"][graph]

    def graph_path(self, graph: str, precision: str = "fp32") -> Path:
        if precision not in self.data["variants"]:
            raise ManifestError(f"precision {precision!r} is not in this export; available: {list(self.precisions)}")
        return self.directory / self.data["variants"][precision]["files"][graph]["file"]


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str, remedy: str) -> None:
    """Refuse a file whose content no longer matches the sha256 the manifest recorded; `remedy` says what to do."""
    actual = sha256_file(path)
    if actual != expected:
        raise ManifestError(f"{str(path)!r} does not match the sha256 in manifest.json (expected {expected[:12]}…, "
                            f"got {actual[:12]}…): the file was modified or truncated. {remedy}")


def read_manifest(directory: str | Path) -> Manifest:
    """Read and check `directory/manifest.json`: schema version, required sections, graph files present."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise ManifestError(f"export directory {str(directory)!r} does not exist")
    if not path.is_file():
        raise ManifestError(f"export directory {str(directory)!r} has no {MANIFEST_NAME} (was it made by bt-export?)")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ManifestError(f"{str(path)!r} is not readable JSON: {err}") from err
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != SCHEMA_VERSION:
        raise ManifestError(f"{str(path)!r} has schema_version {version!r}; this bt_runtime reads {SCHEMA_VERSION}. "
                            "Re-export with the matching bt-export, or upgrade bt-toolkit.")
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise ManifestError(f"{str(path)!r} lacks required section(s) {missing}")
    absent = [entry["file"] for variant in data["variants"].values() for entry in variant["files"].values()
              if not (directory / entry["file"]).is_file()]
    if absent:
        raise ManifestError(f"export directory {str(directory)!r} is missing file(s) named in its manifest: {absent}")
    return Manifest(directory, data)
