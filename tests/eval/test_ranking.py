"""Ranked lists under the datasets' protocols (spatial NMS, own capture time left out) against plain loops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vpr.data.dataset import PlaceSplit
from vpr.eval.ranking import rank_database


def brute_force(db, queries, k, groups=None, db_time=None, q_time=None) -> np.ndarray:
    """Every distance by a loop, sorted; walk down the list keeping what the protocol keeps."""
    out = np.full((len(queries), min(k, len(db))), -1)
    for qi, q in enumerate(queries):
        dist = [float(np.sum((d - q) ** 2)) for d in db]
        order = sorted(range(len(db)), key=lambda i: dist[i])
        kept, seen = [], set()
        for i in order:
            if db_time is not None and db_time[i] == q_time[qi]:
                continue
            if groups is not None:
                if groups[i] in seen:
                    continue
                seen.add(groups[i])
            kept.append(i)
        kept = kept[: out.shape[1]]
        out[qi, : len(kept)] = kept
    return out


def test_hand_example_spatial_nms() -> None:
    # 1-D descriptors: database 0..5 at 0, 1, 2, 10, 11, 12; places {0,1,2} and {3,4,5} (groups of 3).
    db = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0]], dtype=np.float32)
    q = np.array([[1.2], [10.9]], dtype=np.float32)
    plain = rank_database(db, q, 3)
    np.testing.assert_array_equal(plain, [[1, 2, 0], [4, 3, 5]])
    nms = rank_database(db, q, 3, groups=np.array([0, 0, 0, 1, 1, 1]))
    np.testing.assert_array_equal(nms, [[1, 3, -1], [4, 2, -1]])  # best of each place; two places only


def test_hand_example_capture_time() -> None:
    db = np.array([[0.0], [1.0], [2.0], [3.0]], dtype=np.float32)
    q = np.array([[0.1], [2.9]], dtype=np.float32)
    got = rank_database(db, q, 2, db_time=np.array([7, 8, 7, 8]), q_time=np.array([7, 8]))
    np.testing.assert_array_equal(got, [[1, 3], [2, 0]])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_descriptors_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    db = rng.normal(size=(60, 8)).astype(np.float32)
    queries = rng.normal(size=(15, 8)).astype(np.float32)
    groups = rng.integers(0, 12, size=60)  # uneven places, not consecutive
    db_time = rng.integers(0, 3, size=60)
    q_time = rng.integers(0, 3, size=15)
    for k in (1, 5, 20):
        np.testing.assert_array_equal(rank_database(db, queries, k), brute_force(db, queries, k))
        np.testing.assert_array_equal(
            rank_database(db, queries, k, groups=groups), brute_force(db, queries, k, groups=groups)
        )
        np.testing.assert_array_equal(
            rank_database(db, queries, k, db_time=db_time, q_time=q_time),
            brute_force(db, queries, k, db_time=db_time, q_time=q_time),
        )
        np.testing.assert_array_equal(
            rank_database(db, queries, k, groups=groups, db_time=db_time, q_time=q_time),
            brute_force(db, queries, k, groups=groups, db_time=db_time, q_time=q_time),
        )


def test_deeper_search_when_the_first_fetch_is_not_enough() -> None:
    # One place holds the 30 nearest images: a fetch of k x (largest place) is needed and the loop must go on.
    rng = np.random.default_rng(3)
    near = rng.normal(scale=0.01, size=(30, 4))
    far = 5 + rng.normal(size=(10, 4))
    db = np.concatenate([near, far]).astype(np.float32)
    groups = np.array([0] * 30 + list(range(1, 11)))
    q = np.zeros((1, 4), dtype=np.float32)
    calls = []

    def counting_search(d, x, k):
        calls.append(k)
        return np.argsort(((d[None] - x[:, None]) ** 2).sum(-1), axis=1)[:, :k]

    got = rank_database(db, q, 5, groups=groups, search=counting_search)
    np.testing.assert_array_equal(got, brute_force(db, q, 5, groups=groups))
    db_time = np.array([0] * 30 + [1] * 10)
    calls.clear()
    got = rank_database(db, q, 5, db_time=db_time, q_time=np.array([0]), search=counting_search)
    np.testing.assert_array_equal(got, brute_force(db, q, 5, db_time=db_time, q_time=np.array([0])))
    assert len(calls) > 1, "30 same-time images ahead of the rest need a second, deeper search"


def _split(**kw) -> PlaceSplit:
    db_utm = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 0.0], [5.0, 0.0], [30.0, 0.0], [30.0, 0.0]])
    q_utm = np.array([[1.0, 0.0], [29.0, 0.0]])
    return PlaceSplit("toy", "test", [Path(f"d{i}") for i in range(6)], [Path("q0"), Path("q1")], db_utm, q_utm, **kw)


def test_split_nms_groups() -> None:
    assert _split().nms_groups() is None
    np.testing.assert_array_equal(_split(spatial_nms=True).nms_groups(), [0, 0, 1, 1, 2, 2])  # same position
    np.testing.assert_array_equal(_split(spatial_nms=True, nms_group_size=4).nms_groups(), [0, 0, 0, 0, 1, 1])


def test_split_capture_times_leave_out_own_time() -> None:
    s = _split(db_time=np.array([1, 2, 1, 2, 1, 2]), q_time=np.array([1, 2]))
    # q0 at x=1: database within 10 m are 0..3 (nearest first 0, 1, 2, 3); those of time 1 are left out.
    assert [list(p) for p in s.train_positives()] == [[1, 3], [4]]
    assert [sorted(p) for p in _split().train_positives()] == [[0, 1, 2, 3], [4, 5]]
    with pytest.raises(ValueError, match="only one"):
        _split(db_time=np.zeros(6))
