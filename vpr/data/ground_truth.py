"""Ground truth from positions: which database images lie within a radius of each query (KD-tree)."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def inclusive_radius(radius_m: float) -> float:
    """``radius_m`` with a hair of slack, so a point exactly on the radius counts as within it, as the definition
    says. Every within/beyond test of the project compares exact distances (differences, not expanded squares)
    with this, so a database image is never both a positive and a negative."""
    return radius_m * (1 + 1e-12) + 1e-9


def positives_within(db_utm: np.ndarray, q_utm: np.ndarray, radius_m: float) -> list[np.ndarray]:
    """Database indices within ``radius_m`` (inclusive) of each query, sorted nearest first.

    Args:
        db_utm: (num_db, 2) database positions in metres.
        q_utm: (num_q, 2) query positions in metres.
        radius_m: the radius (25 m for evaluation, 10 m for training's non-trivial positives).

    Returns:
        num_q int64 arrays.
    """
    db_utm = np.asarray(db_utm, dtype=np.float64).reshape(-1, 2)
    q_utm = np.asarray(q_utm, dtype=np.float64).reshape(-1, 2)
    if radius_m <= 0:
        raise ValueError(f"radius_m must be positive, got {radius_m}")
    if len(db_utm) == 0:
        return [np.zeros(0, dtype=np.int64) for _ in range(len(q_utm))]
    tree = cKDTree(db_utm)
    hits = tree.query_ball_point(q_utm, r=inclusive_radius(radius_m))
    out = []
    for q, idx in zip(q_utm, hits):
        idx = np.asarray(idx, dtype=np.int64)
        d = np.linalg.norm(db_utm[idx] - q, axis=1)
        out.append(idx[np.argsort(d, kind="stable")])
    return out
