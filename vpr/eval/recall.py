"""Recall@N for place recognition: the fraction of queries with at least one true positive among the top N.

Ground truth (which database images lie within 25 m of each query) is computed elsewhere and passed in as a
list of index arrays; queries without any positive count as misses (they stay in the denominator).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def hit_matrix(predictions: np.ndarray, positives: Sequence[np.ndarray]) -> np.ndarray:
    """Boolean (Nq, k) matrix: hits[q, j] is True when predictions[q, j] is a positive of query q.

    predictions: (Nq, k) database indices ranked by distance (negative entries, faiss's "no result", never hit).
    positives: Nq arrays of database indices.
    """
    predictions = np.asarray(predictions)
    if predictions.ndim != 2:
        raise ValueError(f"predictions must be (Nq, k) indices, got shape {predictions.shape}.")
    num_queries = predictions.shape[0]
    if len(positives) != num_queries:
        raise ValueError(f"positives has {len(positives)} entries but predictions has {num_queries} queries.")
    positives = [np.asarray(p, dtype=np.int64).reshape(-1) for p in positives]
    counts = np.array([p.size for p in positives], dtype=np.int64)
    flat_positives = np.concatenate(positives) if counts.sum() else np.zeros(0, dtype=np.int64)
    if flat_positives.size and flat_positives.min() < 0:
        raise ValueError("positives contain negative database indices.")
    # Encode every (query, database index) pair as one integer, so one np.isin tests all queries at once.
    stride = int(max(predictions.max(initial=-1), flat_positives.max(initial=-1))) + 1
    positive_keys = np.repeat(np.arange(num_queries, dtype=np.int64), counts) * stride + flat_positives
    predicted_keys = np.arange(num_queries, dtype=np.int64)[:, None] * stride + predictions.astype(np.int64)
    return np.isin(predicted_keys, positive_keys) & (predictions >= 0)


def recall_at_n(
    predictions: np.ndarray,
    positives: Sequence[np.ndarray],
    n_values: Iterable[int] = (1, 5, 10, 20),
) -> dict[int, float]:
    """Recall@N for every N in ``n_values`` as fractions in [0, 1].

    predictions: (Nq, k) retrieved database indices, nearest first. N larger than k is clipped to k (with
    k >= number of database images that is exact; otherwise it is a lower bound).
    positives: per query, the array of database indices that are true positives.
    """
    n_values = [int(n) for n in n_values]
    if any(n < 1 for n in n_values):
        raise ValueError(f"n_values must be >= 1, got {n_values}.")
    hits = hit_matrix(predictions, positives)
    num_queries, k = hits.shape
    if num_queries == 0:
        raise ValueError("recall_at_n: no queries.")
    if k == 0:
        return {n: 0.0 for n in n_values}
    found_within = np.logical_or.accumulate(hits, axis=1)  # found_within[q, j]: a hit among the top j + 1
    return {n: float(found_within[:, min(n, k) - 1].mean()) for n in n_values}
