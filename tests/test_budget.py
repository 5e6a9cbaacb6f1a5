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
