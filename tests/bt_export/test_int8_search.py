"""`--int8-search`: block sensitivity on the calibration pairs, then the largest set that keeps every int8 bound.
A block made harmful on purpose must be measured as such and left float32; the chosen set passes the bounds."""

from __future__ import annotations

import re

import onnx
import pytest

from bt_export import export_checkpoint
from bt_export.errors import BtExportError
from bt_export.int8_search import block_key, damage, exclusions
from bt_export.parity import ParityRow
from bt_export.specs import VARIANT_BOUNDS

from .graph_edits import flip_itm_head

HARMFUL = "cross_modal/itm_score"


def test_block_keys_are_layers_heads_and_the_mlm_decoder_alone():
    assert block_key("blocks.3.attn.out_proj") == "blocks.3"
    assert block_key("layers.11.attention.self.query") == "layers.11"
    assert block_key("image_layers.0.crossattention.self.key") == "image_layers.0"
    assert block_key("mlm_score.mlm_score.decoder") == "mlm_score.decoder"
    assert block_key("mlm_score.mlm_score.transform.mlm_score.transform.dense") == "mlm_score.transform"
    assert block_key("itc_image_head.itc_image_head.fc") == "itc_image_head"


def test_exclusions_keep_exactly_the_other_blocks_float32():
    blocks = ["vision_tower/blocks.1", "vision_tower/blocks.10", "cross_modal/itm_score"]
    patterns = exclusions(blocks, {"vision_tower/blocks.1"})
    kept = lambda path: any(re.search(p, path) for p in patterns)  # noqa: E731
    assert not kept("vision_tower/blocks.1.mlp.c_fc")
    assert kept("vision_tower/blocks.10.mlp.c_fc") and kept("cross_modal/itm_score.itm_score.fc")


def test_damage_is_the_worst_deviation_over_its_allowance():
    bounds = VARIANT_BOUNDS["int8"]
    rows = [ParityRow("c", "itm_logits", 0.01, bounds["itm_probability_abs"], "itm_probability_abs"),
            ParityRow("c", "mlm_logits", 0.985, bounds["mlm_top1_agreement"], "mlm_top1_agreement")]
    assert damage(rows) == pytest.approx(max(0.01 / 0.02, 0.015 / 0.03))
    assert damage([ParityRow("c", "x", 1.0, 1.0, "itm_decision_agreement")]) == 0.0


@pytest.fixture(scope="module")
def searched(tmp_path_factory, photos_dir):
    """A tiny int8 search in which quantizing the ITM head flips its logits (as a broken block would)."""
    from bt_export import int8_search, precision

    real = precision.write_int8

    def harmful(src, dst, graph, excluded_patterns, *args, **kwargs):
        details = real(src, dst, graph, excluded_patterns, *args, **kwargs)
        if details is not None and not any(re.search(p, f"{HARMFUL}.itm_score.fc") for p in excluded_patterns) \
                and graph.startswith("cross_modal"):
            flip_itm_head(dst)
        return details

    patch = pytest.MonkeyPatch()
    patch.setattr(int8_search, "write_int8", harmful)
    patch.setattr(precision, "write_int8", harmful)
    try:
        return export_checkpoint("tiny", tmp_path_factory.mktemp("search") / "t", precisions=("fp32", "int8"),
                                 int8_search=True, parity_images=[photos_dir])
    finally:
        patch.undo()


def test_search_leaves_the_harmful_block_out_and_keeps_every_bound(searched):
    variant = searched.manifest.variants["int8"]
    search = variant.details["search"]
    table = {row["block"]: row for row in search["blocks"]}
    assert table[HARMFUL]["passed_alone"] is False and table[HARMFUL]["chosen"] is False
    assert HARMFUL not in search["chosen"] and len(search["chosen"]) > 1
    assert search["calibration_pairs"] == 16  # 4 photos × 4 captions
    assert variant.parity.passed  # the written variant, checked again as every precision is
    # sensitivity order, and the MLM decoder judged on its own
    assert [r["damage_alone"] for r in search["blocks"]] == sorted(r["damage_alone"] for r in search["blocks"])
    assert "cross_modal/mlm_score.decoder" in table and "cross_modal/mlm_score.transform" in table


def test_every_weighted_node_belongs_to_a_block(searched):
    """The vision blocks' packed in_proj is traced outside any module (F.linear): it is attributed to its block,
    so quantizing `vision_tower/blocks.0` quantizes all four of its MatMuls."""
    from bt_export.int8_search import find_blocks
    from bt_export.precision import attributed_paths, module_path

    model = onnx.load(str(searched.output / "vision_tower.onnx"), load_external_data=False)
    nodes = list(model.graph.node)
    weighted = [(n, p) for n, p in zip(nodes, attributed_paths(nodes), strict=True) if n.op_type in ("MatMul", "Gemm")]
    assert any(not module_path(n) for n, _ in weighted)  # the case this is about exists
    assert all(p for _, p in weighted)
    assert sum(p.startswith("blocks.0.") for _, p in weighted) == 4  # in_proj, out_proj, c_fc, c_proj
    blocks = find_blocks(searched.output, {"vision_tower": "vision_tower.onnx"})
    assert sorted(blocks) == ["vision_tower/blocks.0", "vision_tower/blocks.1", "vision_tower/blocks.2",
                              "vision_tower/itc_image_head", "vision_tower/transform"]


@pytest.mark.parametrize("kwargs,says", [({"precisions": ("fp32",)}, "add int8 to --precision"),
                                          ({"precisions": ("fp32", "int8"), "validate": False}, "--no-validate")])
def test_search_needs_int8_and_validation(tmp_path, kwargs, says):
    with pytest.raises(BtExportError, match=says):
        export_checkpoint("tiny", tmp_path / "x", int8_search=True, **kwargs)
    assert not (tmp_path / "x").exists()


def test_evaluator_reuses_unchanged_work_and_measures_what_a_fresh_check_measures(searched, tmp_path, photos_dir):
    """A cross-modal candidate re-runs neither tower; a set that grows by a block of one graph re-quantizes only
    that graph; and the rows equal check_task_parity on freshly written files with fresh sessions."""
    from bt_export import int8_search
    from bt_export.checkpoints import load_checkpoint
    from bt_export.parity import check_task_parity, eager_references
    from bt_export.samples import hf_processor, load_images, make_samples
    from bt_export.specs import graph_specs

    loaded = load_checkpoint("tiny")
    specs = graph_specs(loaded.config, loaded.heads)
    images, names = load_images([photos_dir])
    samples = make_samples(hf_processor(loaded.image_processor, searched.output), images, names, grid=True)
    refs = eager_references(loaded.model, samples, specs, loaded.heads)
    directory, bounds = searched.output, VARIANT_BOUNDS["int8"]
    blocks = int8_search.find_blocks(directory, {n: s.file for n, s in specs.items() if n != "cross_modal_pooled"})
    evaluator = int8_search.Evaluator(directory, specs, refs, bounds, blocks, tmp_path)
    runs, writes = [], []
    real_run, real_write = evaluator._run, int8_search.write_int8
    evaluator._run = lambda name, file, feeds: runs.append((name, file)) or real_run(name, file, feeds)
    patch = pytest.MonkeyPatch()
    patch.setattr(int8_search, "write_int8", lambda src, dst, graph, *a: writes.append(graph) or real_write(
        src, dst, graph, *a))
    try:
        vision = {"vision_tower/blocks.0"}
        first = evaluator.evaluate(vision, vision)
        sessions_before = len(evaluator.sessions)
        grown = vision | {"cross_modal/text_layers.0"}
        second = evaluator.evaluate(grown)
    finally:
        patch.undo()
    assert writes == ["vision_tower", "cross_modal", "cross_modal_pooled"]  # vision written once, kept
    assert len(evaluator.sessions) == sessions_before + 2  # only the two new cross-modal files
    # every call misses the cache once per (file, feeds): 4 graphs per round, and the towers only in the first
    assert [name for name, _ in runs].count("vision_tower") == 2 and len(runs) == 8
    assert len(evaluator.outputs) == 4 + 2

    fresh = {}
    for name, spec in specs.items():
        part = {b for b in grown if b.startswith(f"{int8_search.computes(name)}/")}
        fresh[name] = spec.file
        if part:
            target = tmp_path / f"fresh.{name}.int8.onnx"
            real_write(directory / spec.file, target, name, int8_search.exclusions(blocks, part))
            fresh[name] = str(target)
    expected = check_task_parity(directory, specs, refs, fresh, bounds)
    assert [(r.metric, r.value) for r in second] == [(r.metric, r.value) for r in expected]
    assert [r.metric for r in first] == [r.metric for r in expected]
