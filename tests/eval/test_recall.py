"""Tests for vpr/eval/recall.py against a hand example and a brute-force loop."""

from __future__ import annotations

import numpy as np
import pytest

from vpr.eval.recall import hit_matrix, recall_at_n


def brute_force_recall(predictions, positives, n_values):
    result = {}
    for n in n_values:
        found = 0
        for q, row in enumerate(predictions):
            if any(int(i) in set(int(p) for p in positives[q]) for i in row[:n]):
                found += 1
        result[n] = found / len(predictions)
    return result


def test_hand_example():
    predictions = np.array(
        [
            [3, 1, 4, 0],  # positives {1}: first hit at rank 2
            [5, 2, 6, 7],  # positives {5, 9}: hit at rank 1
            [0, 1, 2, 3],  # no positives at all: always a miss, still counted
            [8, 9, 2, 6],  # positives {6}: hit at rank 4
        ]
    )
    positives = [np.array([1]), np.array([5, 9]), np.array([], dtype=np.int64), np.array([6])]
    recalls = recall_at_n(predictions, positives, n_values=(1, 2, 3, 4))
    assert recalls == {1: 0.25, 2: 0.5, 3: 0.5, 4: 0.75}


def test_n_larger_than_k_is_clipped():
    predictions = np.array([[2, 0], [1, 3]])
    positives = [np.array([0]), np.array([7])]
    assert recall_at_n(predictions, positives, n_values=(1, 2, 5, 20)) == {1: 0.0, 2: 0.5, 5: 0.5, 20: 0.5}


def test_negative_predictions_never_hit():
    # faiss pads with -1; with keys q * stride + index, -1 of query 1 would alias index stride - 1 of query 0.
    predictions = np.array([[0, -1], [-1, -1]])
    positives = [np.array([5]), np.array([0])]
    hits = hit_matrix(predictions, positives)
    assert not hits.any()


def test_matches_brute_force():
    rng = np.random.default_rng(0)
    num_q, num_db, k = 50, 40, 25
    predictions = np.stack([rng.permutation(num_db)[:k] for _ in range(num_q)])
    positives = [rng.choice(num_db, size=rng.integers(0, 4), replace=False) for _ in range(num_q)]
    n_values = (1, 2, 5, 10, 20, 25)
    got = recall_at_n(predictions, positives, n_values)
    expected = brute_force_recall(predictions, positives, n_values)
    assert got == pytest.approx(expected)
    assert list(got) == list(n_values)
    assert 0 < got[1] < got[25] < 1  # non-trivial example


def test_input_errors():
    with pytest.raises(ValueError, match="2 queries"):
        recall_at_n(np.zeros((2, 3), dtype=np.int64), [np.array([0])])
    with pytest.raises(ValueError, match=">= 1"):
        recall_at_n(np.zeros((1, 3), dtype=np.int64), [np.array([0])], n_values=(0,))
