"""The task metrics of the shapes data, computed once (NumPy only): the training script's held-out figures
(bt_export.shapes.train) and bt-bench's accuracy scenario (benchmarks.accuracy) both call these.

Definitions:
- recall@n: the fraction of queries with a relevant item among the first n of its ranking; a ranking shorter than
  n gives None. Rankings: scores descending, equal scores by the lower index first.
- ITM accuracy against one-attribute hard negatives (pairwise): the image's true caption scores higher than the
  negative (p_true > p_negative), per negative kind and overall. Binary: the mean of P(p_true > 0.5) and
  P(p_negative < 0.5) over the same comparisons.
- MLM top-1: the predicted word at a masked attribute word equals the word.
"""

from __future__ import annotations

import numpy as np

THRESHOLD = 0.5  # an ITM decision: match probability above this
RECALL_AT = (1, 5, 10)


def ranking(scores: np.ndarray) -> np.ndarray:
    """(Q, N) scores → (Q, N) item indices best first; equal scores: the lower index first."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), axis=1, kind="stable")


def recall_at(order: np.ndarray, relevant: np.ndarray, ns=RECALL_AT) -> dict[str, float | None]:
    """recall@n of rankings `order` (Q, ≥n) with `relevant` (Q, N) bool; None where a ranking is shorter than n."""
    ranks = first_relevant(order, relevant)
    return {f"r@{n}": (float(np.mean(ranks < n)) if np.shape(order)[1] >= n else None) for n in ns}


def first_relevant(order: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """(Q,) rank of each query's first relevant item in `order` (0 = top; len(order[q]) when none is): recall@n is
    the fraction of queries with first_relevant < n."""
    hit = np.take_along_axis(np.asarray(relevant), np.asarray(order), axis=1)  # (Q, L): item at rank r relevant
    return np.where(hit.any(axis=1), hit.argmax(axis=1), hit.shape[1])


def itm_accuracy(positive: np.ndarray, negative: np.ndarray, kinds: list[str]) -> dict:
    """positive[i]: p(true caption) of negative i's image; negative[i]: p(negative i); kinds[i]: its kind.
    → {"overall", "per_kind", "binary", "binary_per_kind", "count"} (pairwise unless named binary)."""
    positive, negative = np.asarray(positive, dtype=np.float64), np.asarray(negative, dtype=np.float64)
    if not positive.shape == negative.shape == (len(kinds),):
        raise ValueError(f"positive {positive.shape}, negative {negative.shape}, kinds ({len(kinds)},): "
                         "one positive and one negative probability per kind entry")
    correct = positive > negative
    binary = ((positive > THRESHOLD).astype(float) + (negative < THRESHOLD)) / 2  # per comparison, mean of both
    selections = {k: np.array([x == k for x in kinds]) for k in dict.fromkeys(kinds)}
    return {"overall": float(correct.mean()),
            "per_kind": {k: float(correct[m].mean()) for k, m in selections.items()},
            "binary": float(binary.mean()),
            "binary_per_kind": {k: float(binary[m].mean()) for k, m in selections.items()},
            "count": int(correct.size)}


def mlm_accuracy(predicted: list[str], words: list[str], categories: list[str]) -> dict:
    """Top-1 of predicted words against the masked words: {"top1", "per_category", "count"}."""
    if not len(predicted) == len(words) == len(categories):
        raise ValueError(f"predicted ({len(predicted)}), words ({len(words)}), categories ({len(categories)}): "
                         "one of each per masked word")
    correct = np.array([p == w for p, w in zip(predicted, words, strict=True)])
    per_category = {c: float(correct[[x == c for x in categories]].mean()) for c in dict.fromkeys(categories)}
    return {"top1": float(correct.mean()), "per_category": per_category, "count": int(correct.size)}
