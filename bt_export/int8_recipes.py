"""int8 recipes per CPU class (docs/int8.md): the variant's own files are the safe recipe (bt_export.precision:
u8 weights, which no x86 ISA saturates); a recipe here is written beside them for the classes whose integer units it
uses, and recorded in the manifest (`variants.int8.recipes`) with what it measured on the export machine.

The export measures only the recipes meant for its own CPU class (a recipe's numbers are those of the kernels that
ran them): their task bounds on the parity pairs, and one pair's latency interleaved with fp32 and the safe recipe.
A recipe that misses a bound is left out (its files removed) and the variant's details say why.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bt_runtime.cpu import cpu_class
from bt_runtime.manifest import Int8Recipe, RecipeMeasurement

from . import precision
from .parity import check_task_parity
from .specs import POOLED_GRAPH, VARIANT_BOUNDS


@dataclass(frozen=True)
class RecipeSpec:
    name: str
    cpu_classes: tuple[str, ...]
    weights: str  # "int8" | "uint8"
    per_channel: bool
    reduce_range: bool
    excluded: tuple[str, ...]  # "<graph>/<module path>" patterns kept float32


# s8 weights, every graph: MLAS's fast integer path is u8 activations × s8 weights (u8 weights: no speed-up over fp32
# on VNNI/AMX, 1.4× on AVX2 where s8 is 1.7×). VNNI and AMX compute u8×s8 in 32 bits; AVX2's pmaddubsw sums two
# products into a saturating int16, so there the results are the AVX2 kernel's own — which is why a recipe counts only
# where the export measured it on that class (measure_recipes). 7-bit weights, which cannot saturate, missed the
# export bounds on shapes (ITM |Δp| 0.042, the vision tower's weights) where 8-bit passed (0.0086) on an AVX2 EPYC;
# per channel did worse there (0.061) and on VNNI (shapes seed 2718: a 1.5-point task gap vs 1.0 per tensor).
# benchmarks/results/cpu-int8-avx2.md, cpu-int8-avx512-vnni.md. The MLM vocabulary projection stays float32
# (quantizing it changed no measured metric, and it is the block the int8 search judges on its own).
DECODER = (r"^cross_modal/mlm_score\.decoder",)
RECIPES: tuple[RecipeSpec, ...] = (
    RecipeSpec("s8-all", ("amx", "avx512-vnni", "avx-vnni", "avx2"), "int8", per_channel=False, reduce_range=False,
               excluded=DECODER),
)
TIMING_RUNS = 5  # interleaved rounds of the pair timing at export; medians reported


def machine_words(shared: bool | None = None) -> str:
    """CPU model and logical cores; 'shared' when the 1-minute load average exceeds the cores (others were running)."""
    model = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = os.cpu_count() or 0
    if shared is None:
        shared = os.getloadavg()[0] > cores if hasattr(os, "getloadavg") else False
    return f"{model}, {cores} logical cores{', shared (load above the core count)' if shared else ''}"


def write_recipe(spec: RecipeSpec, directory: Path, specs: dict) -> dict[str, str]:
    """Write `spec`'s graphs beside the fp32 ones: graph name → file (the fp32 file where every node is excluded)."""
    files = {}
    for name, graph in specs.items():
        target = precision.variant_file(graph.file, f"int8-{spec.name}")
        written = precision.write_int8(directory / graph.file, directory / target, name, spec.excluded,
                             reduce_range=spec.reduce_range, per_channel=spec.per_channel, weight_type=spec.weights)
        files[name] = target if written is not None else graph.file
    return files


def pair_feeds(refs) -> dict[str, dict[str, np.ndarray]]:
    """The first parity pair's inputs per graph (one image, one text)."""
    vision = {k: v[:1] for k, v in refs.graph_inputs["vision_tower"].items()}
    text = {k: v[:1] for k, v in refs.graph_inputs["text_tower"].items()}
    cross = {k: v[:1] for k, v in refs.graph_inputs["cross_modal"].items()}
    cross["image_index"] = np.zeros(1, np.int64)
    return {"vision_tower": vision, "text_tower": text, "cross_modal": cross}


def time_pairs(directory: Path, cross: str, file_sets: dict[str, dict[str, str]], feeds: dict,
               runs: int = TIMING_RUNS) -> dict[str, float]:
    """Median ms of one pair (vision → text → the `cross` graph) per file set (graph → file in `directory`),
    interleaved round by round, with the runtime's CPU session options."""
    from bt_runtime.backends.onnxruntime import cpu_session

    sessions = {label: {g: cpu_session(directory / files[g]) for g in ("vision_tower", "text_tower", cross)}
                for label, files in file_sets.items()}

    def pair(s):
        image = s["vision_tower"].run(["image_bridge"], feeds["vision_tower"])[0]
        text = s["text_tower"].run(["text_bridge"], feeds["text_tower"])[0]
        s[cross].run(None, dict(feeds["cross_modal"], image_bridge=image, text_bridge=text))

    samples = {label: [] for label in sessions}
    for round_ in range(runs + 1):  # the first round warms up
        for label, s in sessions.items():
            started = time.perf_counter()
            pair(s)
            if round_:
                samples[label].append((time.perf_counter() - started) * 1e3)
    return {label: round(float(np.median(values)), 1) for label, values in samples.items()}


def measure_recipes(directory: Path, specs: dict, refs, safe_files: dict[str, str], checkpoint: str,
                    log=lambda message: None) -> tuple[list[Int8Recipe], dict[str, str]]:
    """Write and measure the recipes meant for this machine's CPU class: (the passing ones, {name: why left out})."""
    from .manifest import graph_file_entry

    here, kept, left_out = cpu_class(), [], {}
    bounds = VARIANT_BOUNDS["int8"]
    for spec in RECIPES:
        if here not in spec.cpu_classes:
            continue
        log(f"int8 recipe {spec.name} for {here}: writing and measuring")
        files = write_recipe(spec, directory, specs)
        rows = check_task_parity(directory, specs, refs, files, bounds)
        failed = [r for r in rows if not r.passed]
        if failed:
            for name, file in files.items():
                if file != specs[name].file:
                    (directory / file).unlink(missing_ok=True)
                    (directory / f"{file}.data").unlink(missing_ok=True)
            left_out[spec.name] = "missed " + ", ".join(f"{r.metric}={r.value:.3g} (bound {r.bound:.3g})"
                                                        for r in failed)
            log(f"int8 recipe {spec.name} left out: {left_out[spec.name]}")
            continue
        speed = time_pairs(directory, POOLED_GRAPH if POOLED_GRAPH in specs else "cross_modal",
                           {"fp32": {n: g.file for n, g in specs.items()}, "safe": safe_files, spec.name: files},
                           pair_feeds(refs))
        measurement = RecipeMeasurement(
            cpu_class=here, machine=machine_words(), checkpoint=checkpoint, passed=True,
            accuracy={r.metric: round(r.value, 6) for r in rows},
            speed={"pair_ms": speed[spec.name], "fp32_pair_ms": speed["fp32"], "safe_pair_ms": speed["safe"]})
        kept.append(Int8Recipe(name=spec.name, cpu_classes=list(spec.cpu_classes), weights=spec.weights,
                               per_channel=spec.per_channel, reduce_range=spec.reduce_range,
                               excluded_patterns=list(spec.excluded),
                               files={n: graph_file_entry(directory, f) for n, f in files.items()},
                               measured=[measurement]))
    return kept, left_out
