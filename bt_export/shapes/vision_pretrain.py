"""Vision-tower pre-training on scripts/shape_probe.py's objective: 4-way shape cross-entropy on one-group scenes.

The probe reaches 0.92 with patch 8 alone while the full recipe's tower stays at 0.85 (docs/shapes.md), so
train.train can run this first (TrainConfig.vision_pretrain_steps) on the model's own VisionTower; the linear head
on the last bridge's class token is discarded and never saved.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch.nn import functional as F

from . import data

LR = 1e-3  # the probe's AdamW settings (scripts/shape_probe.py)
WARMUP = 50
BATCH = 64
POOL = 8000  # the probe's pool: 0.92 at 1,000 steps (benchmarks/results/shapes-shape-probe.json)


def one_group_scenes(seed: int, count: int, grid_fraction: float, image_size: int):
    """`count` one-group scenes of make_samples' stream (scenes with a relation skipped) → uint8 images (N, H, W, 3),
    shape index (N,), position index (N,)."""
    samples = data.make_samples(seed, count * 2 + 64, image_size=image_size, grid_fraction=grid_fraction)
    samples = [s for s in samples if s.scene.relation is None][:count]
    images = np.stack([np.asarray(s.image) for s in samples])
    shapes = np.array([data.SHAPES.index(s.scene.groups[0].shape) for s in samples])
    positions = np.array([list(data.POSITIONS).index(s.scene.position) for s in samples])
    return images, shapes, positions


def pretrain_vision(tower, enc, steps: int, seed: int, image_size: int, hidden_size: int,
                    grid_fraction: float = 0.0, pool: int | None = None, log=print) -> dict:
    """Train `tower` (bt_export.towers.VisionTower over the full model's weights) for `steps` steps of 4-way shape
    CE on `pool` (default POOL) pre-rendered scenes; returns {"steps", "loss" (mean of the last 50), "seconds"}.
    Batches come from numpy [seed, 13] and the head's weights from a seeded torch Generator, but building the
    nn.Linear still advances torch's global RNG, so the recipe's later draws (ITM mining) differ from a run without
    pre-training (as in benchmarks/results/shapes-train-patch8-pretrain-seed0.json)."""
    started = time.perf_counter()
    images, shapes, _ = one_group_scenes(seed, pool or POOL, grid_fraction, image_size)
    hidden = hidden_size  # the bridges' width (model.config.hidden_size)
    generator = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(hidden, len(data.SHAPES))
    with torch.no_grad():  # nn.Linear's default init, drawn from the private generator
        bound = hidden ** -0.5
        head.weight.copy_(torch.rand(head.weight.shape, generator=generator) * 2 * bound - bound)
        head.bias.copy_(torch.rand(head.bias.shape, generator=generator) * 2 * bound - bound)
    params = list(tower.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.98), weight_decay=0.01)
    rng = np.random.default_rng([seed, 13])
    losses = []
    for step in range(1, steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = LR * min(1.0, step / WARMUP)
        batch = rng.choice(len(images), BATCH, replace=False)
        bridge, _ = tower(enc.pixels(images[batch]))
        loss = F.cross_entropy(head(bridge[:, -1, 0]), torch.from_numpy(shapes[batch]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == steps:
            log(f"vision pre-training step {step:4d}  shape CE {np.mean(losses[-50:]):.3f}  "
                f"{(time.perf_counter() - started) / 60:.1f} min")
    return {"steps": steps, "loss": round(float(np.mean(losses[-50:])), 4) if losses else None,
            "seconds": round(time.perf_counter() - started, 1)}
