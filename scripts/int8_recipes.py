"""Measure int8 recipes on this CPU: which graphs are quantized, 8-bit vs 7-bit (reduce_range) weights, against
fp32 eager transformers over every photo × caption pair. Prints one Markdown table, the CPU's ISA class in it.

    python3 scripts/int8_recipes.py --checkpoint base-itm-mlm --random-init \\
        --tokenizer ../shared/assets/roberta-base --images ../shared/assets/images [--json out.json]

This is how the int8 default in bt_export/precision.py was chosen (docs/export.md, "int8 on every CPU"); run it on
each CPU class you deploy on. Full size: ~5 min and ~6 GB RAM on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

VISION, ALL = ("vision_tower",), ("vision_tower", "text_tower", "cross_modal")
RECIPES = {  # name → (graphs quantized, reduce_range, weight type); activations are uint8 (dynamic) in all
    "vision, s8 weights": (VISION, False, "int8"),
    "vision, s8 weights 7-bit": (VISION, True, "int8"),
    "vision, u8 weights (default)": (VISION, False, "uint8"),
    "vision+cross, u8 weights": (VISION + ("cross_modal",), False, "uint8"),
    "all, s8 weights": (ALL, False, "int8"),
    "all, u8 weights": (ALL, False, "uint8"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="base-itm-mlm")
    parser.add_argument("--random-init", action="store_true")
    parser.add_argument("--tokenizer", type=Path)
    parser.add_argument("--images", type=Path, nargs="*")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", nargs="*", help="Run only the recipes whose name contains one of these strings.")
    parser.add_argument("--graphs", type=Path, help="Reuse the fp32 graphs of this export of the same checkpoint "
                                                     "(same weights: random init is seeded) instead of exporting.")
    args = parser.parse_args()

    from bt_export.checkpoints import copy_tokenizer, load_checkpoint
    from bt_export.export import export_graphs
    from bt_export.parity import check_task_parity, eager_references
    from bt_export.precision import variant_file, write_int8
    from bt_export.samples import hf_processor, load_images, make_samples
    from bt_export.specs import VARIANT_BOUNDS, graph_specs
    from bt_runtime.cpu import cpu_flags, isa_class

    started = time.perf_counter()
    loaded = load_checkpoint(args.checkpoint, random_init=args.random_init, tokenizer=args.tokenizer)
    specs = graph_specs(loaded.config, loaded.heads)
    images, names = load_images(args.images) if args.images else (None, None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        copy_tokenizer(loaded, directory)
        samples = make_samples(hf_processor(loaded.image_processor, directory), images, names, grid=True)
        refs = eager_references(loaded.model, samples, specs, loaded.heads)
        if args.graphs:
            for spec in specs.values():
                (directory / spec.file).symlink_to((args.graphs / spec.file).resolve())
        else:
            export_graphs(loaded.model, specs, samples, refs, directory, 23, "onnx")
        for recipe, (graphs, reduce_range, weight_type) in RECIPES.items():
            if args.only and not any(part in recipe for part in args.only):
                continue
            files = {}
            for name, spec in specs.items():
                files[name] = spec.file
                if name in graphs:
                    files[name] = variant_file(spec.file, f"int8-{len(rows)}")
                    write_int8(directory / spec.file, directory / files[name], name, (), reduce_range=reduce_range,
                               weight_type=weight_type)
            result = check_task_parity(directory, specs, refs, files, VARIANT_BOUNDS["int8"])
            rows.append({"recipe": recipe, "passed": all(r.passed for r in result),
                         **{r.metric: r.value for r in result}})
    isa = isa_class()
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx512_vnni", "avx_vnni", "avx512f", "avx2", "amx")))
    print(f"\nint8 recipes on {platform.processor() or platform.machine()} — ISA class **{isa}** ({', '.join(flags)}); "
          f"{args.checkpoint}{' random init' if args.random_init else ''}, {len(samples.texts)} pairs, "
          f"{time.perf_counter() - started:.0f} s\n")
    bounds = VARIANT_BOUNDS["int8"]
    print("| recipe | ITM \\|Δp\\| (≤ {itm_probability_abs}) | decisions (≥ {itm_decision_agreement}) | "
          "MLM top-1 (≥ {mlm_top1_agreement}) | within bounds |".format(**bounds))
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['recipe']} | {row.get('itm_probability_abs', float('nan')):.4f} | "
              f"{row.get('itm_decision_agreement', float('nan')):.3f} | "
              f"{row.get('mlm_top1_agreement', float('nan')):.3f} | "
              f"{'yes' if row['passed'] else 'NO'} |")
    if args.json:
        args.json.write_text(json.dumps({"isa": isa, "flags": flags, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
