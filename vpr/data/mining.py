"""Offline hard-negative mining with a feature cache (the NetVLAD training recipe, done right).

Every ``refresh_every_queries`` training queries, the descriptors of all database images and of the next
queries are computed with the model being trained (eval mode, the full model: backbone, attention and head).
For each of those queries, the miner then picks (docs/method.md section 3):

- the positive: of its non-trivial positives (within 10 m), the nearest in descriptor space;
- the negatives: ``candidate_negatives`` database images sampled without replacement among those farther than
  the negative radius (25 m), plus the negatives remembered for this query from its last round; of these, the
  ones with d(q, n) < d(q, p) + margin, at most ``negatives_per_query``, nearest first. They are remembered for
  the next round. A query with none is skipped this round.

Differences from the public codes, on purpose: the remembered negatives live in the main process (they were
written inside DataLoader workers and lost), they are saved in checkpoints, the query order is shuffled each
epoch, and the cache is the descriptor actually trained (attention included). Distances come from one matrix
product per chunk of queries; no per-query k-NN index is fitted.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vpr.data.dataset import PlaceSplit
from vpr.data.ground_truth import inclusive_radius
from vpr.devices import full_float32_matmul
from vpr.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Triplet:
    """A training tuple: query index, positive database index, negative database indices (nearest first)."""

    query: int
    positive: int
    negatives: tuple[int, ...]


@dataclass
class MiningStats:
    queries: int = 0
    mined: int = 0
    skipped: int = 0
    mean_negatives: float = 0.0
    mean_positive_distance: float = 0.0
    mean_hardest_negative_distance: float = 0.0
    encode_seconds: float = 0.0
    mine_seconds: float = 0.0
    images_encoded: int = 0
    epoch: int = -1  # the epoch whose batches the round mined (-1: not said)
    started: float = 0.0  # time.perf_counter() when its cache pass began (0: not said)

    def line(self) -> str:
        rate = self.images_encoded / max(self.encode_seconds, 1e-9)
        means = (
            f"{self.mean_negatives:.1f} negatives per query, d(q,p) {self.mean_positive_distance:.3f}, "
            f"hardest d(q,n) {self.mean_hardest_negative_distance:.3f}"
            if self.mined
            else "no tuple this round"
        )
        return (
            f"cache pass: {self.images_encoded} images in {self.encode_seconds:.1f} s ({rate:.1f} img/s), "
            f"mining {self.mine_seconds:.2f} s; {self.mined}/{self.queries} queries with hard negatives "
            f"({self.skipped} skipped), {means}"
        )

    @classmethod
    def combine(cls, rounds: Sequence[MiningStats]) -> MiningStats:
        """The rounds of an epoch as one: counts and times added, the means weighted by each round's mined
        queries (a round without tuples weighs nothing)."""
        total = cls(
            **{
                name: sum(getattr(r, name) for r in rounds)
                for name in ("queries", "mined", "skipped", "encode_seconds", "mine_seconds", "images_encoded")
            }
        )
        if total.mined:
            for name in ("mean_negatives", "mean_positive_distance", "mean_hardest_negative_distance"):
                setattr(total, name, sum(getattr(r, name) * r.mined for r in rounds) / total.mined)
        if rounds:
            total.epoch = rounds[0].epoch
            total.started = min((r.started for r in rounds if r.started), default=0.0)
        return total


def check_radii(
    negative_radius_m: float | None,
    train_radius_m: float | None,
    train_min_distance_m: float,
    negatives_own: bool,
) -> None:
    """Mining's radii are consistent: negatives lie beyond the training positives' radius, and the positives'
    smallest distance is below it. ``negatives_own``: the negatives' radius is ``mining.negative_radius_m`` (else
    the evaluation radius, ``data.eval_radius_m``). A radius that is None (the split file's, not read yet) is not
    compared."""
    if train_radius_m is None:
        return
    if negative_radius_m is not None and negative_radius_m < train_radius_m:
        setting = "mining.negative_radius_m" if negatives_own else "data.eval_radius_m"
        raise ConfigError(
            f"{setting}={negative_radius_m:g} is below the training positives' radius data.train_radius_m="
            f"{train_radius_m:g} (else the split file's nonTrivPosDistSqThr): a database image between the "
            f"two would be both a positive and a negative of its query; choose {setting} >= data.train_radius_m "
            "(the NetVLAD recipe: 25 m and 10 m)"
            + ("" if negatives_own else ", or give the negatives their own +mining.negative_radius_m")
        )
    if train_min_distance_m >= train_radius_m:
        raise ConfigError(
            f"data.train_min_distance_m={train_min_distance_m:g} is not below the training positives' radius "
            f"data.train_radius_m={train_radius_m:g}: no database image can be a training positive; lower "
            "data.train_min_distance_m (Tokyo Time Machine's protocol: 1 m) or raise data.train_radius_m"
        )


class HardNegativeMiner:
    """Chooses positives and hard negatives for training queries from cached descriptors.

    Args:
        split: the training split (positions give the positives and the negatives).
        negatives_per_query: at most this many negatives per tuple (the baseline's ``nNeg`` = 10).
        candidate_negatives: database images sampled per query per round (``nNegSample`` = 1000).
        margin: a negative is hard if d(q, n) < d(q, p) + margin (Euclidean distance of descriptors).
        negative_radius_m: database images farther than this are negatives (default: the split's 25 m).
        chunk_queries: queries per distance-matrix chunk (bounds memory at chunk x num_db floats).
        chunk_database: database rows converted to float32 at a time when the cache is float16.
    """

    def __init__(
        self,
        split: PlaceSplit,
        negatives_per_query: int = 10,
        candidate_negatives: int = 1000,
        margin: float = 0.1,
        negative_radius_m: float | None = None,
        chunk_queries: int = 256,
        chunk_database: int = 2048,
    ):
        if negatives_per_query < 1 or candidate_negatives < 1:
            raise ValueError("mining.negatives_per_query and mining.candidate_negatives must be >= 1")
        self.split = split
        self.negatives_per_query = int(negatives_per_query)
        self.candidate_negatives = int(candidate_negatives)
        self.margin = float(margin)
        self.negative_radius_m = float(negative_radius_m if negative_radius_m is not None else split.eval_radius_m)
        own = negative_radius_m is not None
        check_radii(self.negative_radius_m, split.train_radius_m, split.train_min_distance_m, own)
        self.chunk_queries = int(chunk_queries)
        self.chunk_database = int(chunk_database)
        positives = split.train_positives()
        self.trainable_queries = np.array([i for i, p in enumerate(positives) if len(p) > 0], dtype=np.int64)
        self.dropped_queries = split.num_q - len(self.trainable_queries)
        if len(self.trainable_queries) == 0:
            raise DataError(
                f"{split.describe()}: no query has a database image within {split.train_radius_m} m "
                "(data.train_radius_m, the .mat file's posDistThr/nonTrivPosDistSqThr); nothing to train on: check "
                "the split file's utmDb/utmQ positions (metres, easting and northing), or raise data.train_radius_m"
            )
        # Remembered negatives per query, -1 = empty slot. Lives in the main process, saved in checkpoints.
        self.remembered = np.full((split.num_q, self.negatives_per_query), -1, dtype=np.int64)
        self._positives = positives

    def mean_positives(self) -> float:
        """Non-trivial positives per trainable query, on average (what partial mining caches beside its subset)."""
        return float(np.mean([len(self._positives[q]) for q in self.trainable_queries]))

    def queries_without_negatives(self) -> int:
        """Training queries with no database image farther than the negative radius: they can never get a tuple."""
        db = np.asarray(self.split.db_utm, dtype=np.float64)
        count = 0
        for start in range(0, len(self.trainable_queries), 1024):
            q = np.asarray(self.split.q_utm, dtype=np.float64)[self.trainable_queries[start : start + 1024]]
            farthest = np.sqrt(((q[:, None, :] - db[None, :, :]) ** 2).sum(-1)).max(1)
            count += int((farthest <= inclusive_radius(self.negative_radius_m)).sum())
        return count

    # -- checkpoint state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"remembered": torch.from_numpy(self.remembered.copy())}

    def load_state_dict(self, state: dict) -> None:
        rem = np.asarray(state["remembered"])
        if rem.shape != self.remembered.shape:
            raise ConfigError(
                f"checkpoint's remembered negatives have shape {rem.shape}, expected {self.remembered.shape}: "
                "the checkpoint was trained on another split or with another mining.negatives_per_query"
            )
        self.remembered = rem.astype(np.int64)

    # -- mining -----------------------------------------------------------------------------------------------
    def round_subset(self, query_ids: Sequence[int], size: int, generator: torch.Generator) -> np.ndarray:
        """The database images a partial-mining round caches: ``size`` drawn uniformly at random, plus every
        non-trivial positive and remembered negative of the round's queries (sorted, unique)."""
        drawn = torch.randperm(self.split.num_db, generator=generator)[: int(size)].numpy()
        ids = np.asarray(query_ids, dtype=np.int64)
        rem = self.remembered[ids]
        return np.unique(np.concatenate([drawn, *(self._positives[i] for i in ids), rem[rem >= 0]]).astype(np.int64))

    def _distances(self, q: torch.Tensor, db_desc: torch.Tensor, db_sq: torch.Tensor) -> torch.Tensor:
        """(R, num_db) float32 Euclidean distances (no TF32). A float16 cache is multiplied in float32 blocks of
        ``chunk_database`` rows, so no float32 copy of the whole cache is ever made."""
        with full_float32_matmul():  # exact products: TF32's would reorder near-ties of hard negatives
            if db_desc.dtype == torch.float32:
                prod = q @ db_desc.T
            else:
                prod = torch.cat([q @ b.float().T for b in db_desc.split(self.chunk_database)], dim=1)
        return ((q * q).sum(1, keepdim=True) + db_sq[None, :] - 2.0 * prod).clamp_min_(0).sqrt_()

    @torch.no_grad()
    def mine(
        self,
        query_ids: Sequence[int],
        q_desc: torch.Tensor,
        db_desc: torch.Tensor,
        generator: torch.Generator,
        db_index: np.ndarray | None = None,
    ) -> tuple[list[Triplet], MiningStats]:
        """Mine tuples for ``query_ids`` (split query indices).

        Args:
            q_desc: (R, D) descriptors of those queries, in the same order.
            db_desc: (num_db, D) descriptors of the whole database, or (S, D) of the database images
                ``db_index`` (partial mining: a subset that must hold every positive and remembered negative of
                these queries, see :meth:`round_subset`).
            generator: CPU generator for the negative sampling (seeded by the caller for repeatability).
        Returns tuples in database indices of the whole split.
        """
        t0 = time.perf_counter()
        query_ids = np.asarray(query_ids, dtype=np.int64)
        num_cached = self.split.num_db if db_index is None else len(db_index)
        if q_desc.shape[0] != len(query_ids) or db_desc.shape[0] != num_cached:
            raise ValueError(
                f"descriptor counts {tuple(q_desc.shape)}/{tuple(db_desc.shape)} do not match "
                f"{len(query_ids)} queries / {num_cached} database images"
            )
        # Column of each database image in db_desc (-1: not cached this round).
        column = np.arange(self.split.num_db) if db_index is None else np.full(self.split.num_db, -1, np.int64)
        if db_index is not None:
            db_index = np.asarray(db_index, dtype=np.int64)
            column[db_index] = np.arange(len(db_index))
        to_global = np.arange(self.split.num_db) if db_index is None else db_index
        device = db_desc.device
        # Squared norms block by block (in float32): the whole cache squared at once would double its memory.
        db_sq = torch.cat([b.float().square().sum(1) for b in db_desc.split(self.chunk_database)])
        db_utm = torch.tensor(np.asarray(self.split.db_utm)[to_global], dtype=torch.float64, device=device)
        triplets: list[Triplet] = []
        stats = MiningStats(queries=len(query_ids))
        dp_sum = dn_sum = n_sum = 0.0
        for start in range(0, len(query_ids), self.chunk_queries):
            ids = query_ids[start : start + self.chunk_queries]
            q = q_desc[start : start + self.chunk_queries].to(device).float()
            dist = self._distances(q, db_desc, db_sq)
            d_p, positive = self._nearest_positives(ids, column, dist)
            candidate = self._candidate_negatives(ids, column, db_utm, dist.shape, generator)
            # The hard negatives: the nearest candidates with d(q, n) < d(q, p) + margin, at most negatives_per_query.
            d_neg = dist.masked_fill(~candidate, float("inf"))
            k = min(self.negatives_per_query, d_neg.shape[1])
            d_n, neg = d_neg.topk(k, dim=1, largest=False)  # sorted, nearest first
            hard = torch.isfinite(d_n) & (d_n < d_p[:, None] + self.margin)

            positive, d_p, d_n, neg, hard = (t.cpu() for t in (positive, d_p, d_n, neg, hard))
            for r, qid in enumerate(ids):
                chosen = to_global[neg[r][hard[r]].numpy()]
                self.remembered[qid] = -1
                if len(chosen) == 0:
                    stats.skipped += 1
                    continue
                self.remembered[qid, : len(chosen)] = chosen
                triplets.append(Triplet(int(qid), int(to_global[int(positive[r])]), tuple(int(n) for n in chosen)))
                dp_sum += float(d_p[r])
                dn_sum += float(d_n[r, 0])
                n_sum += len(chosen)
        stats.mined = len(triplets)
        if triplets:
            stats.mean_negatives = n_sum / len(triplets)
            stats.mean_positive_distance = dp_sum / len(triplets)
            stats.mean_hardest_negative_distance = dn_sum / len(triplets)
        stats.mine_seconds = time.perf_counter() - t0
        return triplets, stats

    def _nearest_positives(
        self, ids: np.ndarray, column: np.ndarray, dist: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(d(q, p), column of p) of each query in ``ids``: of its non-trivial positives, the nearest in descriptor
        space. ``dist``: (R, cached) distances of these queries; ``column``: each database image's column in it."""
        pos_lists = [column[self._positives[i]] for i in ids]
        if any((p < 0).any() for p in pos_lists):
            raise ValueError("partial mining: the cached database subset misses a positive of a round query")
        width = max(len(p) for p in pos_lists)
        pos_idx = np.zeros((len(ids), width), dtype=np.int64)
        pos_ok = np.zeros((len(ids), width), dtype=bool)
        for r, p in enumerate(pos_lists):
            pos_idx[r, : len(p)] = p
            pos_ok[r, : len(p)] = True
        pos_idx_t = torch.from_numpy(pos_idx).to(dist.device)
        d_pos = dist.gather(1, pos_idx_t).masked_fill_(~torch.from_numpy(pos_ok).to(dist.device), float("inf"))
        d_p, arg = d_pos.min(1)
        return d_p, pos_idx_t.gather(1, arg[:, None])[:, 0]

    def _candidate_negatives(
        self,
        ids: np.ndarray,
        column: np.ndarray,
        db_utm: torch.Tensor,
        shape: torch.Size,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """(R, cached) bool, on ``db_utm``'s device: the negatives each query in ``ids`` is compared against, a
        uniform sample without replacement of ``candidate_negatives`` true negatives (farther than the negative
        radius) plus its remembered negatives. ``db_utm``: (cached, 2) positions of the cached database images;
        ``column``: each database image's column among them."""
        device = db_utm.device
        q_utm = torch.as_tensor(self.split.q_utm[ids], dtype=torch.float64, device=device)
        # Differences, not cdist's expanded squares: at UTM magnitudes (4.5e6 m) those lose 1e-4 m even in float64,
        # enough to mine an image at 24.9999 m as a negative while evaluation counts it a positive.
        exact = torch.cdist(q_utm, db_utm, compute_mode="donot_use_mm_for_euclid_dist")
        is_neg = exact > inclusive_radius(self.negative_radius_m)
        keys = torch.rand(shape, generator=generator).to(device)
        keys.masked_fill_(~is_neg, float("inf"))
        n_sample = min(self.candidate_negatives, shape[1])
        key_val, sampled = keys.topk(n_sample, dim=1, largest=False)
        candidate = torch.zeros_like(is_neg)
        candidate.scatter_(1, sampled, torch.isfinite(key_val))
        rem_global = self.remembered[ids]
        rem_cols = np.where(rem_global >= 0, column[np.maximum(rem_global, 0)], -1)
        if ((rem_global >= 0) & (rem_cols < 0)).any():
            raise ValueError("partial mining: the cached database subset misses a remembered negative")
        rem = torch.from_numpy(rem_cols).to(device)
        rows, slots = (rem >= 0).nonzero(as_tuple=True)
        candidate[rows, rem[rows, slots]] = True
        return candidate & is_neg


class _EpochRelay:
    """Passes ``set_epoch`` on to the batch sampler that owns it."""

    def __init__(self, owner: MinedBatchSampler):
        self._owner = owner

    def set_epoch(self, epoch: int) -> None:
        self._owner.set_epoch(epoch)


Encoder = Callable[..., tuple[torch.Tensor, torch.Tensor]]
"""Maps training query indices (and, for partial mining, the database indices to cache) to (query descriptors
(R, D), database descriptors (num_db or len(db_index), D))."""


class MinedBatchSampler:
    """Yields batches of :class:`Triplet`, re-mining every ``refresh_every_queries`` queries.

    It runs in the main process (a DataLoader asks its batch sampler for indices there), so the remembered
    negatives and the cache stay in one place; workers only load images. With DataLoader workers, the next
    round is mined when the loader prefetches its first batch, i.e. a few batches (``prefetch_factor`` x
    ``num_workers``) before the previous round's last step: a negligible staleness.

    Under DDP every rank mines the same tuples (same seed, gathered cache) and takes every world_size-th one,
    truncated to equal length so that ranks stay in step.

    It has no ``__len__``: skipped queries make a round's size known only after mining.

    It remembers this epoch's latest rounds, so that a checkpoint written between two steps can hold the round
    being trained (:meth:`position_state`) and a resumed run continue it batch for batch (:meth:`resume_from`).
    """

    def __init__(
        self,
        miner: HardNegativeMiner,
        encode: Encoder,
        batch_size: int,
        refresh_every_queries: int = 1000,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        on_round: Callable[[MiningStats], None] | None = None,
        database_subset: int | None = None,
    ):
        if batch_size < 1 or refresh_every_queries < 1:
            raise ValueError("data.batch_size and mining.refresh_every_queries must be >= 1")
        if database_subset is not None and int(database_subset) < 1:
            raise ValueError("mining.database_subset must be null (the whole database) or >= 1")
        self.database_subset = None if database_subset is None else int(database_subset)
        self.miner = miner
        self.encode = encode
        self.batch_size = int(batch_size)
        self.refresh_every_queries = int(refresh_every_queries)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.on_round = on_round
        self.epoch = 0
        self._records: deque[_RoundRecord] = deque(maxlen=8)  # this epoch's latest rounds (checkpoint positions)
        self._resume: dict[str, Any] | None = None
        self.resumed_after = 0  # batches of the current epoch trained before a resume (0: a whole epoch)
        # Nothing is left to train (a resumed run that had trained its epochs, or that early stopping had ended):
        # the loader Lightning builds and prefetches from before it sees so yields no batch and mines nothing.
        self.finished = False
        # Lightning calls set_epoch on ``batch_sampler.sampler`` (not on the batch sampler) every epoch.
        self.sampler = _EpochRelay(self)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def rounds(self) -> list[np.ndarray]:
        """This epoch's query order split into mining rounds."""
        order = self.miner.trainable_queries
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(order)
        step = self.refresh_every_queries
        return [order[i : i + step] for i in range(0, len(order), step)]

    def _my_batches(self, triplets: list[Triplet]) -> list[list[Triplet]]:
        """This rank's batches of a round's (shuffled, all-rank) tuples."""
        per_rank = len(triplets) // self.world_size
        mine = triplets[self.rank :: self.world_size][:per_rank]
        return [mine[i : i + self.batch_size] for i in range(0, len(mine), self.batch_size)]

    def __iter__(self) -> Iterator[list[Triplet]]:
        if self.finished:
            return
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        rounds = self.rounds()
        self._records.clear()
        first_round, batches_before, mined = 0, 0, 0
        resume, self._resume = self._resume, None
        self.resumed_after = 0
        if resume is not None and resume["epoch"] == self.epoch:
            self.resumed_after = int(resume["batches_done"])
            # The interrupted round exactly as it was mined; the model is never asked to re-encode it.
            record = _RoundRecord.from_state(resume)
            generator.set_state(record.generator_state)
            self.miner.load_state_dict({"remembered": record.remembered})
            offset = int(resume["offset"])
            batches = self._my_batches(record.triplets)
            log.info(
                "epoch %d: resuming in mining round %d/%d after %d of its %d batches",
                self.epoch,
                record.index + 1,
                len(rounds),
                offset,
                len(batches),
            )
            written_by = (
                int(resume.get("world_size", self.world_size)),
                int(resume.get("batch_size", self.batch_size)),
            )
            if written_by != (self.world_size, self.batch_size):
                # The offset counts batches of the checkpoint's processes and batch size: the round goes on with the
                # tuples they had not trained, dealt out to this run's processes in batches of its size.
                record.triplets = untrained_triplets(record.triplets, offset, *written_by)
                log.warning(
                    "the checkpoint was written by %d process(es) with data.batch_size=%d, this run has %d and %d: "
                    "the interrupted round's %d untrained tuples are dealt out again",
                    *written_by,
                    self.world_size,
                    self.batch_size,
                    len(record.triplets),
                )
                offset, batches = 0, self._my_batches(record.triplets)
            record.first_batch = int(resume["batches_done"]) - offset
            self._records.append(record)
            yield from batches[offset:]
            first_round, batches_before = record.index + 1, record.first_batch + len(batches)
        for r in range(first_round, len(rounds)):
            query_ids = rounds[r]
            t0 = time.perf_counter()
            db_index = None
            if self.database_subset is not None and self.database_subset < self.miner.split.num_db:
                db_index = self.miner.round_subset(query_ids, self.database_subset, generator)
                q_desc, db_desc = self.encode(query_ids, db_index)
            else:
                q_desc, db_desc = self.encode(query_ids)
            encode_seconds = time.perf_counter() - t0
            triplets, stats = self.miner.mine(query_ids, q_desc, db_desc, generator, db_index=db_index)
            stats.encode_seconds = encode_seconds
            stats.images_encoded = len(query_ids) + (self.miner.split.num_db if db_index is None else len(db_index))
            stats.epoch, stats.started = self.epoch, t0
            log.info("epoch %d round %d/%d %s", self.epoch, r + 1, len(rounds), stats.line())
            if self.on_round is not None:
                self.on_round(stats)
            del q_desc, db_desc
            if self.shuffle:
                order = torch.randperm(len(triplets), generator=generator).tolist()
                triplets = [triplets[i] for i in order]
            self._records.append(
                _RoundRecord(
                    self.epoch,
                    r,
                    len(rounds),
                    batches_before,
                    triplets,
                    generator.get_state(),
                    self.miner.remembered.copy(),
                )
            )
            batches = self._my_batches(triplets)
            batches_before += len(batches)
            mined += len(triplets)
            yield from batches
        if batches_before == 0 and not self.resumed_after:
            raise DataError(self._empty_epoch_message(len(rounds), mined))

    def _empty_epoch_message(self, num_rounds: int, mined: int) -> str:
        """Why an epoch had no batch to train (Lightning would go on without validating and fail on the monitor)."""
        m = self.miner
        head = f"epoch {self.epoch}: no batch to train in its {num_rounds} mining round(s)"
        if mined:  # tuples, but fewer than the ranks
            return (
                f"{head}: {mined} tuple(s) mined, fewer than the {self.world_size} processes; use fewer devices "
                "or more training data"
            )
        no_negatives = m.queries_without_negatives()
        if no_negatives == len(m.trainable_queries):
            return (
                f"{head}: no database image of {m.split.dataset}/{m.split.split} lies farther than {m.negative_radius_m:g} m "
                "(the negative radius) from any training query, so there are no negatives: check the split "
                "file's positions (utmDb/utmQ, metres)"
            )
        return (
            f"{head}: none of the {len(m.trainable_queries)} training queries of {m.split.dataset}/{m.split.split} had a "
            f"negative with d(q,n) < d(q,p) + {m.margin:g} among its {m.candidate_negatives} candidates (the "
            "cache pass lines above say so per round); the network already separates every training query's "
            "negatives by the margin. On so little data, raise mining.margin or mining.candidate_negatives, or "
            "add training places"
            + (
                f" ({no_negatives} of the queries have no database image farther than {m.negative_radius_m:g} m)"
                if no_negatives
                else ""
            )
        )

    # -- the position within an epoch, for checkpoints written between its steps ----------------------------------
    def position_state(self, batches_done: int) -> dict[str, Any] | None:
        """What a checkpoint needs to continue this epoch after its first ``batches_done`` batches.

        The loader asks for batches ahead of training (prefetching), so the round those batches belong to may
        not be the last one mined. None when the epoch is complete (the next one starts afresh) or the round is
        no longer remembered.
        """
        for record in reversed(self._records):
            n = len(self._my_batches(record.triplets))
            if record.first_batch <= batches_done <= record.first_batch + n:
                if batches_done == record.first_batch + n and record.index == record.num_rounds - 1:
                    return None  # the epoch is complete
                return {
                    **record.state(),
                    "offset": batches_done - record.first_batch,
                    "batches_done": batches_done,
                    "world_size": self.world_size,  # what the offset counts in
                    "batch_size": self.batch_size,
                }
        if self._records:
            log.warning(
                "the checkpoint at batch %d of epoch %d does not hold its mining round (rounds shorter than "
                "the loader's prefetching); resuming from it restarts the epoch",
                batches_done,
                self.epoch,
            )
        return None

    def resume_from(self, state: dict[str, Any]) -> None:
        """Continue, at the next iteration of epoch ``state['epoch']``, where :meth:`position_state` left off."""
        self._resume = state


def untrained_triplets(triplets: list[Triplet], offset: int, world_size: int, batch_size: int) -> list[Triplet]:
    """A round's tuples, in their order, less those ``world_size`` processes trained in their first ``offset``
    batches of ``batch_size`` (process r's tuples are ``triplets[r::world_size]``, cut to equal length)."""
    per_rank = len(triplets) // world_size
    trained = {r + world_size * j for r in range(world_size) for j in range(min(per_rank, offset * batch_size))}
    return [t for i, t in enumerate(triplets) if i not in trained]


@dataclass
class _RoundRecord:
    """One mining round as trained: its tuples (all ranks', shuffled), the sampling generator and the miner's
    memory right after it. Checkpoints store it as tensors (they load with ``weights_only=True``)."""

    epoch: int
    index: int
    num_rounds: int
    first_batch: int  # this rank's batches of the epoch before this round
    triplets: list[Triplet]
    generator_state: torch.Tensor
    remembered: np.ndarray

    def state(self) -> dict[str, Any]:
        t = self.triplets
        return {
            "epoch": self.epoch,
            "round": self.index,
            "num_rounds": self.num_rounds,
            "queries": torch.tensor([x.query for x in t], dtype=torch.int64),
            "positives": torch.tensor([x.positive for x in t], dtype=torch.int64),
            "negative_counts": torch.tensor([len(x.negatives) for x in t], dtype=torch.int64),
            "negatives": torch.tensor([n for x in t for n in x.negatives], dtype=torch.int64),
            "generator_state": self.generator_state.clone(),
            "remembered": torch.from_numpy(self.remembered.copy()),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _RoundRecord:
        negatives = state["negatives"].tolist()
        triplets, at = [], 0
        for q, p, c in zip(state["queries"].tolist(), state["positives"].tolist(), state["negative_counts"].tolist()):
            triplets.append(Triplet(int(q), int(p), tuple(int(n) for n in negatives[at : at + c])))
            at += c
        return cls(
            int(state["epoch"]),
            int(state["round"]),
            int(state["num_rounds"]),
            0,
            triplets,
            state["generator_state"],
            np.asarray(state["remembered"]).astype(np.int64),
        )
