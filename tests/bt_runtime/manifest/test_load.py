"""The typed manifest contract (bt_runtime.manifest): the published JSON Schema, field-named errors, confinement,
refusal of older schemas, files checked on load, and a property test: any mutation of a valid manifest loads, or
fails with ManifestError — never another type."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bt_runtime import BridgeTowerRuntime, ManifestError
from bt_runtime.manifest import SCHEMA_FILE, dump, from_dict, json_schema, read_manifest
from tests.conftest import edit_manifest, manifest_data, write_manifest_data


def test_published_schema_is_in_sync_with_the_dataclasses():
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema(), (
        "regenerate: python3 -c 'import json; from bt_runtime.manifest import *; "
        "SCHEMA_FILE.write_text(json.dumps(json_schema(), indent=2, ensure_ascii=False) + chr(10))'")


def test_an_export_validates_against_the_published_json_schema(tiny_export):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.validate(manifest_data(tiny_export), schema)
    broken = manifest_data(tiny_export)
    broken["variants"]["fp32"]["files"]["text_tower"]["opset"] = "23"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_dump_and_load_round_trip(tiny_export, tmp_path):
    manifest = read_manifest(tiny_export)
    again = from_dict(json.loads(dump(manifest)))
    assert json.loads(dump(again)) == manifest_data(tiny_export)


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
    (lambda d: d["preprocessing"]["center_crop"].update(height=64), r"center_crop: height 64.*image_size"),
    (lambda d: d["preprocessing"].update(layout="NHWC"), r"preprocessing\.layout: 'NHWC'; valid: \['NCHW'\]"),
    (lambda d: d["golden"]["tensors"][0].update(dtype="int8"), r"golden\.tensors\[0\]\.dtype: 'int8'; valid"),
    (lambda d: d["wiring"]["broadcast"].update(graphs=["cross_modal", "nope"]), r"broadcast\.graphs: 'nope'"),
    (lambda d: d["golden"]["inputs"][0]["image"].update(file="gone.png"), r"missing file.*gone\.png"),
    (lambda d: d["config"].update(contrastive_hidden_size=7),
     r"config\.contrastive_hidden_size: 7; vision_tower's image_embeds is \['batch', 32\]"),
])
def test_bad_fields_are_named(export_copy, edit, message):
    data = manifest_data(export_copy)
    edit(data)
    write_manifest_data(export_copy, data)
    with pytest.raises(ManifestError, match=message):
        BridgeTowerRuntime.load(export_copy)


@pytest.mark.parametrize("version, says", [(1, "schema_version 1.*re-export the checkpoint"),
                                           (2, "schema_version 2.*batch first.*re-export the checkpoint"),
                                           (3, "schema_version 3.*re-export the checkpoint")])
def test_older_exports_are_refused_with_the_way_forward(export_copy, version, says):
    data = manifest_data(export_copy)
    data["schema_version"] = version
    write_manifest_data(export_copy, data)
    with pytest.raises(ManifestError, match=says):
        read_manifest(export_copy)


@pytest.mark.parametrize("name", ["/etc/passwd", "../x.onnx", "sub/cross_modal.onnx", ".hidden.onnx", "", "..",
                                  "a\\b.onnx"])
def test_file_names_must_stay_inside_the_export(export_copy, name):
    data = manifest_data(export_copy)
    data["variants"]["fp32"]["files"]["cross_modal"]["file"] = name
    write_manifest_data(export_copy, data)
    with pytest.raises(ManifestError, match="not a bare file name"):
        read_manifest(export_copy)


def test_symlinked_graph_escaping_the_export_is_refused(export_copy, tmp_path):
    outside = tmp_path / "outside.onnx"
    shutil.move(export_copy / "text_tower.onnx", outside)
    os.symlink(outside, export_copy / "text_tower.onnx")
    with pytest.raises(ManifestError, match="symbolic link"):
        read_manifest(export_copy)


def test_a_symlinked_manifest_is_refused_and_a_symlinked_export_directory_is_not(export_copy, tmp_path):
    linked = tmp_path / "current"
    linked.symlink_to(export_copy, target_is_directory=True)  # exports/current -> exports/v3: a common deployment
    assert read_manifest(linked).directory == linked
    outside = tmp_path / "manifest-elsewhere.json"
    shutil.move(export_copy / "manifest.json", outside)
    os.symlink(outside, export_copy / "manifest.json")
    with pytest.raises(ManifestError, match="manifest.json' is a symbolic link; an export holds regular files only"):
        read_manifest(export_copy)


def test_non_utf8_manifest_is_a_manifest_error(export_copy):
    (export_copy / "manifest.json").write_bytes(b'{"schema_version": 3, "created": "\xff\xfe"}')
    with pytest.raises(ManifestError, match="not UTF-8"):
        read_manifest(export_copy)


_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.lists(st.integers(), max_size=3),
                    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


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
    original = manifest_data(tiny_export)
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
    data = manifest_data(export_copy)
    data["wiring"]["wires"][0]["source"] = "txt_bridge"
    write_manifest_data(export_copy, data)
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


def test_missing_directory_and_manifest(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "nope")
    with pytest.raises(ManifestError, match="has no manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(ManifestError, match="file' is not a directory"):
        read_manifest(tmp_path / "file")
    (tmp_path / "manifest.json").mkdir()
    with pytest.raises(ManifestError, match="manifest.json' is not a regular file"):
        read_manifest(tmp_path)


def test_a_listed_file_that_is_not_a_regular_file_is_named_as_such(export_copy):
    (export_copy / "tokenizer.json").unlink()
    os.mkfifo(export_copy / "tokenizer.json")  # read, it would block the load
    with pytest.raises(ManifestError, match=re.escape("not regular files: ['tokenizer.json']")):
        read_manifest(export_copy)


def test_unknown_schema_version(export_copy):
    edit_manifest(export_copy, lambda d: d.update(schema_version=99))
    with pytest.raises(ManifestError, match="schema_version 99"):
        read_manifest(export_copy)


def test_missing_graph_file(export_copy):
    (export_copy / "cross_modal.onnx").unlink()
    with pytest.raises(ManifestError, match="cross_modal.onnx"):
        BridgeTowerRuntime.load(export_copy)


def test_tampered_graph_is_refused_unless_opted_out(export_copy):
    edit_manifest(export_copy, lambda d: d["variants"]["fp32"]["files"]["text_tower"].update(sha256="0" * 64))
    runtime = BridgeTowerRuntime.load(export_copy)
    with pytest.raises(ManifestError, match="does not match the sha256.*verify_checksums=False"):
        runtime.embed_texts(["a cat"])
    assert BridgeTowerRuntime.load(export_copy, verify_checksums=False).embed_texts(["a cat"]).shape == (1, 32)
    from typer.testing import CliRunner

    from bt_runtime.cli import app

    result = CliRunner().invoke(app, ["itm", str(export_copy), "--image", str(export_copy / "golden.image.png"),
                                      "--text", "a cat"])  # bt-run has no flag to skip the check: says where it is
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "from Python: BridgeTowerRuntime.load(..., verify_checksums=False)" in said


def test_truncated_graph_is_refused(export_copy):
    path = export_copy / "vision_tower.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ManifestError, match="modified, replaced or truncated"):
        BridgeTowerRuntime.load(export_copy).embed_images([np.zeros((8, 8, 3), np.uint8)])
