"""Train the `shapes` reference BridgeTower from scratch on generated scenes and save it where bt-export finds it.

    PYTHONPATH=. python3 scripts/train_reference.py --overwrite         # replaces bt_export/assets/shapes/
    PYTHONPATH=. python3 scripts/train_reference.py --steps 200 --output /tmp/shapes-probe

Prints the losses every 50 steps and the held-out metrics at the end (recall@1/5/10 text → image over a 1,000-image
gallery by ITC and by brute-force ITM, ITM accuracy per hard-negative kind, MLM accuracy on attribute words, the
held-out attribute combinations apart), and writes them to OUTPUT/metrics.json with the machine and the time.
Recipe and data: bt_export/shapes/train.py, bt_export/shapes/data.py.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "bt_export" / "assets" / "shapes"


def main() -> None:
    import torch

    from benchmarks.machine import cpu_info
    from bt_export.errors import BtExportError
    from bt_export.shapes.train import TrainConfig, check_output, evaluate, save, train

    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--minutes", type=float, default=None, help="stop the training loop early past this")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared 2-core machine two threads wait on each other)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="where to save (default: the shipped weights, replaced only with --overwrite)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --output when it holds a previous training's output (nothing else)")
    parser.add_argument("--patch-size", type=int, default=defaults.patch_size, help="vision patch size (px)")
    parser.add_argument("--shape-aux-weight", type=float, default=defaults.shape_aux_weight,
                        help="weight of the training-only shape-presence loss on the image tower (0: off)")
    parser.add_argument("--vision-pretrain-steps", type=int, default=defaults.vision_pretrain_steps,
                        help="steps of vision-tower-only 4-way shape pre-training before the recipe (0: off)")
    parser.add_argument("--negative-weight", action="append", default=[], metavar="KIND=W",
                        help="sampling weight of one hard-negative kind (repeatable; defaults: "
                             + ", ".join(f"{k} {v}" for k, v in defaults.negative_weights.items()) + ")")
    args = parser.parse_args()
    weights = dict(defaults.negative_weights)
    for item in args.negative_weight:
        kind, _, value = item.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if kind not in weights or not 0 <= weight < math.inf:  # "nan" and "inf" parse as floats
            parser.error(f"--negative-weight {item!r}: expected KIND=W with KIND one of {', '.join(weights)} "
                         "and W a finite number >= 0")
        weights[kind] = weight
    if args.vision_pretrain_steps < 0:
        parser.error(f"--vision-pretrain-steps must be >= 0, got {args.vision_pretrain_steps}")
    try:
        check_output(args.output, args.overwrite)  # now, not after half an hour of training
    except BtExportError as err:
        parser.error(str(err))

    torch.set_num_threads(args.threads)
    cfg = TrainConfig(seed=args.seed, steps=args.steps, minutes=args.minutes, patch_size=args.patch_size,
                      shape_aux_weight=args.shape_aux_weight,
                      vision_pretrain_steps=args.vision_pretrain_steps, negative_weights=weights)
    started = time.perf_counter()
    model, tokenizer, history = train(cfg)
    train_seconds = time.perf_counter() - started
    metrics = evaluate(model, tokenizer, cfg)
    metrics.update(train_seconds=round(train_seconds, 1), total_seconds=round(time.perf_counter() - started, 1),
                   parameters=sum(p.numel() for p in model.parameters()),
                   machine={**cpu_info(), "torch_threads": args.threads, "torch": torch.__version__},
                   date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), losses=history[-1:] + history[:1])
    print(json.dumps({k: v for k, v in metrics.items() if k != "machine"}, indent=1))
    save(model, tokenizer, cfg, args.output, metrics, overwrite=args.overwrite)
    print(f"saved to {args.output} ({metrics['total_seconds'] / 60:.1f} min in all)")


if __name__ == "__main__":
    main()
