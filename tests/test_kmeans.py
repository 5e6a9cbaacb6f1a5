"""k-means for NetVLAD's centroids: faiss when installed, else the torch version, checked here by what k-means
means (a fixed point of assign-to-nearest and average) and by hand examples."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from vpr.centroids import kmeans, torch_kmeans


def lloyd_fixed_point_gap(x: np.ndarray, centroids: np.ndarray) -> float:
    """Largest distance between a centroid and the mean of the points nearest to it, by a loop in float64."""
    x, c = x.astype(np.float64), centroids.astype(np.float64)
    gap = 0.0
    for j in range(len(c)):
        members = [p for p in x if int(np.argmin(((c - p) ** 2).sum(1))) == j]
        assert members, f"cluster {j} is empty"
        gap = max(gap, float(np.linalg.norm(np.mean(members, axis=0) - c[j])))
    return gap


def blobs(seed: int = 0, k: int = 5, per: int = 40, dim: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * 4
    return (centres.repeat(per, 0) + rng.normal(size=(k * per, dim))).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_torch_kmeans_converges_to_a_fixed_point(seed):
    x = blobs(seed)
    c = torch_kmeans(x, 5, iterations=50, seed=seed)
    assert c.shape == (5, 6) and c.dtype == np.float32
    assert lloyd_fixed_point_gap(x, c) < 1e-4


def test_an_emptied_cluster_restarts_at_the_worst_served_point():
    # five points at 100, one at 110: when both start points are at 100 every point ties to the first centroid and
    # the second empties; restarted at 110 (the point farthest from its centroid), the clusters end as {100, 110}
    x = np.array([[100.0]] * 5 + [[110.0]], np.float32)
    for seed in range(8):
        assert sorted(torch_kmeans(x, 2, iterations=5, seed=seed)[:, 0].tolist()) == [100.0, 110.0]


def test_one_line_hand_example():
    # {0, 1} and {10, 11}: from any two distinct start points Lloyd ends at 0.5 and 10.5
    x = np.array([[0.0], [1.0], [10.0], [11.0]], np.float32)
    for seed in range(6):
        assert sorted(torch_kmeans(x, 2, iterations=10, seed=seed)[:, 0].tolist()) == [0.5, 10.5]


def test_chunked_assignment_and_seed_repeatability():
    x = blobs(3, per=30)
    a = torch_kmeans(x, 5, iterations=10, seed=7)
    np.testing.assert_allclose(torch_kmeans(x, 5, iterations=10, seed=7, chunk=16), a, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(torch_kmeans(x, 5, iterations=10, seed=7), a)


def test_without_faiss_kmeans_runs_in_torch(no_faiss, caplog):
    x = blobs(4)
    with caplog.at_level(logging.WARNING, logger="vpr.centroids"):
        c = kmeans(x, 5, iterations=50, seed=4)
    assert "faiss is not installed" in caplog.text
    assert lloyd_fixed_point_gap(x, c) < 1e-4


@pytest.mark.parametrize("seed", [-1, 2.5, "abc"])
def test_a_cluster_seed_that_is_no_seed_is_refused_before_any_work(seed):
    """cluster.seed is read only when a pretrained backbone's file is clustered, after the data and the network are
    loaded: a wrong value is said with the other settings, whatever the backbone."""
    from omegaconf import OmegaConf

    from vpr.build import check_common_settings
    from vpr.errors import ConfigError

    cfg = OmegaConf.create({"seed": 1, "cluster": {"images": 10, "descriptors_per_image": 5, "iterations": 3}})
    check_common_settings(cfg, trainer=False)  # no cluster.seed: the default
    cfg.cluster.seed = 0
    check_common_settings(cfg, trainer=False)
    cfg.cluster.seed = seed
    with pytest.raises(ConfigError, match=r"^cluster\.seed=.*: must be a whole number >= 0"):
        check_common_settings(cfg, trainer=False)
