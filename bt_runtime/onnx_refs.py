"""The external-data file names an ONNX graph refers to, read from its protobuf without the `onnx` package (not a
runtime dependency) and without reading any tensor's data.

Why: the manifest lists each graph with the external-data files it reads, each with its sha256; a graph
re-pointed to another file (`weights.bin`) would otherwise load that file unchecked (ONNX Runtime only confines
the path to the graph's directory). The walk follows every place onnx.proto lets a TensorProto sit — initializers,
sparse initializers, node attributes (tensors and subgraphs, recursively), functions and training info — and
collects the `location` of each tensor's external_data. Field numbers: onnx/onnx.proto (IR version 10).
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

from .errors import ManifestError

# message → {field number: message type of that length-delimited field}; fields not named here are skipped
_TENSOR = "tensor"
_SCHEMA: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node"},
    "graph": {1: "node", 5: _TENSOR, 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: _TENSOR, 6: "graph", 10: _TENSOR, 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: _TENSOR, 2: _TENSOR},
    _TENSOR: {13: "entry"},
    "entry": {},
}
_MAX_DEPTH = 64  # subgraphs nest (If/Loop bodies); a deeper file is not a graph bt-export wrote


class _Malformed(ValueError):
    pass


def _varint(data: memoryview, pos: int, end: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _walk(data: memoryview, pos: int, end: int, kind: str, depth: int, found: set[str]) -> None:
    if depth > _MAX_DEPTH:
        raise _Malformed("nested too deep")
    fields = _SCHEMA[kind]
    entry: dict[int, bytes] = {}
    while pos < end:
        tag, pos = _varint(data, pos, end)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, pos = _varint(data, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            size, pos = _varint(data, pos, end)
            if pos + size > end:
                raise _Malformed("a field runs past its message")
            if kind == "entry" and number in (1, 2):
                entry[number] = bytes(data[pos:pos + size])
            elif number in fields:
                _walk(data, pos, pos + size, fields[number], depth + 1, found)
            pos += size
        else:
            raise _Malformed(f"wire type {wire}")
        if pos > end:
            raise _Malformed("a field runs past its message")
    if kind == "entry" and entry.get(1) == b"location":
        found.add(entry.get(2, b"").decode("utf-8", "replace"))


def external_data_locations(path: Path) -> set[str]:
    """Every external-data `location` the graph at `path` names (empty for a self-contained graph)."""
    found: set[str] = set()
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise ManifestError(f"{str(path)!r} is empty, not an ONNX graph")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:  # weights stay on disk, unread
            data = memoryview(mapped)
            try:
                _walk(data, 0, len(data), "model", 0, found)
            except _Malformed as err:
                raise ManifestError(f"{str(path)!r} is not a readable ONNX graph ({err})") from None
            finally:
                data.release()
    return found


def check_external_data(path: Path, listed: list[str], where: str) -> None:
    """Refuse a graph that reads external data from any file but `listed` (the manifest's, each with a sha256)."""
    unlisted = sorted(external_data_locations(path) - set(listed))
    if unlisted:
        raise ManifestError(f"{where}: {str(path)!r} reads external data from {unlisted}, which the manifest does "
                            f"not list with a sha256 for this graph (listed: {sorted(listed)}); re-export it")
