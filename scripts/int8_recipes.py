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
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

VISION_ONLY = (r"^text_tower/", r"^cross_modal/")  # bt_export.precision.INT8_EXCLUDED, the safe recipe's graphs
DECODER = (r"^cross_modal/mlm_score\.decoder",)


ONLY: list[str] = []  # --only: candidate names to keep (all when empty)


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
        RecipeSpec("s8-all with decoder", (), "int8", False, False, ()),
    ]


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


class _Spec:  # what bt_export.int8_recipes.write_recipe reads of a graph spec
    def __init__(self, file):
        self.file = file


def write_all(directory: Path, manifest, log, graphs=None) -> dict:
    """Every candidate's files (only `graphs`, if given: the others stay fp32)."""
    from bt_export.int8_recipes import write_recipe

    specs = {g: _Spec(f.file) for g, f in manifest.variants["fp32"].files.items() if graphs is None or g in graphs}
    recipes = {}
    for spec in candidates():
        if graphs is not None and spec.name == "s8-all with decoder":  # the decoder is not in a pair's graphs
            continue
        log(f"writing {spec.name}")
        safe_name = spec.name.replace(" ", "_").replace("(", "").replace(")", "").replace(",", "")
        named = type(spec)(safe_name, *[getattr(spec, f) for f in ("cpu_classes", "weights", "per_channel",
                                                                   "reduce_range", "excluded")])
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
    recipes = write_all(directory, manifest, log, ("vision_tower", "text_tower", cross))  # what a pair runs
    from benchmarks.scenarios import fixed_text

    encoded = runtime.tokenizer([fixed_text(runtime.tokenizer, 40)])
    feeds = {"vision_tower": {"pixel_values": runtime.preprocess(synthetic_images(1))},
             "text_tower": {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask},
             "cross_modal": {"attention_mask": encoded.attention_mask, "image_index": np.zeros(1, np.int64)}}
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
    recipes = write_all(directory, manifest, log)
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
    args = parser.parse_args()
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
        if args.accuracy_export:
            report["accuracy"] = accuracy(args.accuracy_export, Path(tmp), args.gallery, args.queries, args.seed, log)
        shutil.rmtree(tmp, ignore_errors=True)
    report["load_average_end"] = os.getloadavg()
    args.json.write_text(json.dumps(report, indent=2))
    log(json.dumps({k: report[k] for k in ("speed", "accuracy") if k in report}, indent=1)[:4000])


if __name__ == "__main__":
    main()
