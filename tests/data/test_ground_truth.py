import numpy as np
import pytest

from vpr.data.ground_truth import positives_within


def brute_force(db, q, r):
    out = []
    for qq in q:
        found = [(float(np.hypot(*(d - qq))), i) for i, d in enumerate(db) if np.hypot(*(d - qq)) <= r]
        out.append([i for _, i in sorted(found)])
    return out


def test_matches_brute_force_and_sorted_nearest_first():
    rng = np.random.default_rng(0)
    db = rng.uniform(0, 200, size=(300, 2)) + [584000, 4477000]
    q = rng.uniform(0, 200, size=(50, 2)) + [584000, 4477000]
    for r in (10.0, 25.0):
        got = positives_within(db, q, r)
        want = brute_force(db, q, r)
        assert [g.tolist() for g in got] == want


def test_radius_is_inclusive_and_exclusive_beyond():
    db = np.array([[0.0, 0.0], [10.0, 0.0], [10.0001, 0.0], [0.0, 25.0], [0.0, 25.01]])
    q = np.array([[0.0, 0.0]])
    assert positives_within(db, q, 10.0)[0].tolist() == [0, 1]
    assert positives_within(db, q, 25.0)[0].tolist() == [0, 1, 2, 3]


def test_bad_radius():
    with pytest.raises(ValueError, match="radius_m"):
        positives_within(np.zeros((1, 2)), np.zeros((1, 2)), 0)
