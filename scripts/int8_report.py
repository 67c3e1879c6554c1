"""Compose benchmarks/results/cpu-int8-<class>.md from one bt-bench run (pair + rerank, with eager, the toolkit's fp32
and int8, the naive fp32 and int8) and one scripts/int8_recipes.py run (the recipe table).

    python3 scripts/int8_report.py BENCH.json RECIPES.json --markdown out.md --json out.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bt_runtime.cpu import CPU_CLASSES

PEERS = ("torch", "onnxruntime:fp32", "onnxruntime:int8", "onnxruntime-naive", "onnxruntime-naive:int8")


def ratios(bench: dict) -> list[str]:
    lines = ["| scenario | eager fp32 | toolkit fp32 | toolkit int8 | naive fp32 | naive int8 | toolkit fp32 ÷ naive "
             "fp32 | toolkit int8 ÷ naive int8 | toolkit int8 × eager |", "|---|---|---|---|---|---|---|---|---|"]
    for scenario in ("pair", "rerank"):
        rows = {r["backend"]: r for r in bench["results"] if r["scenario"] == scenario}
        int8 = next((label for label in rows if label.startswith("onnxruntime:int8")), None)
        if int8:  # the toolkit int8 row, whichever recipe label it ran under
            rows["onnxruntime:int8"] = rows[int8]
        if not rows:
            continue
        ms = {label: rows[label]["summary"]["p50_ms"] if label in rows else None for label in PEERS}

        def cell(label, ms=ms):
            return "–" if ms[label] is None else f"{ms[label]:.0f} ms"

        def ratio(slow, fast, ms=ms):
            return "–" if ms[slow] is None or ms[fast] is None else f"{ms[slow] / ms[fast]:.2f}×"

        params = ", ".join(f"{k}={v}" for k, v in rows["torch"]["params"].items() if k != "note")
        lines.append(f"| {scenario} ({params}) | {' | '.join(cell(label) for label in PEERS)} | "
                     f"{ratio('onnxruntime-naive', 'onnxruntime:fp32')} | "
                     f"{ratio('onnxruntime-naive:int8', 'onnxruntime:int8')} | {ratio('torch', 'onnxruntime:int8')} |")
    return lines


def recipe_table(recipes: dict, speed: dict, accuracy: dict) -> list[str]:
    pair = speed.get("pair_ms", {})
    fp32 = pair.get("fp32")
    lines = [f"Speed: {speed.get('checkpoint')}{' (random init)' if speed.get('random_init') else ''}, one pair "
             f"(vision → text → {speed.get('cross_graph')}), every recipe and fp32 interleaved, medians. Accuracy: "
             f"the trained shapes model, held-out seed {accuracy.get('seed')}, gallery {accuracy.get('gallery')}, "
             f"{accuracy.get('queries')} queries, every task metric against the same export's fp32 (bar: within 0.5 "
             "points on every metric; one query is 100 / queries points).", "",
             "| recipe | weights | per channel | 7-bit | kept fp32 | pair ms | × fp32 | worst task-metric gap (points) "
             "| within 0.5 points | decisions ≠ fp32 (ITM / comparisons / retrieval top-1 / MLM) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for spec in recipes["recipes"]:
        name = spec["name"]
        ms = pair.get(name)
        row = accuracy.get("recipes", {}).get(name, {})
        if ms is None and not row:
            continue
        differs = row.get("differs_from_fp32", {})
        diff = " / ".join(f"{differs[k]:.2%}" if k in differs else "–"
                          for k in ("itm_decisions", "itm_comparisons", "retrieval_top1", "mlm_top1"))
        gap = f"{row['worst_points']:.2f} ({row['worst_metric']})" if row else "–"
        lines.append(f"| {name} | {spec['weights']} | {'yes' if spec['per_channel'] else 'no'} | "
                     f"{'yes' if spec['reduce_range'] else 'no'} | {', '.join(spec['kept_float32']) or 'none'} | "
                     f"{'–' if ms is None else f'{ms:.0f}'} | "
                     f"{'–' if ms is None or not fp32 else f'{fp32 / ms:.2f}×'} | "
                     f"{gap} | {('yes' if row['within_0.5_points'] else 'no') if row else '–'} | {diff} |")
    lines.append(f"| fp32 | – | – | – | – | {'–' if fp32 is None else f'{fp32:.0f}'} | 1.00× | – | – | – |")
    return lines


def bounds_table(bounds: dict, klass: str) -> list[str]:
    """The candidates against the export's int8 bounds on the checkpoint's parity pairs (scripts/int8_recipes.py
    --bounds-checkpoint)."""
    from bt_export.specs import VARIANT_BOUNDS

    limits = VARIANT_BOUNDS["int8"]
    metrics = [m for m in limits if any(m in row.get("metrics", {}) for row in bounds["bounds"].values())]
    lines = [f"## Export bounds on this CPU ({klass}): {bounds['checkpoint']}, {bounds['pairs']} parity pairs", "",
             "Each candidate judged as an export on this CPU judges a recipe (docs/int8.md, \"How the choice is "
             "made\"); one that misses a bound here is left out of every export made on this class.", "",
             "| candidate | " + " | ".join(f"{m} (bound {limits[m]})" for m in metrics) + " | kept |",
             "|---|" + "---|" * len(metrics) + "---|"]
    for name, row in bounds["bounds"].items():
        if row["passed"]:
            cells = [f"{row['metrics'][m]:.4g}" if m in row["metrics"] else "–" for m in metrics]
            lines.append(f"| {name} | " + " | ".join(cells) + " | yes |")
        else:
            lines.append(f"| {name} | " + " | ".join("" for _ in metrics) + f" | no: {row['missed']} |")
    return lines


def _load(run: dict, when: str) -> str:
    value = run.get(f"load_average_{when}")
    return "–" if value is None else "/".join(f"{x:.1f}" for x in value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench", type=Path)
    parser.add_argument("recipes", type=Path, nargs="+", help="scripts/int8_recipes.py outputs: one with speed, "
                                                              "any number with accuracy (one table each)")
    parser.add_argument("--markdown", type=Path, required=True)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--preamble", type=Path, help="Markdown put after the title (what the run shows, the bars).")
    args = parser.parse_args()

    from benchmarks.report import markdown

    bench, runs = json.loads(args.bench.read_text()), [json.loads(p.read_text()) for p in args.recipes]
    recipes = next(r for r in runs if "speed" in r)
    klass = recipes["cpu_class"]
    lines = [f"# CPU int8 and fp32 against eager and the naive export: {klass} class", ""]
    if args.preamble:
        lines += [args.preamble.read_text().strip(), ""]
    lines += ["## Same run: eager, toolkit fp32 / int8, naive fp32 / int8", ""] + ratios(bench) + [""]
    lines += ["## bt-bench output", ""] + [line.replace("# bt-bench:", "### bt-bench:", 1)
                                            for line in markdown(bench).splitlines()] + [""]
    for run in [r for r in runs if "accuracy" in r]:
        lines += [f"## int8 recipes on this CPU ({klass}), shapes seed {run['accuracy']['seed']}", "",
                  f"Load average (1/5/15 min, 2 cores): speed run {_load(recipes, 'start')} → {_load(recipes, 'end')}"
                  f"; accuracy run {_load(run, 'start')} → {_load(run, 'end')}.", ""]
        lines += recipe_table(run, recipes["speed"], run["accuracy"]) + [""]
    for run in [r for r in runs if "export_bounds" in r]:
        lines += bounds_table(run["export_bounds"], klass) + [""]
    others = ", ".join(c for c in CPU_CLASSES if c not in (klass, "other"))  # the x86 classes
    lines += [f"Other classes ({others}): each is measured in its own report where a machine of that class was "
              "available (docs/int8.md); where none was, the runtime gives the class the safe recipe and says so.", ""]
    args.markdown.write_text("\n".join(lines))
    args.json.write_text(json.dumps({"bench": bench, "recipe_runs": runs}, indent=1))


if __name__ == "__main__":
    main()
