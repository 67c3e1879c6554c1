"""Dataclasses ↔ JSON, and the JSON Schema derived from the same dataclasses (bt_runtime.manifest.schema).

Hand-written rather than pydantic or dacite: the runtime keeps its dependencies to numpy, onnxruntime, tokenizers
and Pillow, and every error must name the field's full path (`variants.int8.files.cross_modal.sha256: expected a
string, got 12`), which these few functions do.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Literal, Union

from ..errors import ManifestError


def _union_args(tp) -> tuple | None:
    origin = typing.get_origin(tp)
    return typing.get_args(tp) if origin is Union or origin is types.UnionType else None


def _describe(value) -> str:
    text = json.dumps(value)[:60] if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return {"dict": "an object", "list": "an array"}.get(text, text)


def _json_fields(tp) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(tp) if f.metadata.get("json", True)]


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def from_json(tp, value, where: str):
    """`value` (parsed JSON) as an instance of the schema type `tp`; a ManifestError names the field at `where`."""
    if tp is Any:
        return value
    if typing.get_origin(tp) is Literal:
        valid = typing.get_args(tp)
        if not isinstance(value, str) or value not in valid:
            raise ManifestError(f"{where}: {value!r}; valid: {list(valid)}")
        return value
    if (args := _union_args(tp)) is not None:
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own error names the field inside it
            return from_json(options[0], value, where)
        for option in args:
            if option is type(None):
                continue
            try:
                return from_json(option, value, where)
            except ManifestError:
                continue
        raise ManifestError(f"{where}: expected {_type_name(tp)}, got {_describe(value)}")
    origin = typing.get_origin(tp)
    if origin is list or tp is list:
        if not isinstance(value, list):
            raise ManifestError(f"{where}: expected an array, got {_describe(value)}")
        item = typing.get_args(tp)[0] if typing.get_args(tp) else Any
        return [from_json(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ManifestError(f"{where}: expected an object, got {_describe(value)}")
        item = typing.get_args(tp)[1] if typing.get_args(tp) else Any
        return {k: from_json(item, v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _dataclass_from_json(tp, value, where)
    return _scalar_from_json(tp, value, where)


def _dataclass_from_json(tp, value, where: str):
    if not isinstance(value, dict):
        raise ManifestError(f"{where}: expected an object, got {_describe(value)}")
    hints, kwargs = typing.get_type_hints(tp), {}
    fields = _json_fields(tp)
    unknown = sorted(set(value) - {f.name for f in fields})
    if unknown:
        raise ManifestError(f"{where}: unknown field(s) {unknown}")
    for f in fields:
        if f.name in value:
            kwargs[f.name] = from_json(hints[f.name], value[f.name], f"{where}.{f.name}")
        elif _required(f):
            raise ManifestError(f"{where}.{f.name}: required field missing")
    return tp(**kwargs)


def _scalar_from_json(tp, value, where: str):
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - a schema type this function does not know is a bug here, not bad input
        raise TypeError(f"unsupported schema type {tp!r}")
    if not ok:
        raise ManifestError(f"{where}: expected {_type_name(tp)}, got {_describe(value)}")
    return value


def _type_name(tp) -> str:
    if (args := _union_args(tp)) is not None:
        return " or ".join(_type_name(a) for a in args)
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(typing.get_args(tp))
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


def to_json(value):
    """A schema instance as plain JSON values (fields marked `json: False` left out)."""
    if dataclasses.is_dataclass(value):
        return {f.name: to_json(getattr(value, f.name)) for f in _json_fields(value)}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


def schema_of(tp) -> dict:
    """The JSON Schema (draft 2020-12) of a schema type; a dataclass's docstring becomes its description."""
    if tp is Any:
        return {}
    if typing.get_origin(tp) is Literal:
        return {"enum": list(typing.get_args(tp))}
    if (args := _union_args(tp)) is not None:
        return {"anyOf": [schema_of(a) for a in args]}
    origin = typing.get_origin(tp)
    if origin is list or tp is list:
        args = typing.get_args(tp)
        return {"type": "array", **({"items": schema_of(args[0])} if args else {})}
    if origin is dict or tp is dict:
        args = typing.get_args(tp)
        return {"type": "object", **({"additionalProperties": schema_of(args[1])} if args else {})}
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        fields = _json_fields(tp)
        schema = {"type": "object", "additionalProperties": False,
                  "properties": {f.name: schema_of(hints[f.name]) for f in fields},
                  "required": [f.name for f in fields if _required(f)]}
        if tp.__doc__ and not tp.__doc__.startswith(tp.__name__ + "("):
            schema["description"] = " ".join(tp.__doc__.split())
        return schema
    return {"type": {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}[tp]}
