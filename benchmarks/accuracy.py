"""Task accuracy on the shapes held-out data (bt_export.shapes.data): the evaluation set one seed makes, the task
metrics, the bars issue 20 sets, and the task-level agreement of two backends (reused by the int8 search).
NumPy only; who computes the scores (eager, ONNX Runtime, TensorRT) is benchmarks.accuracy_run's job, and the
metrics themselves are bt_export.shapes.metrics (the training script reports the same ones).

Definitions (stated in every report):
- ITM decision on a pair: match probability p > 0.5. ITM accuracy against a one-attribute hard negative: the
  image's true caption scores higher than the negative (p_true > p_negative), per negative kind and overall.
- Relevance in retrieval: same canonical scene (two captions of one scene, e.g. "A left of B" and "B right of A",
  are both correct). recall@n: the fraction of queries with a relevant item among the first n.
- Two-stage: ITC cosine shortlist of k, reranked by ITM; it ranks only its shortlist, so recall@n for n ≤ k.
- MLM top-1: the most likely token at a masked attribute word, decoded, equals the word.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bt_export.shapes.metrics import (  # noqa: F401 (the metrics, one module for training and bt-bench)
    RECALL_AT,
    THRESHOLD,
    itm_accuracy,
    mlm_accuracy,
    ranking,
    recall_at,
)

BARS = {"eager_fp32_identical": 0.999, "reduced_precision_points": 0.5, "two_stage_recall10_of_brute": 0.95}


@dataclass
class EvalSet:
    """One split's held-out data: a gallery of samples (image, caption, scene), the first `queries` of them used
    as t→i and i→t queries (i→t candidates: the distinct captions), one-attribute hard negatives of every
    sample, one masked attribute word per sample."""

    split: str
    seed: int
    samples: list  # bt_export.shapes.data.Sample
    queries: int
    negatives: list[tuple[int, str, str]]  # (sample index, kind, false caption)
    masked: list[tuple[int, str, str, str]]  # (sample index, masked caption, word, category)
    keys: list = field(default_factory=list)  # canonical scene per sample: relevance

    @property
    def images(self) -> list:
        return [s.image for s in self.samples]

    @property
    def captions(self) -> list[str]:
        return [s.caption for s in self.samples]

    @property
    def distinct(self) -> list[int]:
        """Index of each caption's first sample: the i→t candidates (a repeated caption is one candidate, so an
        exact tie between two copies cannot decide a top-1)."""
        first: dict[str, int] = {}
        for index, caption in enumerate(self.captions):
            first.setdefault(caption, index)
        return list(first.values())

    def relevance(self) -> np.ndarray:
        """(N, N) bool: sample i's caption is correct for sample j's image (same canonical scene)."""
        ids = {key: n for n, key in enumerate(dict.fromkeys(self.keys))}
        codes = np.array([ids[k] for k in self.keys])
        return codes[:, None] == codes[None, :]


def make_eval_set(seed: int, size: int, *, queries: int, image_size: int, split: str = "heldout",
                  mask_token: str = "<mask>") -> EvalSet:
    """`size` samples of `split` from `seed`, their hard negatives and masked attribute words: a pure function of
    its arguments (no tuning to any seed)."""
    from bt_export.shapes import data

    if not 1 <= queries <= size:
        raise ValueError(f"queries: {queries}; valid: 1 ≤ queries ≤ gallery ({size})")
    samples = data.make_samples(seed, size, image_size=image_size, split=split)
    negatives = [(i, kind, caption) for i, s in enumerate(samples) for kind, caption in data.hard_negatives(s)]
    masked = []
    for i, sample in enumerate(samples):
        rng = np.random.default_rng([data.SPLITS[split], seed, i, 2])  # the stream hard_negatives leaves alone
        text, [(_, word, category)] = data.mask_attribute_words(sample.caption, rng, 1, mask_token)
        masked.append((i, text, word, category))
    return EvalSet(split, seed, samples, queries, negatives, masked, [s.scene.canonical() for s in samples])


# ---- agreement of two backends (task level) --------------------------------------------------------------------

@dataclass
class TaskOutputs:
    """What one backend decided on one evaluation set; every field optional (a head the export lacks)."""

    itm_probabilities: dict[str, np.ndarray] = field(default_factory=dict)  # pair set → (P,) probabilities
    itm_comparisons: np.ndarray | None = None  # (C,) bool: true caption above its hard negative
    rankings: dict[str, np.ndarray] = field(default_factory=dict)  # name → (Q, L) item indices, best first
    mlm_top1: np.ndarray | None = None  # (M,) token ids


def task_agreement(reference: TaskOutputs, other: TaskOutputs, k: int = 10) -> dict[str, float]:
    """Fractions in [0, 1] of `other`'s decisions equal to `reference`'s: ITM decisions (p > 0.5) per pair (over the
    pair sets both scored), ITM
    hard-negative comparisons, retrieval top-1 and top-k overlap (|top-k ∩ top-k'| / k, averaged over queries and
    rankings), MLM top-1 token. Metrics either side lacks are left out."""
    result = {}
    sets = [name for name in reference.itm_probabilities if name in other.itm_probabilities]
    if sets:
        a, b = (np.concatenate([np.asarray(o.itm_probabilities[n]).ravel() for n in sets]) for o in (reference, other))
        result["itm_decisions"] = float(np.mean((a > THRESHOLD) == (b > THRESHOLD)))
    if reference.itm_comparisons is not None and other.itm_comparisons is not None:
        result["itm_comparisons"] = float(np.mean(np.asarray(reference.itm_comparisons)
                                                  == np.asarray(other.itm_comparisons)))
    shared = [name for name in reference.rankings if name in other.rankings]
    if shared:
        top1, overlap = [], []
        for name in shared:
            a, b = reference.rankings[name], other.rankings[name]
            top1.append(a[:, 0] == b[:, 0])
            n = min(k, a.shape[1], b.shape[1])
            overlap += [len(set(x[:n]) & set(y[:n])) / n for x, y in zip(a, b, strict=True)]
        result["retrieval_top1"] = float(np.concatenate(top1).mean())
        result[f"retrieval_top{k}_overlap"] = float(np.mean(overlap))
    if reference.mlm_top1 is not None and other.mlm_top1 is not None:
        result["mlm_top1"] = float(np.mean(np.asarray(reference.mlm_top1) == np.asarray(other.mlm_top1)))
    return result


# ---- bars (issue 20) -------------------------------------------------------------------------------------------

def task_metrics(result: dict) -> dict[str, float]:
    """The flat task metrics of one backend's result (ITM per kind, recalls, MLM), for the precision bar."""
    flat = {}
    if "itm" in result:
        flat["itm overall"] = result["itm"]["overall"]
        flat |= {f"itm {k}": v for k, v in result["itm"]["per_kind"].items()}
    for method in ("brute_force", "two_stage"):
        for direction in ("t2i", "i2t"):
            for name, value in result.get(method, {}).get(direction, {}).items():
                if value is not None:
                    flat[f"{method} {direction} {name}"] = value
    if "mlm" in result:
        flat["mlm top1"] = result["mlm"]["top1"]
    return flat


def check_bars(results: dict[str, dict]) -> list[dict]:
    """Issue 20's bars on one split's per-backend results: each {"bar", "value", "passed"}."""
    checks = []
    fp32 = results.get("onnxruntime:fp32")
    if fp32 and "differs_from_eager" in fp32:
        worst = max(fp32["differs_from_eager"].values(), default=0.0)
        checks.append({"bar": "eager fp32 vs onnxruntime:fp32: identical decisions ≥ 99.9 %",
                       "value": f"{1 - worst:.4%} (worst metric)", "passed": 1 - worst >= BARS["eager_fp32_identical"]})
    if fp32:
        reference = task_metrics(fp32)
        for label, result in results.items():
            if not label.startswith("onnxruntime:") or label.split(":")[1] == "fp32":
                continue
            other = task_metrics(result)
            gaps = {m: abs(other[m] - reference[m]) * 100 for m in reference if m in other}
            worst = max(gaps, key=gaps.get) if gaps else None
            checks.append({"bar": f"{label} within {BARS['reduced_precision_points']} points of fp32 on every "
                                  "task metric",
                           "value": f"worst {worst}: {gaps[worst]:.2f} points" if worst else "no metrics",
                           "passed": bool(gaps) and gaps[worst] <= BARS["reduced_precision_points"] + 1e-9})
    for label, result in results.items():
        brute = result.get("brute_force", {}).get("t2i", {}).get("r@10")
        two = result.get("two_stage", {}).get("t2i", {}).get("r@10")
        if brute is not None and two is not None and label in ("torch", "onnxruntime:fp32"):
            ratio = two / brute if brute else float("nan")
            checks.append({"bar": f"{label}: two-stage (k={result['two_stage']['k']}) t→i recall@10 ≥ "
                                  f"{BARS['two_stage_recall10_of_brute']} × brute force",
                           "value": f"{two:.3f} / {brute:.3f} = {ratio:.3f}",
                           "passed": bool(ratio >= BARS["two_stage_recall10_of_brute"])})
    return checks
