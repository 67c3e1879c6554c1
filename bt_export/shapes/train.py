"""Train the `shapes` reference BridgeTower from scratch on generated scenes (bt_export.shapes.data), and judge it.

Scope: transformers' own modules (BridgeTowerModel + its ITM, MLM and contrastive heads, one state dict, built by
bt_export.model.with_heads_class) run through bt_export.towers' split (each tower once per input, the cross-modal
stack once per pair: the same math as BridgeTowerModel.forward, checked in tests/bt_export/test_towers.py).
Losses: ITC (symmetric InfoNCE), ITM (the positive, two one-attribute caption negatives, and one text or image
negative mined from ITC similarity as BLIP/ALBEF do), MLM (masked attribute words). CPU, seeded, deterministic for
a given seed and thread count. Saved with save_pretrained (model + BridgeTowerProcessor).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..configs import HEAD_NAMES
from ..errors import OutputDirError
from ..model import with_heads_class
from ..towers import CrossModalStack, TextTower, VisionTower
from . import data, metrics
from .tokenizer import MASK_TOKEN, build_tokenizer, hf_tokenizer

IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)  # BridgeTowerImageProcessor's defaults (OpenAI CLIP's)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class TrainConfig:
    seed: int = 0
    steps: int = 1150  # ~24 min at patch 8 on one quiet core (1.25 s/step), pre-training and rendering incl. ~27
    batch_size: int = 64  # the ITC softmax's negatives and the mining pool (a step: ~1.25 s at patch 8, one core)
    lr: float = 1e-3  # small model, warmup then cosine: fast without divergence
    min_lr_ratio: float = 0.05
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    pool: int = 40000  # pre-rendered training scenes (rendering per step would cost ~10 % of the time)
    minutes: float | None = None  # stop the loop early past this wall time (the schedule still follows `steps`)
    log_every: int = 50
    # kinds weighted by how hard they are: a 1,800-step run had colour and size at 1.00, shape 0.83, position and
    # relation at chance
    negative_weights: dict = field(default_factory=lambda: {"colour": 0.5, "shape": 3.0, "size": 0.5, "count": 1.0,
                                                            "position": 3.0, "relation": 3.0, "binding": 2.5})
    caption_negatives: int = 2  # one-attribute negatives per image, of different kinds: what the ITM bars judge
    mlm_words: int = 3  # attribute words masked per caption
    # always among them: a direct per-token signal for the spatial words (with the ITM loss alone position and
    # relation stayed at chance for 2,400 steps; masking them always reached 0.88 on position in 500) and shapes
    mlm_always: tuple[str, ...] = ("position", "relation", "shape")
    # model
    image_size: int = 64
    # 8×8 patches (2.3× the time of 16): at 16 the vision tower told shapes apart by their amount of colour only
    # (circle/square, star/triangle near chance; docs/shapes.md)
    patch_size: int = 8
    hidden_size: int = 128
    unimodal_layers: int = 3
    vision_hidden_size: int | None = None  # None: hidden_size (BridgeTower's bridges map it to hidden_size)
    grid_fraction: float = 0.0  # share of training scenes on the patch grid (data.make_samples); held-out: none
    # > 0: a training-only linear head on the image tower's class token predicts which shapes a scene holds (BCE,
    # this weight); not saved. The ITM loss alone left circle/square and star/triangle near chance (docs/shapes.md)
    shape_aux_weight: float = 0.0
    # first train the vision tower alone this many steps on scripts/shape_probe.py's objective (4-way shape CE,
    # one-group scenes; bt_export.shapes.vision_pretrain), head discarded; 0: off. 500 gives shape its bar and keeps
    # relation and binding; 1,000 left relation at chance (docs/shapes.md)
    vision_pretrain_steps: int = 500
    cross_layers: int = 2
    contrastive_size: int = 64
    # evaluation
    eval_seed: int = 1
    gallery: int = 1000
    queries: int = 200
    itm_samples: int = 500  # held-out scenes whose every applicable negative is scored


def model_config(cfg: TrainConfig, vocab_size: int) -> dict:
    """kwargs for transformers.BridgeTowerConfig."""
    h = cfg.hidden_size
    return dict(
        hidden_size=h, num_attention_heads=h // 32, num_hidden_layers=cfg.cross_layers,
        share_cross_modal_transformer_layers=True, share_link_tower_layers=False, link_tower_type="add",
        init_layernorm_from_vision_encoder=False, tie_word_embeddings=False,
        contrastive_hidden_size=cfg.contrastive_size, logit_scale_init_value=2.6592,  # ln(1 / 0.07), as CLIP
        text_config=dict(vocab_size=vocab_size, hidden_size=h, num_hidden_layers=cfg.unimodal_layers,
                         # 128 positions as tiny: outside the grammar (free text, the exporter's parity texts)
                         # the BPE falls back to bytes
                         num_attention_heads=h // 32, intermediate_size=4 * h, max_position_embeddings=130,
                         type_vocab_size=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
        vision_config=dict(hidden_size=cfg.vision_hidden_size or h,
                           num_hidden_layers=cfg.unimodal_layers, patch_size=cfg.patch_size,
                           image_size=cfg.image_size),
    )


def build_model(cfg: TrainConfig, vocab_size: int):
    from transformers import BridgeTowerConfig

    torch.manual_seed(cfg.seed)
    config = BridgeTowerConfig(**model_config(cfg, vocab_size))
    config.logit_scale_init_value = 2.6592  # transformers 5 drops the kwarg; with_heads_class reads it
    model = with_heads_class(HEAD_NAMES)(config)
    embeddings = model.bridgetower.vision_model.visual.embeddings
    with torch.no_grad():
        embeddings.position_embedding.weight.copy_(sincos_2d(config.vision_config))
    return model


def sincos_2d(vision_config, scale: float = 1.0) -> torch.Tensor:
    """(1 + G², D) fixed 2-D sine-cosine position embeddings (MAE's), row 0 (class token) zero: the init of the
    vision position embeddings. transformers' init draws them with std D^-½ (0.09), about 15× below the patch
    embeddings' output here, and position and relation then stay at chance for hundreds of steps."""
    D, G = vision_config.hidden_size, vision_config.image_size // vision_config.patch_size
    quarter = D // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter)  # (D/4,)
    y, x = torch.meshgrid(torch.arange(G, dtype=torch.float32), torch.arange(G, dtype=torch.float32), indexing="ij")
    parts = [torch.sin(x.flatten()[:, None] * omega), torch.cos(x.flatten()[:, None] * omega),
             torch.sin(y.flatten()[:, None] * omega), torch.cos(y.flatten()[:, None] * omega)]
    grid = torch.cat(parts, dim=1)  # (G², D)
    return scale * torch.cat([torch.zeros(1, D), grid])


class Parts:
    """The model's towers and cross-modal stack (bt_export.towers) over its own weights."""

    def __init__(self, model):
        self.model = model
        self.vision, self.text = VisionTower(model), TextTower(model)
        self.pooled = CrossModalStack(model, mlm=False)  # ITM: position 0 of the last layer only
        self.full = CrossModalStack(model, mlm=True)
        self.shape_head = torch.nn.Linear(model.config.hidden_size, len(data.SHAPES))  # training only, not saved


class Encoder:
    """Captions → padded ids (the shapes tokenizer) and PIL images → pixel_values, as BridgeTowerProcessor does for
    images already at the model's size (resize and crop are identities there; see tests)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.pad_id, self.mask_id = tokenizer.token_to_id("<pad>"), tokenizer.token_to_id(MASK_TOKEN)
        self.mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)

    def texts(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        encodings = self.tokenizer.encode_batch(captions)
        longest = max(len(e.ids) for e in encodings)
        ids = torch.full((len(captions), longest), self.pad_id, dtype=torch.long)
        for row, e in enumerate(encodings):
            ids[row, :len(e.ids)] = torch.tensor(e.ids)
        return ids, ids.ne(self.pad_id).long()  # (B, S), (B, S)

    def pixels(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (B, H, W, 3) → normalised float (B, 3, H, W)."""
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
        return (x - self.mean) / self.std


def images_array(samples: list[data.Sample]) -> np.ndarray:
    return np.stack([np.asarray(s.image) for s in samples])  # (N, H, W, 3) uint8


def _mlm_batch(enc: Encoder, captions: list[str], rng, words: int, always: tuple[str, ...]):
    """Captions with `words` attribute words masked, those of the categories in `always` among them → ids, mask,
    labels (-100 except masked positions)."""
    masked = []
    for caption in captions:
        found = data.attribute_words(caption)
        chosen = [i for i, category in found if category in always]
        others = [i for i, category in found if category not in always]
        extra = rng.choice(len(others), size=max(0, words - len(chosen)), replace=False)
        chosen += [others[int(k)] for k in extra]
        tokens = caption.split()
        for i in chosen:
            tokens[i] = MASK_TOKEN
        masked.append(" ".join(tokens))
    ids, mask = enc.texts(masked)
    original, _ = enc.texts(captions)
    assert original.shape == ids.shape  # one token per grammar word (internal invariant)
    labels = torch.where(ids.eq(enc.mask_id), original, torch.full_like(original, -100))
    return ids, mask, labels


def _applicable(scene: data.Scene) -> list[str]:
    return [k for k in data.NEGATIVE_KINDS if not (k == "position" and scene.position is None)
            and not (k in ("relation", "binding") and scene.relation is None)]


def _caption_negatives(scene: data.Scene, count: int, weights: dict, rng) -> list[str]:
    """`count` one-attribute negatives of different kinds, kinds drawn in proportion to `weights`."""
    kinds = _applicable(scene)
    p = np.array([weights[k] for k in kinds])
    order = rng.choice(len(kinds), size=len(kinds), replace=False, p=p / p.sum())
    negatives = []
    for k in order:  # binding is None when the swap would name a held-out combo: take the next kind
        negative = data.negative_scene(scene, kinds[int(k)], rng, avoid_combos=True)
        if negative is not None:
            negatives.append(negative.caption())
        if len(negatives) == count:
            return negatives
    raise AssertionError(f"fewer than {count} negatives for {scene}")  # every scene has at least 4 kinds


def training_step(parts: Parts, enc: Encoder, cfg: TrainConfig, pixels: torch.Tensor, scenes: list[data.Scene],
                  rng) -> dict[str, torch.Tensor]:
    """The three losses for one batch of (image, scene)."""
    B, K = len(scenes), cfg.caption_negatives
    captions = [s.caption() for s in scenes]
    negatives = [c for s in scenes for c in _caption_negatives(s, K, cfg.negative_weights, rng)]  # (B·K,)
    mlm_ids, mlm_mask, mlm_labels = _mlm_batch(enc, captions, rng, cfg.mlm_words, cfg.mlm_always)
    ids, mask = enc.texts(captions + negatives)  # ((1 + K)·B, S)
    S = max(ids.shape[1], mlm_ids.shape[1])
    ids = torch.cat([F.pad(ids, (0, S - ids.shape[1]), value=enc.pad_id),
                     F.pad(mlm_ids, (0, S - mlm_ids.shape[1]), value=enc.pad_id)])  # ((2 + K)·B, S)
    mask = torch.cat([F.pad(mask, (0, S - mask.shape[1])), F.pad(mlm_mask, (0, S - mlm_mask.shape[1]))])
    mlm_labels = F.pad(mlm_labels, (0, S - mlm_labels.shape[1]), value=-100)

    text_bridge, text_embeds = parts.text(ids, mask)  # ((2 + K)·B, C, S, D), (…, E)
    image_bridge, image_embeds = parts.vision(pixels)  # (B, C, N, D), (B, E)

    # ITC: captions that describe the same thing as the target are not negatives
    keys = [s.canonical() for s in scenes]
    same = torch.tensor([[a == b for b in keys] for a in keys])  # (B, B)
    scale = parts.model.logit_scale.exp().clamp(max=100.0)
    sim = scale * text_embeds[:B] @ image_embeds.T  # (B, B) text → image
    sim = sim.masked_fill(same & ~torch.eye(B, dtype=torch.bool), float("-inf"))
    target = torch.arange(B)
    itc = (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target)) / 2

    # ITM: the positive, K caption negatives, and one negative mined in proportion to ITC similarity (an image for
    # the first half of the texts, a text for the second half of the images)
    with torch.no_grad():
        weights = F.softmax(sim.detach().float(), dim=1).masked_fill(same, 0.0) + 1e-8 * (~same)
        mined_image = torch.multinomial(weights, 1).squeeze(1)  # per text (B,)
        mined_text = torch.multinomial(weights.T.contiguous(), 1).squeeze(1)  # per image (B,)
    arange, half = torch.arange(B), B // 2
    text_index = torch.cat([arange, B + torch.arange(B * K), arange[:half], mined_text[half:]])
    image_index = torch.cat([arange, arange.repeat_interleave(K), mined_image[:half], arange[half:]])
    labels = torch.cat([torch.ones(B), torch.zeros((K + 1) * B)]).long()
    _, itm_logits = parts.pooled(text_bridge[text_index], image_bridge, mask[text_index], image_index)[:2]
    itm = F.cross_entropy(itm_logits, labels, weight=torch.tensor([1.0, K + 1.0]))  # positives weigh as negatives

    # MLM: masked attribute words, with the image
    _, _, mlm_logits = parts.full(text_bridge[(1 + K) * B:], image_bridge, mask[(1 + K) * B:], arange)[:3]
    mlm = F.cross_entropy(mlm_logits.flatten(0, 1), mlm_labels.flatten(), ignore_index=-100)
    losses = {"itc": itc, "itm": itm, "mlm": mlm}
    if cfg.shape_aux_weight > 0:
        present = torch.tensor([[float(any(g.shape == shape for g in s.groups)) for shape in data.SHAPES]
                                for s in scenes])  # (B, 4)
        aux = F.binary_cross_entropy_with_logits(parts.shape_head(image_bridge[:, -1, 0]), present)
        losses["shape"] = cfg.shape_aux_weight * aux
    return losses


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def train(cfg: TrainConfig, log=print):
    """Train from scratch; returns (model, tokenizer, history)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 7])
    tokenizer = build_tokenizer()
    enc = Encoder(tokenizer)
    model = build_model(cfg, tokenizer.get_vocab_size()).train()
    parts = Parts(model)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embeddings" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embeddings" not in n)]
    rest += list(parts.shape_head.parameters()) if cfg.shape_aux_weight > 0 else []
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    if cfg.vision_pretrain_steps > 0:  # 0: nothing runs, the un-pre-trained weights and random streams
        from .vision_pretrain import pretrain_vision

        pretrain_vision(parts.vision, enc, cfg.vision_pretrain_steps, cfg.seed, cfg.image_size, cfg.hidden_size,
                        grid_fraction=cfg.grid_fraction, log=log)
    started = time.perf_counter()
    pool = data.make_samples(cfg.seed, cfg.pool, image_size=cfg.image_size, split="train",
                             grid_fraction=cfg.grid_fraction)
    images, scenes = images_array(pool), [s.scene for s in pool]
    del pool
    log(f"rendered {cfg.pool} training scenes in {time.perf_counter() - started:.0f} s")
    history, running, last = [], {}, time.perf_counter()
    for step in range(cfg.steps):
        if cfg.minutes is not None and time.perf_counter() - started > 60 * cfg.minutes:
            log(f"stopping at step {step}: past {cfg.minutes} minutes")
            break
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        batch = rng.choice(len(scenes), size=cfg.batch_size, replace=False)
        losses = training_step(parts, enc, cfg, enc.pixels(images[batch]), [scenes[i] for i in batch], rng)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        for k, v in losses.items():
            running[k] = running.get(k, 0.0) + v.item()
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            n = (step % cfg.log_every) + 1
            mean = {k: v / n for k, v in running.items()}
            now = time.perf_counter()
            aux = f"shape {mean['shape']:.3f}  " if "shape" in mean else ""
            log(f"step {step + 1:5d}  itc {mean['itc']:.3f}  itm {mean['itm']:.3f}  mlm {mean['mlm']:.3f}  {aux}"
                f"lr {lr_at(step, cfg):.2e}  {(now - last) / n:.2f} s/step  {(now - started) / 60:.1f} min")
            history.append({"step": step + 1, **mean})
            running, last = {}, now
    return model.eval(), tokenizer, history


# ---- evaluation -------------------------------------------------------------------------------------------------

@torch.no_grad()
def _encode_images(parts: Parts, enc: Encoder, images: np.ndarray, batch: int = 250):
    bridges, embeds = [], []
    for start in range(0, len(images), batch):
        b, e = parts.vision(enc.pixels(images[start:start + batch]))
        bridges.append(b)
        embeds.append(e)
    return torch.cat(bridges), torch.cat(embeds)  # (N, C, P, D), (N, E)


@torch.no_grad()
def itm_scores(parts: Parts, enc: Encoder, captions: list[str], image_bridge: torch.Tensor,
               image_index: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """P(match) of (captions[i], image image_index[i]) pairs, (len(captions),)."""
    out = []
    for start in range(0, len(captions), batch):
        ids, mask = enc.texts(captions[start:start + batch])
        text_bridge, _ = parts.text(ids, mask)
        logits = parts.pooled(text_bridge, image_bridge, mask, image_index[start:start + batch])[1]
        out.append(logits.softmax(-1)[:, 1])
    return torch.cat(out)


def _recall(scores: torch.Tensor, relevant: np.ndarray) -> dict[str, float]:
    """scores (Q, N), relevant (Q, N) bool → recall@1/5/10 (bt_export.shapes.metrics), rounded for metrics.json."""
    found = metrics.recall_at(metrics.ranking(scores.numpy()), relevant)
    return {k: round(v, 4) for k, v in found.items()}


@torch.no_grad()
def retrieval(parts: Parts, enc: Encoder, gallery: list[data.Sample], queries: int, brute_force_itm: bool = True,
              itm_queries: list[int] | None = None):
    """Text → image recall@1/5/10 over the gallery for the first `queries` captions (ITC; brute-force ITM).

    Brute-force ITM also records each query's rank of its first relevant image (`itm_first_relevant`, 0 = top): the
    recalls follow from it, and a check can rerun a few queries instead of every pair (200k at the shipped sizes).
    itm_queries: run brute-force ITM for these query indices only (their ranks, no recalls)."""
    image_bridge, image_embeds = _encode_images(parts, enc, images_array(gallery))
    captions = [s.caption for s in gallery[:queries]]
    keys = [s.scene.canonical() for s in gallery]
    relevant = np.array([[keys[q] == k for k in keys] for q in range(queries)])  # (Q, N)
    ids, mask = enc.texts(captions)
    text_bridge, text_embeds = parts.text(ids, mask)  # (Q, C, S, D), (Q, E)
    result = {"itc": _recall(text_embeds @ image_embeds.T, relevant)}
    if brute_force_itm:
        chosen = list(range(queries)) if itm_queries is None else list(itm_queries)
        started, N = time.perf_counter(), len(gallery)
        # each query's text tower once, its bridge paired with every image
        rows = [parts.pooled(text_bridge[q:q + 1].expand(N, -1, -1, -1), image_bridge, mask[q:q + 1].expand(N, -1),
                             torch.arange(N))[1].softmax(-1)[:, 1] for q in chosen]
        scores = torch.stack(rows)
        if itm_queries is None:
            result["itm"] = _recall(scores, relevant)
        result["itm_first_relevant"] = metrics.first_relevant(metrics.ranking(scores.numpy()),
                                                              relevant[chosen]).tolist()
        result["itm_seconds"] = round(time.perf_counter() - started, 1)
    return result


@torch.no_grad()
def itm_accuracy(parts: Parts, enc: Encoder, samples: list[data.Sample]) -> dict:
    """Per negative kind and "all": pairwise and binary accuracy (bt_export.shapes.metrics) and the count."""
    image_bridge, _ = _encode_images(parts, enc, images_array(samples))
    rows = [(i, kind, caption) for i, s in enumerate(samples) for kind, caption in data.hard_negatives(s)]
    positive = itm_scores(parts, enc, [s.caption for s in samples], image_bridge, torch.arange(len(samples)))
    negative = itm_scores(parts, enc, [c for _, _, c in rows], image_bridge, torch.tensor([i for i, _, _ in rows]))
    kinds = [k for _, k, _ in rows]
    found = metrics.itm_accuracy(positive.numpy()[[i for i, _, _ in rows]], negative.numpy(), kinds)
    result = {kind: {"pairwise": round(found["per_kind"][kind], 4), "binary": round(found["binary_per_kind"][kind], 4),
                     "n": kinds.count(kind)} for kind in data.NEGATIVE_KINDS if kind in found["per_kind"]}
    result["all"] = {"pairwise": round(found["overall"], 4), "binary": round(found["binary"], 4), "n": found["count"]}
    return result


@torch.no_grad()
def mlm_accuracy(parts: Parts, enc: Encoder, samples: list[data.Sample], seed: int) -> dict:
    """Top-1 of the MLM head on one masked attribute word per caption (bt_export.shapes.metrics), by category and
    "all"."""
    rng = np.random.default_rng([seed, 11])
    image_bridge, _ = _encode_images(parts, enc, images_array(samples))
    masked = [data.mask_attribute_words(s.caption, rng, count=1, mask_token=MASK_TOKEN) for s in samples]
    ids, mask = enc.texts([m for m, _ in masked])
    text_bridge, _ = parts.text(ids, mask)
    logits = parts.full(text_bridge, image_bridge, mask, torch.arange(len(samples)))[2]  # (B, S, V)
    positions = torch.tensor([word_index + 1 for _, [(word_index, _, _)] in masked])  # +1: <s>
    top1 = logits[torch.arange(len(samples)), positions].argmax(-1).tolist()
    found = metrics.mlm_accuracy([enc.tokenizer.decode([t]).strip() for t in top1],
                                 [word for _, [(_, word, _)] in masked], [c for _, [(_, _, c)] in masked])
    return {**{k: round(v, 4) for k, v in found["per_category"].items()}, "all": round(found["top1"], 4)}


def evaluate(model, tokenizer, cfg: TrainConfig, log=print, itm_queries: list[int] | None = None) -> dict:
    """Every figure the issue asks for, on held-out seeds (split "heldout" and "heldout_combos", seed eval_seed).
    itm_queries: brute-force ITM retrieval on these queries only (see `retrieval`)."""
    parts, enc = Parts(model.eval()), Encoder(tokenizer)
    started = time.perf_counter()
    gallery = data.make_samples(cfg.eval_seed, cfg.gallery, image_size=cfg.image_size, split="heldout")
    combos = data.make_samples(cfg.eval_seed, cfg.gallery, image_size=cfg.image_size, split="heldout_combos")
    metrics = {
        "retrieval_text_to_image": retrieval(parts, enc, gallery, cfg.queries, itm_queries=itm_queries),
        "itm_hard_negatives": itm_accuracy(parts, enc, gallery[-cfg.itm_samples:]),
        "mlm_attribute_words": mlm_accuracy(parts, enc, gallery[-cfg.itm_samples:], cfg.eval_seed),
        "heldout_combos": {
            "retrieval_text_to_image": retrieval(parts, enc, combos, cfg.queries, brute_force_itm=False),
            "itm_hard_negatives": itm_accuracy(parts, enc, combos[-cfg.itm_samples:]),
            "mlm_attribute_words": mlm_accuracy(parts, enc, combos[-cfg.itm_samples:], cfg.eval_seed),
        },
    }
    metrics["eval_seconds"] = round(time.perf_counter() - started, 1)
    return metrics


# What save() writes (transformers 5.17–5.24 write the first six; special_tokens_map.json older ones): a directory
# holding only these names is a previous training's output, which --overwrite may replace.
SAVED_FILES = frozenset({"config.json", "model.safetensors", "processor_config.json", "tokenizer.json",
                         "tokenizer_config.json", "metrics.json", "special_tokens_map.json"})


def check_output(out_dir: Path, overwrite: bool) -> Path:
    """`out_dir` absolute, checked before half an hour of training: a new or empty directory, or, with `overwrite`,
    one holding only what save() writes (the shipped weights included). Anything else is refused, naming it."""
    from bt_runtime.outputs import check_output_path

    from ..staging import STAGING_SUFFIX_BYTES  # the same `.NAME.partial-XXXXXXXX` staging name beside it

    path = check_output_path(Path(out_dir), "--output", STAGING_SUFFIX_BYTES)
    if not path.exists():
        return path
    if not path.is_dir():
        raise OutputDirError(f"--output {path} is not a directory")
    entries = sorted(os.listdir(path))
    if entries and not overwrite:
        raise OutputDirError(f"--output {path} exists ({len(entries)} entries); pass --overwrite to replace a "
                             "previous training's output, or choose a new directory")
    foreign = [name for name in entries if name not in SAVED_FILES or not (path / name).is_file()
               or (path / name).is_symlink()]
    if foreign:
        raise OutputDirError(f"--output {path} holds what training does not write ({', '.join(foreign[:4])}); "
                             "--overwrite replaces only a previous training's output: choose another directory")
    return path


def save(model, tokenizer, cfg: TrainConfig, out_dir: Path, metrics: dict, overwrite: bool = False) -> None:
    """save_pretrained of the model and of a BridgeTowerProcessor (image processor + tokenizer), plus metrics.json,
    written into a staging directory beside `out_dir` and swapped into place whole (bt_runtime.outputs): a crash
    mid-save leaves the previous weights, never half of each."""
    import shutil
    import tempfile

    from transformers import BridgeTowerProcessor
    from transformers.models.bridgetower.image_processing_pil_bridgetower import BridgeTowerImageProcessorPil

    from bt_runtime.outputs import swap_into_place

    from ..staging import new_directory_mode

    out_dir = check_output(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.partial-"))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        image_processor = BridgeTowerImageProcessorPil(size={"shortest_edge": cfg.image_size},
                                                       crop_size={"shortest_edge": cfg.image_size}, size_divisor=32)
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer.save(str(Path(tmp) / "tokenizer.json"))
            hf = hf_tokenizer(str(Path(tmp) / "tokenizer.json"), model.config.text_config.max_position_embeddings - 2)
            BridgeTowerProcessor(image_processor, hf).save_pretrained(staging)
        (staging / "metrics.json").write_text(json.dumps({**metrics, "config": asdict(cfg)}, indent=1) + "\n")
        os.chmod(staging, new_directory_mode(staging))  # mkdtemp makes it 0700; a new directory follows the umask
        swap_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

