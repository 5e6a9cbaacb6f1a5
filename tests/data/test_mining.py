"""Mining invariants checked against plain-loop recomputations."""

import dataclasses

import numpy as np
import pytest
import torch

from vpr.data.dataset import PlaceSplit
from vpr.data.mining import HardNegativeMiner, MinedBatchSampler
from vpr.errors import ConfigError


def make_split(num_db=120, num_q=30, seed=0):
    """Database every 5 m along a street (x axis); queries between them, a few far away (no positive)."""
    rng = np.random.default_rng(seed)
    db = np.stack([np.arange(num_db) * 5.0, np.zeros(num_db)], 1)
    qx = rng.uniform(0, (num_db - 1) * 5.0, size=num_q)
    q = np.stack([qx, rng.uniform(-3, 3, size=num_q)], 1)
    q[:3, 1] = 500.0  # three queries with no database image within 10 m: dropped
    return PlaceSplit("toy", "train", [f"db{i}" for i in range(num_db)], [f"q{i}" for i in range(num_q)], db, q)


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def descriptors(split, dim=16, seed=1):
    rng = np.random.default_rng(seed)
    db = unit(rng.normal(size=(split.num_db, dim))).astype(np.float32)
    q = unit(rng.normal(size=(split.num_q, dim))).astype(np.float32)
    return q, db


def reference(split, q_desc, db_desc, qid, margin, k):
    """Plain loops: positive = nearest non-trivial positive; negatives = nearest violating beyond 25 m."""
    pos = [i for i in range(split.num_db) if np.hypot(*(split.db_utm[i] - split.q_utm[qid])) <= 10.0]
    dist = [float(np.sqrt(((q_desc[qid] - db_desc[i]) ** 2).sum())) for i in range(split.num_db)]
    p = min(pos, key=lambda i: dist[i])
    negs = [i for i in range(split.num_db) if np.hypot(*(split.db_utm[i] - split.q_utm[qid])) > 25.0]
    negs = sorted(negs, key=lambda i: dist[i])[:k]
    return p, [i for i in negs if dist[i] < dist[p] + margin]


def test_drops_queries_without_positive():
    miner = HardNegativeMiner(make_split())
    assert miner.dropped_queries == 3
    assert set(miner.trainable_queries.tolist()) == set(range(3, 30))


@pytest.mark.parametrize("margin", [0.1, 0.5, 1.5])
def test_exhaustive_sampling_equals_brute_force(margin):
    split = make_split()
    q_desc, db_desc = descriptors(split)
    miner = HardNegativeMiner(split, negatives_per_query=10, candidate_negatives=10_000, margin=margin, chunk_queries=7)
    ids = miner.trainable_queries
    triplets, stats = miner.mine(
        ids, torch.from_numpy(q_desc[ids]), torch.from_numpy(db_desc), torch.Generator().manual_seed(0)
    )
    by_query = {t.query: t for t in triplets}
    skipped = 0
    for qid in ids:
        p, negs = reference(split, q_desc, db_desc, qid, margin, 10)
        if not negs:
            assert qid not in by_query
            skipped += 1
            continue
        t = by_query[qid]
        assert t.positive == p
        assert list(t.negatives) == negs
    assert stats.skipped == skipped and stats.mined == len(ids) - skipped
    assert margin < 1.5 or skipped == 0  # unit vectors: d <= 2, so margin 1.5 keeps nearly everything


def test_invariants_with_sampling():
    split = make_split(num_db=200, num_q=40, seed=3)
    q_desc, db_desc = descriptors(split, seed=4)
    miner = HardNegativeMiner(split, negatives_per_query=4, candidate_negatives=30, margin=0.3)
    ids = miner.trainable_queries
    triplets, _ = miner.mine(
        ids, torch.from_numpy(q_desc[ids]), torch.from_numpy(db_desc), torch.Generator().manual_seed(5)
    )
    assert triplets
    for t in triplets:
        qpos = split.q_utm[t.query]
        assert np.hypot(*(split.db_utm[t.positive] - qpos)) <= 10.0
        assert 1 <= len(t.negatives) <= 4 and len(set(t.negatives)) == len(t.negatives)
        d = lambda i, q=t.query: np.linalg.norm(q_desc[q] - db_desc[i])  # noqa: E731
        for n in t.negatives:
            assert np.hypot(*(split.db_utm[n] - qpos)) > 25.0
            assert d(n) < d(t.positive) + 0.3 + 1e-6
        assert [d(n) for n in t.negatives] == sorted(d(n) for n in t.negatives)
        # remembered for the next round, in the main-process state
        assert miner.remembered[t.query][: len(t.negatives)].tolist() == list(t.negatives)


def test_remembered_negatives_are_reused():
    split = make_split(num_db=150, num_q=10, seed=7)
    q_desc, db_desc = descriptors(split, seed=8)
    qid = 5
    far = [i for i in range(split.num_db) if abs(split.db_utm[i, 0] - split.q_utm[qid, 0]) > 100]
    special = far[len(far) // 2]
    db_desc[special] = q_desc[qid]  # the hardest possible negative (distance 0)
    kwargs = dict(negatives_per_query=3, candidate_negatives=1, margin=2.5)
    ids = np.array([qid])

    def run(miner, seed):
        t, _ = miner.mine(
            ids, torch.from_numpy(q_desc[ids]), torch.from_numpy(db_desc), torch.Generator().manual_seed(seed)
        )
        return t[0].negatives

    fresh = [special in run(HardNegativeMiner(split, **kwargs), s) for s in range(10)]
    assert sum(fresh) <= 2  # one sampled candidate out of ~140 negatives: rarely the special one
    miner = HardNegativeMiner(split, **kwargs)
    miner.remembered[qid, 0] = special
    for s in range(10):
        negs = run(miner, s)
        assert negs[0] == special  # remembered, hardest, and remembered again for the next round


def test_state_dict_roundtrip_and_shape_check():
    split = make_split()
    a = HardNegativeMiner(split, negatives_per_query=3)
    a.remembered[4] = [1, 2, -1]
    b = HardNegativeMiner(split, negatives_per_query=3)
    b.load_state_dict(a.state_dict())
    assert b.remembered[4].tolist() == [1, 2, -1]
    with pytest.raises(ValueError, match="negatives_per_query"):
        HardNegativeMiner(split, negatives_per_query=5).load_state_dict(a.state_dict())


class CountingEncoder:
    def __init__(self, split):
        self.q, self.db = descriptors(split)
        self.calls = []

    def __call__(self, query_ids):
        self.calls.append(np.asarray(query_ids).copy())
        return torch.from_numpy(self.q[query_ids]), torch.from_numpy(self.db)


def test_sampler_refreshes_every_n_queries_and_shuffles_per_epoch():
    split = make_split()
    miner = HardNegativeMiner(split, candidate_negatives=10_000, margin=1.5)
    enc = CountingEncoder(split)
    sampler = MinedBatchSampler(miner, enc, batch_size=4, refresh_every_queries=10, seed=3)
    batches = list(sampler)
    assert len(enc.calls) == 3  # 27 trainable queries, a round of 10 -> 3 cache passes
    assert sorted(np.concatenate(enc.calls).tolist()) == sorted(miner.trainable_queries.tolist())
    assert all(1 <= len(b) <= 4 for b in batches)
    seen = [t.query for b in batches for t in b]
    assert sorted(seen) == sorted(miner.trainable_queries.tolist())  # margin 1.5: nobody skipped
    first = np.concatenate(enc.calls).tolist()
    sampler.set_epoch(1)
    list(sampler)
    assert np.concatenate(enc.calls[3:]).tolist() != first
    sampler.set_epoch(0)
    list(sampler)
    assert np.concatenate(enc.calls[6:]).tolist() == first


def test_sampler_splits_tuples_across_ranks():
    split = make_split()
    out = []
    for rank in range(2):
        miner = HardNegativeMiner(split, candidate_negatives=10_000, margin=1.5)
        s = MinedBatchSampler(
            miner, CountingEncoder(split), batch_size=2, refresh_every_queries=100, seed=1, rank=rank, world_size=2
        )
        out.append([t.query for b in s for t in b])
    assert len(out[0]) == len(out[1]) == 27 // 2
    assert not set(out[0]) & set(out[1])


def test_lightning_sets_the_epoch_through_batch_sampler_sampler():
    from lightning.fabric.utilities.data import _set_sampler_epoch
    from torch.utils.data import DataLoader

    split = make_split()
    sampler = MinedBatchSampler(HardNegativeMiner(split), CountingEncoder(split), batch_size=2)
    loader = DataLoader(list(range(10)), batch_sampler=sampler, collate_fn=lambda x: x)
    _set_sampler_epoch(loader, 3)
    assert sampler.epoch == 3


class DriftingEncoder(CountingEncoder):
    """Descriptors that change with every training step, like a model being trained between cache passes."""

    def __init__(self, split):
        super().__init__(split)
        rng = np.random.default_rng(7)
        self.dq, self.ddb = rng.normal(size=self.q.shape), rng.normal(size=self.db.shape)
        self.trained = 0

    def __call__(self, query_ids):
        self.calls.append(np.asarray(query_ids).copy())
        q = unit(self.q + 0.3 * self.trained * self.dq).astype(np.float32)
        db = unit(self.db + 0.3 * self.trained * self.ddb).astype(np.float32)
        return torch.from_numpy(q[query_ids]), torch.from_numpy(db)


def train_loop(sampler, enc, start=0, stop=None):
    """Consume batches the way Lightning does: the next batch is fetched before the current one trains."""
    enc.trained, out = start, []
    it = iter(sampler)
    cur = next(it, None)
    while cur is not None:
        nxt = next(it, None)
        out.append(cur)
        enc.trained += 1
        if enc.trained == stop:
            return out, sampler.position_state(stop)
        cur = nxt
    return out, None


@pytest.mark.parametrize("stop", [1, 2, 3, 5, 6])
def test_resume_within_an_epoch_continues_batch_for_batch(stop, tmp_path):
    split = make_split()

    def sampler():
        miner = HardNegativeMiner(split, candidate_negatives=40, margin=0.3, negatives_per_query=3)
        enc = DriftingEncoder(split)
        s = MinedBatchSampler(miner, enc, batch_size=3, refresh_every_queries=9, seed=5)
        s.set_epoch(2)
        return s, enc

    s_full, enc = sampler()
    full, _ = train_loop(s_full, enc)
    assert len(enc.calls) == 3 and len(full) > stop  # three rounds of at most three batches
    s, enc = sampler()
    head, position = train_loop(s, enc, stop=stop)
    assert position is not None and position["epoch"] == 2
    torch.save(position, tmp_path / "p.pt")  # a checkpoint holds it and loads it back with weights_only=True
    position = torch.load(tmp_path / "p.pt", weights_only=True)

    s2, enc2 = sampler()
    s2.resume_from(position)
    tail, _ = train_loop(s2, enc2, start=stop)
    assert head + tail == full
    assert np.array_equal(s2.miner.remembered, s_full.miner.remembered)
    # the interrupted round is taken from the checkpoint, not re-encoded with the resumed model
    assert len(enc2.calls) == 2 - position["round"]


@pytest.mark.parametrize(("world_size", "batch_size"), [(2, 2), (1, 2), (2, 3)])
def test_a_step_checkpoint_resumed_with_other_processes_or_batch_size_trains_the_rest_of_its_round(
    world_size, batch_size
):
    """A checkpoint written by 1 process with batches of 3, resumed by ``world_size`` processes with batches of
    ``batch_size``: the interrupted round's tuples that were not trained are trained once, none twice."""
    split = make_split()
    miner = HardNegativeMiner(split, candidate_negatives=40, margin=0.3, negatives_per_query=3)
    s = MinedBatchSampler(miner, DriftingEncoder(split), batch_size=3, refresh_every_queries=9, seed=5)
    s.set_epoch(2)
    head, position = train_loop(s, s.encode, stop=4)
    key = lambda t: (t.query, t.positive, tuple(t.negatives))  # noqa: E731
    counts, negatives = position["negative_counts"].tolist(), position["negatives"].tolist()
    starts = np.cumsum([0, *counts])
    whole_round = [
        (q, p, tuple(negatives[starts[i] : starts[i + 1]]))
        for i, (q, p) in enumerate(zip(position["queries"].tolist(), position["positives"].tolist()))
    ]
    offset = position["offset"]
    assert offset >= 1
    trained_before = [key(t) for b in head[len(head) - offset :] for t in b]
    assert trained_before == whole_round[: 3 * offset]  # one process: the round's first tuples, in order

    after = []
    for rank in range(world_size):
        enc = DriftingEncoder(split)
        r = MinedBatchSampler(
            HardNegativeMiner(split, candidate_negatives=40, margin=0.3, negatives_per_query=3),
            enc,
            batch_size=batch_size,
            refresh_every_queries=9,
            seed=5,
            rank=rank,
            world_size=world_size,
        )
        r.set_epoch(2)
        r.resume_from(position)
        for batch in r:
            if enc.calls:  # the next round is being mined: the interrupted one is done
                break
            assert len(batch) <= batch_size
            after += [key(t) for t in batch]
    rest = len(whole_round) - 3 * offset
    assert len(after) == len(set(after)) == rest - rest % world_size  # each once; ranks cut to equal length
    assert not set(after) & set(trained_before)
    assert set(after) <= set(whole_round[3 * offset :])


def test_position_of_a_finished_epoch_is_none_and_a_resume_for_another_epoch_is_ignored():
    split = make_split()
    miner = HardNegativeMiner(split, candidate_negatives=10_000, margin=1.5)
    s = MinedBatchSampler(miner, CountingEncoder(split), batch_size=4, refresh_every_queries=10, seed=3)
    batches = list(s)
    assert s.position_state(len(batches)) is None
    mid = s.position_state(2)
    s.set_epoch(1)
    s.resume_from(mid)  # recorded in epoch 0: epoch 1 starts afresh
    assert sum(len(b) for b in s) == len(miner.trainable_queries)


def test_float16_cache_mines_the_tuples_of_the_float32_cache():
    """Descriptors stored in float16 (the Pitts250k setting) give the same positives and negatives as float32 when
    no two distances are closer than float16's rounding; distances themselves are computed in float32."""
    split = make_split(num_db=300, num_q=60, seed=4)
    q, db = descriptors(split, dim=64, seed=5)
    # round to float16 first: both caches then hold the same numbers, and only the arithmetic path differs
    q16, db16 = torch.from_numpy(q).half(), torch.from_numpy(db).half()
    a = HardNegativeMiner(split, candidate_negatives=200, margin=0.5, chunk_queries=16)
    b = HardNegativeMiner(split, candidate_negatives=200, margin=0.5, chunk_queries=16, chunk_database=70)
    ids = a.trainable_queries
    ta, sa = a.mine(ids, q16[ids].float(), db16.float(), torch.Generator().manual_seed(0))
    tb, sb = b.mine(ids, q16[ids], db16, torch.Generator().manual_seed(0))
    assert ta == tb and len(ta) > 20
    assert sa.mean_positive_distance == pytest.approx(sb.mean_positive_distance, rel=1e-6)
    # and the float32 distances of the blockwise path equal a plain float64 computation
    d = b._distances(q16[ids[:5]].float(), db16, (db16.float() ** 2).sum(1))
    want = np.sqrt(((q16[ids[:5]].double().numpy()[:, None] - db16.double().numpy()[None]) ** 2).sum(-1))
    np.testing.assert_allclose(d.numpy(), want, atol=1e-5)


def test_partial_mining_equals_brute_force_on_the_cached_subset():
    split = make_split(num_db=120, num_q=30, seed=2)
    q, db = descriptors(split, dim=16, seed=3)
    miner = HardNegativeMiner(split, candidate_negatives=10_000, margin=0.4, negatives_per_query=4)
    ids = miner.trainable_queries
    rng = np.random.default_rng(0)
    subset = np.unique(np.concatenate([rng.choice(120, 40, replace=False), *(miner._positives[i] for i in ids)]))
    triplets, _ = miner.mine(
        ids, torch.from_numpy(q[ids]), torch.from_numpy(db[subset]), torch.Generator().manual_seed(0), db_index=subset
    )
    got = {t.query: t for t in triplets}
    for qid in ids:
        # plain loops over the subset only, in global database indices
        dist = {int(i): float(np.sqrt(((q[qid] - db[i]) ** 2).sum())) for i in subset}
        metres = {i: float(np.hypot(*(split.db_utm[i] - split.q_utm[qid]))) for i in dist}
        p = min((i for i in dist if metres[i] <= 10.0), key=dist.get)
        negs = sorted((i for i in dist if metres[i] > 25.0), key=dist.get)[:4]
        hard = [i for i in negs if dist[i] < dist[p] + 0.4]
        if not hard:
            assert qid not in got
            continue
        assert got[qid].positive == p and list(got[qid].negatives) == hard


def test_partial_mining_rounds_cache_a_subset_with_the_positives_and_remembered_negatives():
    split = make_split(num_db=120, num_q=30, seed=2)
    miner = HardNegativeMiner(split, candidate_negatives=50, margin=1.5, negatives_per_query=3)
    calls = []

    class SubsetEncoder(CountingEncoder):
        def __call__(self, query_ids, db_index=None):
            calls.append((np.asarray(query_ids).copy(), np.asarray(db_index).copy(), miner.remembered.copy()))
            return torch.from_numpy(self.q[query_ids]), torch.from_numpy(self.db[db_index])

    sampler = MinedBatchSampler(
        miner, SubsetEncoder(split), batch_size=4, refresh_every_queries=10, seed=1, database_subset=25
    )
    for epoch in range(2):  # the second epoch brings remembered negatives into the subsets
        sampler.set_epoch(epoch)
        batches = list(sampler)
    assert len(calls) == 6
    for query_ids, db_index, remembered in calls:
        assert len(db_index) >= 25 and len(db_index) < split.num_db and np.all(np.diff(db_index) > 0)
        for qid in query_ids:
            assert set(miner._positives[qid]) <= set(db_index)
            assert set(remembered[qid][remembered[qid] >= 0]) <= set(db_index)
    # tuples are in whole-split indices, drawn from the round's subset
    last_subset = set(calls[-1][1])
    last_round = set(calls[-1][0])
    for t in (t for b in batches for t in b if t.query in last_round):
        assert t.positive in last_subset and set(t.negatives) <= last_subset


class FixedEncoder:
    """Descriptors given by hand: each query on its own database image's descriptor, everything else far away."""

    def __init__(self, split, q, db):
        self.q, self.db = torch.tensor(q, dtype=torch.float32), torch.tensor(db, dtype=torch.float32)

    def __call__(self, query_ids):
        return self.q[np.asarray(query_ids)], self.db


def street(num_db, num_q, spacing):
    db = np.stack([np.arange(num_db) * spacing, np.zeros(num_db)], 1)
    q = db[:num_q] + [1.0, 0.0]  # each query 1 m from database image i: its positive
    return PlaceSplit("toy", "train", [f"db{i}" for i in range(num_db)], [f"q{i}" for i in range(num_q)], db, q)


def test_an_epoch_without_any_tuple_says_why():
    """An epoch that mines nothing would leave Lightning without a validation and fail on the monitor: it is one
    DataError naming the cause instead."""
    from vpr.errors import DataError

    # 1. Negatives exist, but none is inside the margin: query i's descriptor is database image i's (d(q,p) = 0),
    #    the other database images are orthogonal to it (d(q,n) = sqrt(2) > 0 + 0.1).
    split = street(num_db=8, num_q=8, spacing=30.0)
    eye = np.eye(8)
    sampler = MinedBatchSampler(HardNegativeMiner(split, margin=0.1), FixedEncoder(split, eye, eye), batch_size=2)
    with pytest.raises(
        DataError,
        match=r"epoch 0: .*none of the 8 training queries of toy/train had a negative with "
        r"d\(q,n\) < d\(q,p\) \+ 0\.1",
    ):
        list(sampler)
    # ... while a margin above sqrt(2) mines every query
    sampler = MinedBatchSampler(HardNegativeMiner(split, margin=1.5), FixedEncoder(split, eye, eye), batch_size=2)
    assert sum(len(b) for b in sampler) == 8

    # 2. No negatives at all: every database image lies within 25 m of every query (a street of 8 m).
    split = street(num_db=5, num_q=5, spacing=2.0)
    eye = np.eye(5)
    sampler = MinedBatchSampler(HardNegativeMiner(split), FixedEncoder(split, eye, eye), batch_size=2)
    with pytest.raises(DataError, match=r"no database image of toy/train lies farther than 25 m"):
        list(sampler)


def test_queries_without_negatives_counted_by_a_loop():
    split = make_split(num_db=30, num_q=30, seed=4)  # a 145 m street
    miner = HardNegativeMiner(split, negative_radius_m=100.0)
    expected = sum(
        all(np.hypot(*(split.db_utm[i] - split.q_utm[q])) <= 100.0 for i in range(split.num_db))
        for q in miner.trainable_queries
    )
    assert 0 < expected < len(miner.trainable_queries)  # the case has both kinds
    assert miner.queries_without_negatives() == expected


def test_a_split_without_positives_is_a_data_error():
    from vpr.errors import DataError

    split = street(num_db=4, num_q=4, spacing=30.0)
    split.q_utm[:] += 500.0
    with pytest.raises(DataError, match="no query has a database image within 10.0 m"):
        HardNegativeMiner(split)


def test_an_epochs_rounds_combine_into_the_epochs_counts_and_means():
    """What is logged per epoch describes every round: counted here from the tuples the batches hold."""
    from vpr.data.mining import MiningStats

    split = make_split()
    miner = HardNegativeMiner(
        split, candidate_negatives=10_000, margin=-0.3
    )  # below zero: some queries find no negative
    rounds = []
    sampler = MinedBatchSampler(
        miner, CountingEncoder(split), batch_size=4, refresh_every_queries=10, seed=3, on_round=rounds.append
    )
    tuples = [t for b in sampler for t in b]
    assert len(rounds) == 3
    epoch = MiningStats.combine(rounds)
    assert epoch.queries == len(miner.trainable_queries)
    assert epoch.mined == len(tuples) and epoch.skipped == len(miner.trainable_queries) - len(tuples) > 0
    assert epoch.mean_negatives == pytest.approx(np.mean([len(t.negatives) for t in tuples]))
    assert epoch.images_encoded == sum(r.images_encoded for r in rounds) > rounds[0].images_encoded
    assert MiningStats.combine([]).mined == 0 and MiningStats.combine([]).mean_negatives == 0.0


def test_no_negative_lies_within_the_negative_radius_at_utm_magnitudes():
    """Database images on a 25 m ring around queries at Pittsburgh's UTM coordinates (4.5e6 m): the exact distances
    of some are a hair under 25 m (24.9999999998): evaluation counts them as positives, so they are never mined as
    negatives, however cdist's expanded squares round at these magnitudes."""
    base = np.array([585000.0, 4477000.0])
    angles = np.arange(30) * np.pi / 15
    ring = base + 25.0 * np.stack([np.cos(angles), np.sin(angles)], 1)
    far = base + 40.0 * np.stack([np.cos(angles[::3]), np.sin(angles[::3])], 1)  # ten true negatives
    db = np.concatenate([base[None] + [3.0, 4.0], ring, far])
    q = np.repeat(base[None], 30, 0)
    split = PlaceSplit("utm", "train", [f"d{i}" for i in range(41)], [f"q{i}" for i in range(30)], db, q)
    miner = HardNegativeMiner(split, negatives_per_query=40, candidate_negatives=1000, margin=10.0)
    gen = torch.Generator().manual_seed(0)
    q_desc = torch.nn.functional.normalize(torch.randn(30, 4, generator=gen), dim=1)
    db_desc = torch.nn.functional.normalize(torch.randn(41, 4, generator=gen), dim=1)
    triplets, _ = miner.mine(miner.trainable_queries, q_desc, db_desc, gen)
    exact = [float(np.hypot(*(db[i] - base))) for i in range(41)]
    within = {i for i in range(41) if exact[i] <= 25.0 + 1e-6}
    assert any(exact[i] < 25.0 for i in range(1, 31))  # the case holds images just inside the radius
    negatives = {int(n) for t in triplets for n in t.negatives}
    assert negatives and not (negatives & within)


@pytest.mark.parametrize(("train_radius_m", "negative_radius_m"), [(30.0, None), (30.0, 20.0)])
def test_training_positives_beyond_the_negative_radius_are_refused(train_radius_m, negative_radius_m):
    """Query at 0 m, database images at 27, 100 and 200 m. With training positives out to 30 m and negatives from
    25 m on, the image at 27 m would be both (a tuple whose positive is also its negative); likewise with
    negatives from 20 m (mining.negative_radius_m). Radii that meet (27 m both) are fine."""
    from pathlib import Path

    def split_with(train_radius: float) -> PlaceSplit:
        db_utm = np.array([[27.0, 0.0], [100.0, 0.0], [200.0, 0.0]])
        db = [Path(f"db{i}.jpg") for i in range(3)]
        return PlaceSplit("toy", "train", db, [Path("q.jpg")], db_utm, np.zeros((1, 2)), 25.0, train_radius)

    with pytest.raises(ConfigError, match=r"radius data.train_radius_m=30 .* both a positive and a negative"):
        HardNegativeMiner(split_with(train_radius_m), negative_radius_m=negative_radius_m)
    assert HardNegativeMiner(split_with(27.0), negative_radius_m=27.0).trainable_queries.tolist() == [0]


@pytest.mark.parametrize(
    ("eval_m", "min_m", "message"),
    [(5.0, 0.0, "data.eval_radius_m=5 is below"), (25.0, 10.0, "data.train_min_distance_m=10 is not below")],
)
def test_radii_that_leave_no_consistent_tuple_are_refused(eval_m, min_m, message):
    split = dataclasses.replace(make_split(), eval_radius_m=eval_m, train_min_distance_m=min_m)
    with pytest.raises(ConfigError, match=message):
        HardNegativeMiner(split)
