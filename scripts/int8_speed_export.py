"""An int8 variant for *speed only* on an fp32 export whose checkpoint cannot pass the int8 task bounds (random
weights: the full-size base's MLM top-1 agreement misses 0.97 even with the safe recipe): copies EXPORT to OUT and
adds the safe int8 files and the recipes of bt_export.int8_recipes meant for this CPU's class, *unvalidated*
(`parity.validated: false`, no measurement), so `bt-bench OUT --backend onnxruntime:int8@<recipe>` can time them.
Accuracy comes from the trained shapes export (scripts/int8_recipes.py, docs/int8.md).

    python3 scripts/int8_speed_export.py EXPORT OUT
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()

    from bt_export.int8_recipes import RECIPES, RecipeSpec, write_recipe
    from bt_export.manifest import graph_file_entry
    from bt_export.precision import INT8_EXCLUDED, variant_details
    from bt_runtime.cpu import cpu_class
    from bt_runtime.manifest import Int8Recipe, Parity, Variant, read_manifest, write_manifest

    shutil.copytree(args.export, args.out)
    manifest = read_manifest(args.out)
    fp32 = manifest.variants["fp32"]

    class Graph:
        def __init__(self, file):
            self.file = file

    specs = {g: Graph(f.file) for g, f in fp32.files.items()}
    safe = write_recipe(RecipeSpec("safe", (), "uint8", True, False, INT8_EXCLUDED), args.out, specs)
    details = variant_details("int8", INT8_EXCLUDED)
    details["note"] = "speed only: written by scripts/int8_speed_export.py, not validated against the task bounds"
    variant = Variant(attention=fp32.attention, io_dtype=details.pop("io_dtype"), details=details,
                      parity=Parity(validated=False, passed=None, inputs={}, rows=[]),
                      files={g: graph_file_entry(args.out, f) for g, f in safe.items()})
    for spec in RECIPES:
        if cpu_class() in spec.cpu_classes:
            files = write_recipe(spec, args.out, specs)
            variant.recipes.append(Int8Recipe(spec.name, list(spec.cpu_classes), spec.weights, spec.per_channel,
                                              spec.reduce_range, list(spec.excluded),
                                              {g: graph_file_entry(args.out, f) for g, f in files.items()}))
    rejected = manifest.rejected_variants.pop("int8", None)
    if rejected:
        details["rejected_at_export"] = rejected.reason
    manifest.variants["int8"] = variant
    write_manifest(args.out, manifest)
    read_manifest(args.out)  # every file listed and present
    print(f"{args.out}: int8 safe + recipes {[r.name for r in variant.recipes]} (unvalidated, speed only)")


if __name__ == "__main__":
    main()
