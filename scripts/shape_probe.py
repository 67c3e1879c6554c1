"""Vision-tower probe of the `shapes` recipe: can the image tower tell the four shapes (and the four positions) apart?

    PYTHONPATH=. python3 scripts/shape_probe.py --patch 16 --vision-hidden 128 --grid-fraction 0 --steps 600

Trains the vision tower of bt_export.shapes.train's model (same config knobs, the same sine-cosine init) with two
linear heads on its last bridge's class token, 4-way shape and 4-way position, on one-group scenes
(bt_export.shapes.vision_pretrain.one_group_scenes; a `grid_fraction` share of them on the patch grid), batch 64,
AdamW 1e-3; prints held-out accuracy on free-centre scenes at a few step counts and the seconds per step.
docs/shapes.md reads it.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    import torch
    from torch.nn import functional as F

    from bt_export.shapes.tokenizer import build_tokenizer
    from bt_export.shapes.train import Encoder, TrainConfig, build_model
    from bt_export.shapes.vision_pretrain import one_group_scenes
    from bt_export.towers import VisionTower

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--vision-hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--grid-fraction", type=float, default=0.0)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--report", type=str, default="100,300,600")
    parser.add_argument("--pool", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=str, default=None, help="append the result as one JSON line to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)

    cfg = TrainConfig(seed=args.seed, patch_size=args.patch, vision_hidden_size=args.vision_hidden,
                      unimodal_layers=args.layers)
    tokenizer = build_tokenizer()
    model = build_model(cfg, tokenizer.get_vocab_size())
    tower, enc = VisionTower(model), Encoder(tokenizer)
    heads = torch.nn.Linear(cfg.hidden_size, 8)
    params = list(tower.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.98), weight_decay=0.01)
    started = time.perf_counter()
    images, shapes, positions = one_group_scenes(args.seed, args.pool, args.grid_fraction, cfg.image_size)
    test_images, test_shapes, test_positions = one_group_scenes(args.seed + 1000, 1000, 0.0, cfg.image_size)
    render_s = time.perf_counter() - started
    rng = np.random.default_rng(args.seed)
    reports = {int(r) for r in args.report.split(",")}
    found, train_s = {}, 0.0
    for step in range(1, args.steps + 1):
        t0 = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * min(1.0, step / 50)
        batch = rng.choice(len(images), 64, replace=False)
        bridge, _ = tower(enc.pixels(images[batch]))
        logits = heads(bridge[:, -1, 0])
        loss = (F.cross_entropy(logits[:, :4], torch.from_numpy(shapes[batch]))
                + F.cross_entropy(logits[:, 4:], torch.from_numpy(positions[batch])))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        train_s += time.perf_counter() - t0
        if step in reports:
            with torch.no_grad():
                out = torch.cat([heads(tower(enc.pixels(test_images[i:i + 250]))[0][:, -1, 0])
                                 for i in range(0, len(test_images), 250)])
            found[step] = {"shape": round(float((out[:, :4].argmax(1).numpy() == test_shapes).mean()), 3),
                           "position": round(float((out[:, 4:].argmax(1).numpy() == test_positions).mean()), 3)}
            print(f"step {step}: {found[step]}  {train_s / step:.3f} s/step", flush=True)
    result = {"patch": args.patch, "vision_hidden": args.vision_hidden, "layers": args.layers,
              "grid_fraction": args.grid_fraction, "seed": args.seed, "accuracy_free_centres": found,
              "s_per_step": round(train_s / args.steps, 3), "render_s": round(render_s, 1)}
    print(json.dumps(result))
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
