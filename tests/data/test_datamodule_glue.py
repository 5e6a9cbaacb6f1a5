"""The data module's glue, pinned: which images the mining cache encodes as queries and as database, which image
and which guidance target fill each slot of a tuple, and the whole path from the miner to a collated batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.data.spec_files import pittsburgh_like
from vpr.data import datamodule as dm_module
from vpr.data.datamodule import PlaceDataModule, TripletDataset, collate_triplets
from vpr.data.mining import Triplet


@pytest.fixture
def dm(tmp_path) -> PlaceDataModule:
    pittsburgh_like(tmp_path, name="spec", split="train", num_places=4)
    m = PlaceDataModule(
        str(tmp_path),
        "spec",
        splits={"train": "train", "val": "train", "test": "train"},
        image_size=(32, 32),
        num_workers=0,
        mining={"candidate_negatives": 5, "negatives_per_query": 2},
    )
    m.setup("fit")
    return m


def identity_of(split, path: Path) -> int:
    """Database image i -> i, query j -> num_db + j (the order of split.image_paths)."""
    return split.image_paths.index(Path(path))


def test_mining_cache_encodes_the_whole_database_and_the_rounds_queries(dm):
    split = dm.train_split
    seen = {}

    def encoder(dataset, desc, dtype=torch.float32, indices=None, keep_workers=False):
        seen["paths"] = [dataset.paths[i] for i in indices]
        seen["keep_workers"] = keep_workers
        return torch.tensor([[float(identity_of(split, p))] for p in seen["paths"]])

    dm.encoder = encoder
    query_ids = np.array([3, 0, 2])
    q_desc, db_desc = dm._encode_for_mining(query_ids)
    assert seen["paths"] == list(split.db_paths) + [split.q_paths[i] for i in query_ids]
    assert db_desc[:, 0].tolist() == list(range(split.num_db))  # row i is database image i
    assert q_desc[:, 0].tolist() == [split.num_db + i for i in query_ids]  # rows follow query_ids
    assert seen["keep_workers"]  # a round every 1000 queries reuses the loader's workers


def test_partial_mining_encodes_the_rounds_database_subset(dm):
    split = dm.train_split
    dm.encoder = lambda dataset, desc, dtype=torch.float32, indices=None, keep_workers=False: torch.tensor(
        [[float(identity_of(split, dataset.paths[i]))] for i in indices]
    )
    q_desc, db_desc = dm._encode_for_mining(np.array([1, 3]), db_index=np.array([5, 2, 9]))
    assert db_desc[:, 0].tolist() == [5, 2, 9]
    assert q_desc[:, 0].tolist() == [split.num_db + 1, split.num_db + 3]


def test_tuple_images_and_targets_line_up(dm, monkeypatch):
    split = dm.train_split
    monkeypatch.setattr(dm_module, "load_image", lambda path: path)  # the "image" is its path
    transform = lambda path: torch.full((1, 2, 2), float(identity_of(split, path)))  # noqa: E731
    # guidance targets are indexed like split.image_paths: target i holds 1000 + i
    targets = [torch.full((1, 2, 2), 1000.0 + i) for i in range(split.num_db + split.num_q)]
    ds = TripletDataset(split, transform, targets)
    t1, t2 = Triplet(query=2, positive=7, negatives=(0, 11)), Triplet(query=1, positive=4, negatives=(9,))
    batch = collate_triplets([ds[t1], ds[t2]])
    nd = split.num_db
    first = lambda x: x[:, 0, 0, 0].tolist()  # noqa: E731
    assert first(batch["query"]) == [nd + 2, nd + 1]
    assert first(batch["positive"]) == [7, 4]
    assert first(batch["negatives"]) == [0, 11, 9] and batch["neg_to_query"].tolist() == [0, 0, 1]
    images = first(torch.cat([batch["query"], batch["positive"], batch["negatives"]]))
    assert first(batch["targets"]) == [1000 + i for i in images]  # each target belongs to its image


def test_loader_yields_mined_tuples_of_this_split(dm, monkeypatch):
    """From the batch sampler through the DataLoader: queries have a positive within 10 m, negatives beyond 25 m."""
    split = dm.train_split
    monkeypatch.setattr(dm_module, "load_image", lambda path: path)
    dm.transform = lambda path: torch.full((3, 2, 2), float(identity_of(split, path)))
    dm.encoder = lambda dataset, desc, dtype=torch.float32, indices=None, keep_workers=False: torch.randn(
        len(indices), 8, generator=torch.Generator().manual_seed(0)
    )
    batches = list(dm.train_dataloader())
    assert batches, "no tuple was mined"
    nd = split.num_db
    for b in batches:
        queries = [int(v) - nd for v in b["query"][:, 0, 0, 0].tolist()]
        positives = [int(v) for v in b["positive"][:, 0, 0, 0].tolist()]
        for q, p in zip(queries, positives):
            assert np.hypot(*(split.db_utm[p] - split.q_utm[q])) <= 10.0
        for n, owner in zip(b["negatives"][:, 0, 0, 0].tolist(), b["neg_to_query"].tolist()):
            assert np.hypot(*(split.db_utm[int(n)] - split.q_utm[queries[owner]])) > 25.0


def test_float16_cache_setting_reaches_the_encoder(dm):
    seen = {}

    def encoder(dataset, desc, dtype=torch.float32, indices=None, keep_workers=False):
        seen["dtype"] = dtype
        return torch.zeros(len(indices), 4, dtype=dtype)

    dm.encoder = encoder
    dm.cache_dtype = torch.float16
    q_desc, db_desc = dm._encode_for_mining(np.array([0, 1]))
    assert seen["dtype"] == torch.float16 and db_desc.dtype == torch.float16


@pytest.mark.parametrize("world", [1, 2, 3])
def test_each_rank_evaluates_its_own_shard_and_the_shards_cover_the_split(dm, world):
    """Under DDP the strategy installs no sampler (the mined batch sampler shards itself), so the evaluation loader
    shards: rank r reads images r, r + world, ... (padded to equal length); together every image of the split."""
    from types import SimpleNamespace

    total = len(dm.test_split.image_paths)  # 12 database images and 4 queries
    seen = []
    for rank in range(world):
        dm.trainer = SimpleNamespace(
            world_size=world, global_rank=rank, strategy=SimpleNamespace(root_device=torch.device("cpu"))
        )
        indices = [int(i) for _, index in dm.test_dataloader() for i in index]
        expected = [(rank + world * k) % total for k in range(-(-total // world))] if world > 1 else list(range(total))
        assert indices == expected
        seen += indices
    assert set(seen) == set(range(total))
