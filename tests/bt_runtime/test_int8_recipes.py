"""int8 recipe per CPU class: the class from /proc/cpuinfo flags, and the files the runtime opens for it (flags are
injected: nothing here depends on this machine's instruction set)."""

from __future__ import annotations

import shutil

import pytest

from bt_runtime import BridgeTowerRuntime, cpu
from bt_runtime.backends.onnxruntime import choose_files
from bt_runtime.errors import BackendInputError
from bt_runtime.manifest import GraphFile, Int8Recipe, Parity, RecipeMeasurement, Variant

from ..conftest import edit_manifest

SAPPHIRE_RAPIDS = {"avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16"}
EPYC_GENOA = {"avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16"}
ALDER_LAKE = {"avx2", "avx_vnni"}
SKYLAKE_X = {"avx2", "avx512f", "avx512bw"}
EPYC_ROME = {"avx2", "fma"}


@pytest.mark.parametrize("flags, expected", [(SAPPHIRE_RAPIDS, "amx"), (EPYC_GENOA, "avx512-vnni"),
                                             (ALDER_LAKE, "avx-vnni"), (SKYLAKE_X, "avx2"), (EPYC_ROME, "avx2"),
                                             ({"neon", "asimd"}, "other"), (set(), "other")])
def test_cpu_class_from_flags(flags, expected):
    assert cpu.cpu_class(frozenset(flags)) == expected


def _files(suffix: str) -> dict[str, GraphFile]:
    return {g: GraphFile(f"{g}{suffix}.onnx", "0" * 64, 23) for g in ("vision_tower", "text_tower", "cross_modal")}


def _variant(measured_on: list[tuple[str, bool]]) -> Variant:
    measured = [RecipeMeasurement(c, "test CPU", "tiny", passed, {}, {"pair_ms": 1.0}) for c, passed in measured_on]
    recipe = Int8Recipe("s8-all", ["amx", "avx512-vnni"], "int8", False, False, [], _files(".s8"), measured)
    return Variant("onnx", "float32", _files(".safe"), Parity(True, True, {}, []), recipes=[recipe])


def test_the_measured_class_gets_its_recipe_every_other_class_the_safe_files():
    variant = _variant([("avx512-vnni", True)])
    files, name, why = choose_files(variant, None, True, "avx512-vnni")
    assert name == "s8-all" and files["vision_tower"].file == "vision_tower.s8.onnx" and "test CPU" in why
    files, name, why = choose_files(variant, None, True, "amx")  # meant for AMX, never measured there
    assert name == "safe" and files["vision_tower"].file == "vision_tower.safe.onnx" and "not measured" in why
    assert choose_files(variant, None, True, "avx2")[1] == "safe"
    assert choose_files(variant, None, False, "avx512-vnni")[1] == "safe"  # not the CPU provider's kernels


def test_a_failed_measurement_is_not_a_measurement():
    assert choose_files(_variant([("avx512-vnni", False)]), None, True, "avx512-vnni")[1] == "safe"


def test_a_recipe_can_be_forced_by_name_and_a_wrong_name_is_refused():
    variant = _variant([])
    assert choose_files(variant, "s8-all", True, "avx2")[1] == "s8-all"
    assert choose_files(_variant([("avx512-vnni", True)]), "safe", True, "avx512-vnni")[1] == "safe"
    with pytest.raises(BackendInputError, match=r"int8_recipe 'u8'; valid for this export: \['safe', 's8-all'\]"):
        choose_files(variant, "u8", True, "avx2")


def _with_recipe(export_copy):
    """The tiny export with an int8 variant (its fp32 files: the safe recipe) and a recipe whose files are copies
    under other names, measured (passing) on avx512-vnni only."""
    renamed = {}

    def edit(data):
        fp32 = data["variants"]["fp32"]
        files = {}
        for graph, entry in fp32["files"].items():
            copy = entry["file"].replace(".onnx", ".int8-test.onnx")
            shutil.copy(export_copy / entry["file"], export_copy / copy)  # same external data file as fp32
            files[graph] = dict(entry, file=copy)
            renamed[graph] = copy
        measured = {"cpu_class": "avx512-vnni", "machine": "test", "checkpoint": "tiny", "passed": True,
                    "accuracy": {}, "speed": {}}
        recipe = {"name": "test", "cpu_classes": ["avx512-vnni", "amx"], "weights": "int8", "per_channel": False,
                  "reduce_range": False, "excluded_patterns": [], "files": files, "measured": [measured]}
        data["variants"]["int8"] = dict(fp32, recipes=[recipe])

    edit_manifest(export_copy, edit)
    return renamed


@pytest.mark.parametrize("flags, recipe", [(EPYC_GENOA, "test"), (SAPPHIRE_RAPIDS, "safe"), (EPYC_ROME, "safe")])
def test_the_runtime_opens_the_recipe_for_the_injected_cpu(export_copy, monkeypatch, flags, recipe):
    renamed = _with_recipe(export_copy)
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset(flags))
    with BridgeTowerRuntime.load(export_copy, precision="int8") as runtime:
        assert runtime.backend.int8_recipe == recipe
        opened = runtime.backend.files["vision_tower"].file
        assert (opened == renamed["vision_tower"]) == (recipe == "test")
        assert runtime.backend.session("vision_tower")._model_path.endswith(opened)
        if recipe == "safe" and "amx_int8" in flags:
            assert "not measured" in runtime.backend.int8_recipe_reason
