"""The typed manifest contract (schema 2): the published JSON Schema, field-named errors, confinement, v1 refusal,
and a property test: any mutation of a valid manifest loads, or fails with ManifestError — never another type."""

from __future__ import annotations

import copy
import json
import os
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bt_runtime import BridgeTowerRuntime, ManifestError
from bt_runtime.manifest import SCHEMA_FILE, dump, from_dict, json_schema, read_manifest


@pytest.fixture
def export_copy(tiny_export, tmp_path):
    return shutil.copytree(tiny_export, tmp_path / "copy")


def _data(directory):
    return json.loads((directory / "manifest.json").read_text())


def _write(directory, data):
    (directory / "manifest.json").write_text(json.dumps(data))


def test_published_schema_is_in_sync_with_the_dataclasses():
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema(), (
        "regenerate: python3 -c 'import json; from bt_runtime.manifest import *; "
        "SCHEMA_FILE.write_text(json.dumps(json_schema(), indent=2, ensure_ascii=False) + chr(10))'")


def test_an_export_validates_against_the_published_json_schema(tiny_export):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.validate(_data(tiny_export), schema)
    broken = _data(tiny_export)
    broken["variants"]["fp32"]["files"]["text_tower"]["opset"] = "23"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_dump_and_load_round_trip(tiny_export, tmp_path):
    manifest = read_manifest(tiny_export)
    again = from_dict(json.loads(dump(manifest)))
    assert json.loads(dump(again)) == _data(tiny_export)


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["variants"]["fp32"]["files"]["cross_modal"].update(sha256=12),
     r"variants\.fp32\.files\.cross_modal\.sha256: expected a string, got 12"),
    (lambda d: d["preprocessing"]["resize"].pop("size_divisor"), r"preprocessing\.resize\.size_divisor: required"),
    (lambda d: d["preprocessing"]["resize"].update(size_divisor=0), r"size_divisor: 0; must be ≥ 1"),
    (lambda d: d["preprocessing"]["resize"].update(resample="3"), r"resample: '3'; valid: \['nearest'"),
    (lambda d: d["preprocessing"].update(alpha="purple"), r"preprocessing\.alpha: 'purple'"),
    (lambda d: d["preprocessing"].update(std=[0.2, 0.0, 0.2]), r"std non-zero"),
    (lambda d: d.update(graphs=[]), r"manifest\.graphs: expected an object, got an array"),
    (lambda d: d["graphs"].pop("text_tower"), r"graphs: has \['cross_modal', 'cross_modal_pooled', 'vision_tower'\]"),
    (lambda d: d["graphs"].update(extra=d["graphs"]["cross_modal"]), r"graphs: has .*'extra'.*optionally"),
    (lambda d: d["variants"]["fp32"]["files"].pop("cross_modal_pooled"), r"variants\.fp32\.files: has"),
    (lambda d: d["wiring"]["substitutes"][0].update(omits=[]), r"wiring\.substitutes\[0\]: .*must make up"),
    (lambda d: d["checkpoint"].update(heads=["itm", "vqa"]), r"checkpoint\.heads\[1\]: .vqa.; valid: \[.itm."),
    (lambda d: d["tokenizer"].update(extra=1), r"manifest\.tokenizer: unknown field\(s\) \['extra'\]"),
    (lambda d: d.update(variants={}), r"variants: empty"),
])
def test_bad_fields_are_named(export_copy, edit, message):
    data = _data(export_copy)
    edit(data)
    _write(export_copy, data)
    with pytest.raises(ManifestError, match=message):
        BridgeTowerRuntime.load(export_copy)


@pytest.mark.parametrize("version, says", [(1, "schema_version 1.*re-export the checkpoint"),
                                           (2, "schema_version 2.*batch first.*re-export the checkpoint"),
                                           (3, "schema_version 3.*re-export the checkpoint")])
def test_older_exports_are_refused_with_the_way_forward(export_copy, version, says):
    data = _data(export_copy)
    data["schema_version"] = version
    _write(export_copy, data)
    with pytest.raises(ManifestError, match=says):
        read_manifest(export_copy)


@pytest.mark.parametrize("name", ["/etc/passwd", "../x.onnx", "sub/cross_modal.onnx", ".hidden.onnx", "", "..",
                                  "a\\b.onnx"])
def test_file_names_must_stay_inside_the_export(export_copy, name):
    data = _data(export_copy)
    data["variants"]["fp32"]["files"]["cross_modal"]["file"] = name
    _write(export_copy, data)
    with pytest.raises(ManifestError, match="not a bare file name"):
        read_manifest(export_copy)


def test_symlinked_graph_escaping_the_export_is_refused(export_copy, tmp_path):
    outside = tmp_path / "outside.onnx"
    shutil.move(export_copy / "text_tower.onnx", outside)
    os.symlink(outside, export_copy / "text_tower.onnx")
    with pytest.raises(ManifestError, match="symbolic link"):
        read_manifest(export_copy)


def test_non_utf8_manifest_is_a_manifest_error(export_copy):
    (export_copy / "manifest.json").write_bytes(b'{"schema_version": 3, "created": "\xff\xfe"}')
    with pytest.raises(ManifestError, match="not UTF-8"):
        read_manifest(export_copy)


_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5),
                                                                                               st.integers(), max_size=2))


def _paths(data, prefix=()):
    if isinstance(data, dict):
        for key, value in data.items():
            yield prefix + (key,)
            yield from _paths(value, prefix + (key,))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield prefix + (index,)
            yield from _paths(value, prefix + (index,))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(choice=st.integers(0, 10**9), value=_LEAVES, delete=st.booleans())
def test_any_mutation_loads_or_is_a_manifest_error(tiny_export, choice, value, delete):
    original = _data(tiny_export)
    paths = list(_paths(original))
    path = paths[choice % len(paths)]
    data = copy.deepcopy(original)
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    try:
        manifest = from_dict(data)
    except ManifestError:
        return
    json.loads(dump(manifest))  # what loads, dumps


def test_wiring_is_data_that_matches_the_graphs(tiny_export):
    manifest = read_manifest(tiny_export)
    wiring = manifest.wiring
    fed = {(w.graph, w.input): (w.source_graph, w.source, w.source_kind) for w in wiring.wires}
    assert fed[("cross_modal", "image_bridge")] == ("vision_tower", "image_bridge", "output")
    assert fed[("cross_modal", "attention_mask")] == ("text_tower", "attention_mask", "input")
    # every cross-modal input is either wired or the broadcast index
    inputs = {t.name for t in manifest.graphs["cross_modal"].inputs}
    assert inputs == {i for g, i in fed if g == "cross_modal"} | {wiring.broadcast.index_input}
    assert (wiring.broadcast.gathered_input, wiring.broadcast.axis) == ("image_bridge", 0)  # batch first (schema 3)
    assert set(wiring.outputs) == {t.name for io in manifest.graphs.values() for t in io.outputs}
    assert "column 1" in wiring.outputs["itm_logits"]
    # the head-specific graph: wired like cross_modal, and said to replace it for everything but mlm_logits
    assert {i for g, i in fed if g == "cross_modal_pooled"} == {i for g, i in fed if g == "cross_modal"}
    [substitute] = wiring.substitutes
    assert (substitute.graph, substitute.replaces, substitute.omits) == ("cross_modal_pooled", "cross_modal",
                                                                         ["mlm_logits"])
    assert wiring.substitute_for("cross_modal", ["itm_logits", "pooler_output"]) == "cross_modal_pooled"
    assert wiring.substitute_for("cross_modal", ["itm_logits", "mlm_logits"]) == "cross_modal"


def test_wiring_naming_an_unknown_tensor_is_refused(export_copy):
    data = _data(export_copy)
    data["wiring"]["wires"][0]["source"] = "txt_bridge"
    _write(export_copy, data)
    with pytest.raises(ManifestError, match=r"wiring\.wires\[0\]: text_tower\.txt_bridge is not one of"):
        read_manifest(export_copy)


def test_closed_value_sets_are_published_as_enums():
    properties = json_schema()["$defs"] if "$defs" in json_schema() else json_schema()["properties"]
    checkpoint = properties["checkpoint"]["properties"]
    assert checkpoint["kind"]["enum"] == ["tiny", "alias", "hub", "local", "shapes"]
    assert checkpoint["heads"]["items"]["enum"] == ["itm", "mlm", "itc"]
    wire = properties["wiring"]["anyOf"][0]["properties"]["wires"]["items"]["properties"]
    assert wire["source_kind"]["enum"] == ["output", "input"]


def test_golden_tensors_name_the_graph_that_produced_them(tiny_export):
    golden = read_manifest(tiny_export).golden
    graphs = {t.name: t.graph for t in golden.tensors}
    assert graphs["pixel_values"] is None and graphs["input_ids"] is None
    assert graphs["image_bridge"] == "vision_tower" and graphs["text_bridge"] == "text_tower"
    assert graphs["itm_logits"] == graphs["itm_probability"] == "cross_modal"
