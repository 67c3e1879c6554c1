"""Measure int8 recipes on this CPU: speed on one export (the full-size base, random init is fine), task accuracy on
the trained shapes export, against its fp32 variant. Writes the recipe table (benchmarks/results/cpu-int8-*.md).

    python3 scripts/int8_recipes.py --speed-export /tmp/base --accuracy-export /tmp/shapes \\
        --gallery 300 --seed 4242 --json out.json

Speed: one pair (vision → text → ITM cross-modal graph, 40-token caption, one photo), every recipe and fp32 timed
interleaved round by round (`--rounds`), medians. Accuracy: the shapes held-out split (benchmarks.accuracy, seed
and gallery as given; not the seeds the recipes were tuned on), every task metric of each recipe against the fp32
variant (issue 20's bar: within 0.5 points on every metric) and the fraction of decisions that differ from fp32.
How the recipes were chosen and used: docs/int8.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

VISION_ONLY = (r"^text_tower/", r"^cross_modal/")  # bt_export.precision.INT8_EXCLUDED, the safe recipe's graphs
DECODER = (r"^cross_modal/mlm_score\.decoder",)


ONLY: list[str] = []  # --only: candidate names to keep (all when empty)
# candidates whose activations are quantized statically (QDQ, MinMax over calibration inputs) instead of per call
STATIC = {"s8-all static QDQ"}
CALIBRATION_SAMPLES = 16


def candidates():
    return [spec for spec in _candidates() if not ONLY or spec.name in ONLY]


def _candidates():
    from bt_export.int8_recipes import RecipeSpec

    return [  # name, classes it would be for, weights, per channel, reduce_range, kept float32
        RecipeSpec("safe (u8, vision only)", ("avx2",), "uint8", True, False, VISION_ONLY),
        RecipeSpec("u8-all", (), "uint8", True, False, DECODER),
        RecipeSpec("s8-vision", (), "int8", False, False, VISION_ONLY),
        RecipeSpec("s8-all", (), "int8", False, False, DECODER),
        RecipeSpec("s8-all per-channel", (), "int8", True, False, DECODER),
        RecipeSpec("s8-all 7-bit", (), "int8", False, True, DECODER),
        RecipeSpec("s8-all 7-bit per-channel", (), "int8", True, True, DECODER),
        RecipeSpec("s8-all with decoder", (), "int8", False, False, ()),
        RecipeSpec("s8-all static QDQ", (), "int8", False, False, DECODER),
    ]


def calibration_feeds(manifest, images: list, texts: list[str]) -> dict[str, list[dict]]:
    """Per graph, the inputs of the calibration pairs one at a time (batch 1, as a pair runs): the towers' from
    the runtime's preprocessing and tokenizer, the cross-modal graphs' from the fp32 towers' bridges."""
    from bt_runtime import BridgeTowerRuntime

    feeds: dict[str, list[dict]] = {}
    with BridgeTowerRuntime.load(manifest) as runtime:
        run = runtime.backend.run
        for image, text in zip(images, texts, strict=True):
            pixels = runtime.preprocess([image])
            encoded = runtime.tokenizer([text])
            vision = {"pixel_values": pixels}
            words = {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask}
            image_bridge = run("vision_tower", vision)["image_bridge"]
            text_bridge = run("text_tower", words)["text_bridge"]
            cross = {"image_bridge": image_bridge, "text_bridge": text_bridge,
                     "attention_mask": encoded.attention_mask, "image_index": np.zeros(1, np.int64)}
            feeds.setdefault("vision_tower", []).append(vision)
            feeds.setdefault("text_tower", []).append(words)
            for graph in manifest.variants["fp32"].files:
                if graph.startswith("cross_modal"):
                    feeds.setdefault(graph, []).append(cross)
    return feeds


def write_static(spec, directory: Path, specs: dict, feeds: dict[str, list[dict]]) -> dict[str, str]:
    """`spec` with activations quantized statically: ONNX Runtime's quantize_static, QDQ format, u8 activations
    (asymmetric, MinMax over the calibration feeds) × s8 weights (symmetric, per tensor), MatMul/Gemm only, the
    excluded patterns kept float32 — the static counterpart of bt_export.precision.write_int8."""
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from bt_export.onnx_export import quiet, save_model
    from bt_export.precision import int8_nodes, quantizer_source, variant_file

    class Reader(CalibrationDataReader):
        def __init__(self, rows, names):
            self.rows = iter([{k: v for k, v in row.items() if k in names} for row in rows])

        def get_next(self):
            return next(self.rows, None)

    files = {}
    for name, graph in specs.items():
        src = directory / graph.file
        model = onnx.load(str(src), load_external_data=False)
        _, excluded = int8_nodes(model, name, spec.excluded)
        names = {i.name for i in model.graph.input}  # the graph's inputs, without loading its weights
        target = variant_file(graph.file, f"int8-{spec.name}")
        with tempfile.TemporaryDirectory(dir=directory) as tmp, quiet():
            source = quantizer_source(src, Path(tmp))
            staged = Path(tmp) / Path(target).name
            quantize_static(str(source), str(staged), Reader(feeds[name], names), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=False,
                            op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=excluded,
                            use_external_data_format=True,
                            extra_options={"MatMulConstBOnly": True, "WeightSymmetric": True,
                                           "ActivationSymmetric": False,
                                           "DefaultTensorType": onnx.TensorProto.FLOAT})
            save_model(onnx.load(str(staged)), directory / target)
        files[name] = target
    return files


def scratch_copy(export: Path, into: Path) -> Path:
    """A copy of `export` (recipe files are written beside its files): an export holds regular files only, and
    onnx refuses external data with several hard links."""
    return Path(shutil.copytree(export, into))


def recipe_manifest(manifest, directory: Path, recipes: dict):
    """`manifest` (read before the recipes were written) with the candidate recipes added to its int8 (or, absent,
    an fp32-based) variant."""
    import copy

    from bt_export.manifest import graph_file_entry
    from bt_runtime.manifest import Int8Recipe
    if "int8" not in manifest.variants:
        manifest.variants["int8"] = copy.deepcopy(manifest.variants["fp32"])
    manifest.variants["int8"].recipes = [
        Int8Recipe(name=spec.name, cpu_classes=list(spec.cpu_classes), weights=spec.weights,
                   per_channel=spec.per_channel, reduce_range=spec.reduce_range, excluded_patterns=list(spec.excluded),
                   files={g: graph_file_entry(directory, f) for g, f in files.items()})
        for spec, files in recipes.values()]
    return manifest


def file_name(name: str) -> str:
    """A candidate's name as it appears in its files' names (`<graph>.int8-<name>.onnx`)."""
    return name.replace(" ", "_").replace("(", "").replace(")", "").replace(",", "")


class _Spec:  # what bt_export.int8_recipes.write_recipe reads of a graph spec
    def __init__(self, file):
        self.file = file


def write_all(directory: Path, manifest, log, graphs=None, calibration=None) -> dict:
    """Every candidate's files (only `graphs`, if given: the others stay fp32). `calibration`: (images, texts) for
    the static candidates (left out without it)."""
    from bt_export.int8_recipes import write_recipe

    specs = {g: _Spec(f.file) for g, f in manifest.variants["fp32"].files.items() if graphs is None or g in graphs}
    recipes = {}
    for spec in candidates():
        if graphs is not None and spec.name == "s8-all with decoder":  # the decoder is not in a pair's graphs
            continue
        log(f"writing {spec.name}")
        named = dataclasses.replace(spec, name=file_name(spec.name))
        if spec.name in STATIC:
            if calibration is None:
                continue
            feeds = calibration_feeds(manifest, *calibration)
            recipes[spec.name] = (spec, write_static(named, directory, specs, feeds))
        else:
            recipes[spec.name] = (spec, write_recipe(named, directory, specs))
    return recipes


def speed(export: Path, work: Path, rounds: int, log) -> dict:
    from bt_export.int8_recipes import time_pairs
    from bt_export.samples import synthetic_images
    from bt_runtime import BridgeTowerRuntime, read_manifest

    directory = scratch_copy(export, work / "speed")
    manifest = read_manifest(directory)
    runtime = BridgeTowerRuntime.load(directory)
    cross = runtime.cross_graph(["itm_logits"])
    from benchmarks.scenarios import fixed_text, pair_feeds

    # 4 pairs: speed does not depend on the ranges, and ONNX Runtime's MinMax calibrator keeps every intermediate
    # tensor of every sample (~2 GB per full-size vision sample) until it computes them
    calibration = (synthetic_images(4), [fixed_text(runtime.tokenizer, 8 + 8 * k) for k in range(4)])
    recipes = write_all(directory, manifest, log, ("vision_tower", "text_tower", cross),  # what a pair runs
                        calibration=calibration)

    feeds = pair_feeds(runtime)
    sets = {"fp32": {g: f.file for g, f in manifest.variants["fp32"].files.items()}}
    sets |= {name: files for name, (_, files) in recipes.items()}
    log(f"timing {len(sets)} file sets, {rounds} interleaved rounds")
    return {"checkpoint": manifest.checkpoint.alias or manifest.checkpoint.kind,
            "random_init": manifest.checkpoint.random_init, "cross_graph": cross,
            "pair_ms": time_pairs(directory, cross, sets, feeds, runs=rounds)}


def accuracy(export: Path, work: Path, gallery: int, queries: int, seed: int, log) -> dict:
    import torch

    from benchmarks.accuracy import make_eval_set, task_agreement, task_metrics
    from benchmarks.accuracy_run import RuntimeScorer, evaluate
    from bt_runtime import BridgeTowerRuntime

    torch.set_num_threads(1)
    directory = scratch_copy(export, work / "accuracy")
    from bt_runtime import read_manifest

    manifest = read_manifest(directory)
    from bt_export.shapes.data import make_samples

    train = make_samples(seed + 1, CALIBRATION_SAMPLES, image_size=manifest.preprocessing.image_size, split="train")
    recipes = write_all(directory, manifest, log, calibration=([s.image for s in train], [s.caption for s in train]))
    manifest = recipe_manifest(manifest, directory, recipes)
    data = make_eval_set(seed, gallery, queries=min(queries, gallery), image_size=manifest.preprocessing.image_size,
                         mask_token=manifest.tokenizer.mask_token)
    results, outputs = {}, {}
    runs = [("fp32", "fp32", None)] + [(name, "int8", spec.name) for name, (spec, _) in recipes.items()]
    for label, precision, recipe in runs:
        log(f"accuracy: {label}")
        runtime = BridgeTowerRuntime.load(manifest, precision=precision, int8_recipe=recipe)
        result, decided, _ = evaluate(RuntimeScorer(runtime, label), data, min(20, gallery))
        runtime.close()
        results[label], outputs[label] = task_metrics(result), decided
    table = {}
    for label in results:
        if label == "fp32":
            continue
        gaps = {m: abs(results[label][m] - results["fp32"][m]) * 100 for m in results["fp32"] if m in results[label]}
        worst = max(gaps, key=gaps.get)
        differs = {m: 1 - v for m, v in task_agreement(outputs["fp32"], outputs[label]).items()}
        table[label] = {"worst_metric": worst, "worst_points": round(gaps[worst], 3),
                        "within_0.5_points": gaps[worst] <= 0.5 + 1e-9, "differs_from_fp32": differs,
                        "metrics": results[label]}
    return {"seed": seed, "gallery": gallery, "queries": data.queries, "fp32": results["fp32"], "recipes": table}


def export_bounds(checkpoint: str, work: Path, log) -> dict:
    """Every candidate (static ones aside) against the export's own int8 bounds on `checkpoint`'s parity pairs, on
    this CPU: one `bt-export --precision fp32,int8` into a scratch directory, with the candidates measured where the
    export measures bt_export.int8_recipes.RECIPES (each retargeted to this class). A candidate that misses a bound
    here would be left out of any export made on this class."""
    from bt_export import export_checkpoint, int8_recipes
    from bt_runtime.cpu import cpu_class

    here = cpu_class()
    names = {file_name(spec.name): spec for spec in candidates() if spec.name not in STATIC}
    chosen = tuple(dataclasses.replace(spec, name=name, cpu_classes=(here,)) for name, spec in names.items())
    shipped, int8_recipes.RECIPES = int8_recipes.RECIPES, chosen
    try:
        result = export_checkpoint(checkpoint, work / "bounds", precisions=("fp32", "int8"), log=log)
    finally:
        int8_recipes.RECIPES = shipped
    variant = result.manifest.variants["int8"]
    table = {"safe (the variant's files)": {"passed": variant.parity.passed,
                                           "metrics": {r["metric"]: r["value"] for r in variant.parity.rows}}}
    for recipe in variant.recipes:
        table[names[recipe.name].name] = {"passed": True, "metrics": recipe.measured[0].accuracy}
    for name, why in (variant.details.get("recipes_left_out") or {}).items():
        table[names[name].name] = {"passed": False, "missed": why}
    return {"checkpoint": checkpoint, "pairs": len(variant.parity.inputs["texts"]), "bounds": table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speed-export", type=Path)
    parser.add_argument("--accuracy-export", type=Path)
    parser.add_argument("--gallery", type=int, default=300)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--work", type=Path, help="Scratch directory on the exports' filesystem (default: the "
                                                  "system's temporary directory)")
    parser.add_argument("--only", nargs="*", default=[], help="Measure only these candidates (names as listed).")
    parser.add_argument("--bounds-checkpoint", help="Also judge every candidate against the export's int8 bounds on "
                                                    "this checkpoint's parity pairs (e.g. shapes), as an export on "
                                                    "this CPU would")
    args = parser.parse_args()
    if args.work is not None and not args.work.is_dir():
        parser.error(f"--work {args.work}: not an existing directory (the scratch copies go in a new folder there)")
    ONLY.extend(args.only)

    from benchmarks import machine
    from bt_runtime.cpu import cpu_class, isa_class

    def log(message):
        print(message, flush=True)

    report = {"cpu_class": cpu_class(), "isa": isa_class(), "machine": machine.cpu_info(),
              "load_average_start": os.getloadavg(), "versions": machine.versions(),
              "recipes": [{"name": s.name, "weights": s.weights, "per_channel": s.per_channel,
                           "reduce_range": s.reduce_range, "kept_float32": list(s.excluded)} for s in candidates()]}
    with tempfile.TemporaryDirectory(prefix=".int8-recipes-", dir=args.work) as tmp:
        if args.speed_export:
            report["speed"] = speed(args.speed_export, Path(tmp), args.rounds, log)
            args.json.write_text(json.dumps(report, indent=2))
        if args.bounds_checkpoint:
            report["export_bounds"] = export_bounds(args.bounds_checkpoint, Path(tmp), log)
            args.json.write_text(json.dumps(report, indent=2))
        if args.accuracy_export:
            report["accuracy"] = accuracy(args.accuracy_export, Path(tmp), args.gallery, args.queries, args.seed, log)
        shutil.rmtree(tmp, ignore_errors=True)
    report["load_average_end"] = os.getloadavg()
    args.json.write_text(json.dumps(report, indent=2))
    log(json.dumps({k: report[k] for k in ("speed", "export_bounds", "accuracy") if k in report}, indent=1)[:4000])


if __name__ == "__main__":
    main()
