"""The shapes task metrics (one module for the training script and bt-bench): definitions on hand-made scores."""

from __future__ import annotations

import numpy as np
import pytest

from bt_export.shapes import metrics


def test_ranking_breaks_ties_by_index_and_recall_counts_any_relevant_in_top_n():
    order = metrics.ranking(np.array([[0.5, 0.9, 0.5], [0.1, 0.2, 0.3]]))
    assert order.tolist() == [[1, 0, 2], [2, 1, 0]]
    relevant = np.array([[False, False, True], [True, True, False]])
    assert metrics.recall_at(order, relevant, (1, 2, 3, 4)) == {"r@1": 0.0, "r@2": 0.5, "r@3": 1.0, "r@4": None}


def test_first_relevant_is_the_rank_recall_at_n_counts_below_n():
    order = np.array([[1, 0, 2], [2, 1, 0], [0, 1, 2]])
    relevant = np.array([[False, False, True], [True, True, False], [False, False, False]])
    ranks = metrics.first_relevant(order, relevant)
    assert ranks.tolist() == [2, 1, 3]  # the third query has none: the ranking's length
    for n in (1, 2, 3):
        assert metrics.recall_at(order, relevant, (n,))[f"r@{n}"] == np.mean(ranks < n)


def test_itm_accuracy_pairwise_and_binary_per_kind():
    positive = np.array([0.9, 0.6, 0.4, 0.8])
    negative = np.array([0.1, 0.7, 0.3, 0.8])  # right, wrong, right but both below 0.5, a tie (wrong)
    found = metrics.itm_accuracy(positive, negative, ["shape", "shape", "colour", "colour"])
    assert found["overall"] == 0.5 and found["count"] == 4
    assert found["per_kind"] == {"shape": 0.5, "colour": 0.5}
    # binary: (p_true > 0.5) and (p_negative < 0.5), each half of a comparison
    assert found["binary_per_kind"] == {"shape": pytest.approx((1 + 1 + 1 + 0) / 4),
                                        "colour": pytest.approx((0 + 1 + 1 + 0) / 4)}
    with pytest.raises(ValueError, match="one positive and one negative"):
        metrics.itm_accuracy(positive, negative[:3], ["shape"] * 4)


def test_mlm_accuracy_by_category():
    found = metrics.mlm_accuracy(["red", "star", "left"], ["red", "circle", "left"], ["colour", "shape", "position"])
    assert found == {"top1": pytest.approx(2 / 3), "per_category": {"colour": 1.0, "shape": 0.0, "position": 1.0},
                     "count": 3}
    with pytest.raises(ValueError, match="one of each"):
        metrics.mlm_accuracy(["red"], [], [])
