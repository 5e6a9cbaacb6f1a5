"""The budget line's mining-cache size and the refusal, before training, of a cache that cannot fit."""

from __future__ import annotations

import pytest

from vpr.errors import ConfigError
from vpr.run.train import check_cache_fits, mining_cache_bytes


def test_cache_size_is_database_plus_round_queries_times_descriptor():
    # Pitts250k: 91,464 database images and a round of 1,000 queries, 32768-d descriptors
    assert mining_cache_bytes(91_464, 1000, 32_768, "float32") == 92_464 * 32_768 * 4  # 12.1 GB
    assert mining_cache_bytes(91_464, 1000, 32_768, "float16") == 92_464 * 32_768 * 2


def test_a_cache_larger_than_the_free_memory_is_refused_with_the_settings_to_change(caplog):
    with pytest.raises(ConfigError) as e:
        check_cache_fits(12.1e9, 8.0e9, "free GPU memory")
    message = str(e.value)
    assert "12.1 GB" in message and "8.0 GB of free GPU memory" in message
    assert "mining.cache_dtype=float16" in message and "mining.database_subset" in message
    check_cache_fits(6.1e9, 8.0e9, "free GPU memory")  # fits, with a warning (more than half)
    assert "more than half" in caplog.text


def test_partial_mining_budget_bounds_the_rounds_it_caches():
    """The budget's count of a partial-mining round (subset + mean positives + a full memory of negatives) is at
    least what the miner caches on the rounds of a toy street with every remembered slot filled (it had counted
    the subset alone)."""
    import numpy as np
    import torch

    from tests.data.test_mining import make_split
    from vpr.data.mining import HardNegativeMiner
    from vpr.run.train import cached_database_images

    split = make_split(num_db=300, num_q=60, seed=2)
    miner = HardNegativeMiner(split, negatives_per_query=5)
    rng = np.random.default_rng(0)
    miner.remembered[:] = rng.integers(0, split.num_db, miner.remembered.shape)  # the worst case: all remembered
    bound = cached_database_images(split.num_db, 50, 10, miner.mean_positives(), 5)
    positives = [len(p) for p in split.train_positives()]
    assert bound == 50 + int(np.ceil(10 * (np.mean([positives[q] for q in miner.trainable_queries]) + 5)))
    gen = torch.Generator().manual_seed(0)
    order = miner.trainable_queries
    sizes = [len(miner.round_subset(order[i : i + 10], 50, gen)) for i in range(0, len(order), 10)]
    assert max(sizes) <= bound and max(sizes) > 50
    assert cached_database_images(300, None, 10, 2.0, 5) == 300 and cached_database_images(300, 290, 10, 2.0, 5) == 300
