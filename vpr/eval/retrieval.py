"""Recall@N of a set of descriptors: exact faiss search, then the hit test against the ground truth."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vpr.eval.recall import recall_at_n
from vpr.eval.search import knn_search


def evaluate_descriptors(
    db_desc: np.ndarray,
    q_desc: np.ndarray,
    positives: Sequence[np.ndarray],
    n_values: Sequence[int] = (1, 5, 10, 20),
    use_gpu: bool | str = "auto",
) -> dict[int, float]:
    """db_desc: (num_db, D), q_desc: (num_q, D), positives: per query the true database indices -> {N: recall}."""
    _, predictions = knn_search(db_desc, q_desc, k=max(n_values), use_gpu=use_gpu)
    return recall_at_n(predictions, positives, n_values)
