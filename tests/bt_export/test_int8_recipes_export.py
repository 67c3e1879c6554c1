"""The export measures the int8 recipes meant for its CPU's class and records them (docs/int8.md, "How the choice is
made"). The CPU's flags are injected (for the export and the runtime alike) and the bounds are replaced (wide to pass,
impossible to fail), so nothing here depends on this machine's instruction set or on how well the tiny random weights
survive a recipe."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from bt_export import export_checkpoint, int8_recipes  # noqa: E402
from bt_runtime import BridgeTowerRuntime, cpu  # noqa: E402

from ..bt_runtime.test_int8_recipes import EPYC_GENOA, EPYC_ROME  # noqa: E402
from ..conftest import SHARED_ASSETS  # noqa: E402

PASS = {"int8": {"itm_probability_abs": 1.0, "itm_decision_agreement": 0.0, "mlm_top1_agreement": 0.0,
                 "embedding_cosine_min": -1.0}}
FAIL = {"int8": {"itm_probability_abs": -1.0, "itm_decision_agreement": 2.0, "mlm_top1_agreement": 2.0,
                 "embedding_cosine_min": 2.0}}


def _export(tmp_path, monkeypatch, flags: set, bounds: dict):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(int8_recipes, "VARIANT_BOUNDS", bounds)
    images = [SHARED_ASSETS / "images"] if SHARED_ASSETS.is_dir() else None
    return export_checkpoint("tiny", tmp_path / "export", precisions=("fp32", "int8"), parity_images=images)


@pytest.mark.parametrize("cpu_class, flags", [("avx2", EPYC_ROME), ("avx512-vnni", EPYC_GENOA)])
def test_the_recipe_meant_for_the_class_is_measured_recorded_and_opened_there(tmp_path, monkeypatch, cpu_class,
                                                                               flags):
    result = _export(tmp_path, monkeypatch, flags, PASS)
    assert result.manifest.variants["int8"].validated_isa == cpu.isa_class()
    meant = [spec for spec in int8_recipes.RECIPES if cpu_class in spec.cpu_classes]
    assert len(meant) == 1, f"one recipe per x86 class with integer units worth using; {cpu_class}: {meant}"
    (recipe,) = result.manifest.variants["int8"].recipes
    assert recipe.name == meant[0].name and recipe.reduce_range == meant[0].reduce_range
    (measured,) = recipe.measured
    assert measured.cpu_class == cpu_class and measured.passed
    assert set(measured.speed) == {"pair_ms", "fp32_pair_ms", "safe_pair_ms"}
    assert set(measured.accuracy) >= {"itm_probability_abs", "mlm_top1_agreement"}
    safe = result.manifest.variants["int8"].files
    for graph, entry in recipe.files.items():
        assert (result.output / entry.file).is_file()
        assert entry.file != safe[graph].file  # every graph is quantized: none falls back to the safe file

    with BridgeTowerRuntime.load(result.output, precision="int8") as runtime:  # on the CPU it was exported on
        assert runtime.backend.int8_recipe == recipe.name
        assert runtime.backend.files["vision_tower"].file == recipe.files["vision_tower"].file
    other = EPYC_GENOA if flags is EPYC_ROME else EPYC_ROME  # measured on one class only: the other gets safe
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset(other))
    with pytest.warns(RuntimeWarning, match="validated on a"), \
            BridgeTowerRuntime.load(result.output, precision="int8") as runtime:
        assert runtime.backend.int8_recipe == "safe"
        assert runtime.backend.files["vision_tower"].file == safe["vision_tower"].file


def test_a_recipe_that_misses_a_bound_is_removed_and_the_variant_says_why(tmp_path, monkeypatch):
    result = _export(tmp_path, monkeypatch, EPYC_ROME, FAIL)
    variant = result.manifest.variants["int8"]
    assert variant.recipes == []
    (name,) = [spec.name for spec in int8_recipes.RECIPES if "avx2" in spec.cpu_classes]
    assert variant.details["recipes_left_out"][name].startswith("missed itm_probability_abs=")
    assert not list(result.output.glob(f"*.int8-{name}.onnx*"))  # its files went with it
    assert variant.parity.passed  # the safe recipe is judged on the real bounds, unaffected
