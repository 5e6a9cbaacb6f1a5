"""The LightningDataModule: splits, the mined training tuples, and the evaluation loaders.

The data side never imports the model. For mining it is handed an ``encoder``: a function that maps a dataset
of images to their descriptors, in order (the LightningModule provides it, sharding it over ranks under DDP).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from vpr.data.dataset import (
    ImageDataset,
    PlaceSplit,
    load_folder_split,
    load_image,
    load_mat_split,
)
from vpr.data.guidance import GuidanceTargets, build_label_source
from vpr.data.mining import HardNegativeMiner, MinedBatchSampler, MiningStats, Triplet, check_radii
from vpr.data.transforms import eval_transform
from vpr.devices import loader_worker_init, loader_workers
from vpr.errors import ConfigError, DataError, user_message

log = logging.getLogger(__name__)

DatasetEncoder = Callable[..., torch.Tensor]
"""(dataset of (image, index) items, description for the progress bar, dtype=..., indices=..., keep_workers=...)
-> (len(indices), D) descriptors of that dtype: the items ``indices`` of the dataset (all by default); with
``keep_workers`` the loader's workers stay alive for the next call on the same dataset."""


class TripletDataset(Dataset):
    """Loads the images of a :class:`Triplet` (the batch sampler hands over triplets, not integers)."""

    def __init__(self, split: PlaceSplit, transform: Callable, targets: GuidanceTargets | None = None):
        self.split = split
        self.transform = transform
        self.targets = targets  # indexed like split.image_paths: database first, then queries

    def __len__(self) -> int:  # not used by the batch sampler; for completeness
        return self.split.num_q

    def __getitem__(self, t: Triplet) -> dict[str, Any]:
        load = lambda p: self.transform(load_image(p))  # noqa: E731
        item = {
            "query": load(self.split.q_paths[t.query]),
            "positive": load(self.split.db_paths[t.positive]),
            "negatives": torch.stack([load(self.split.db_paths[n]) for n in t.negatives]),
        }
        if self.targets is not None:
            item["target_query"] = self.targets[self.split.num_db + t.query]
            item["target_positive"] = self.targets[t.positive]
            item["target_negatives"] = torch.stack([self.targets[n] for n in t.negatives])
        return item


def collate_triplets(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack tuples with variable negative counts.

    Returns: query (B, 3, H, W), positive (B, 3, H, W), negatives (N, 3, H, W) with N = sum of the counts,
    neg_to_query (N,) the tuple each negative belongs to.
    """
    counts = [len(it["negatives"]) for it in items]
    batch = {
        "query": torch.stack([it["query"] for it in items]),
        "positive": torch.stack([it["positive"] for it in items]),
        "negatives": torch.cat([it["negatives"] for it in items]),
        "neg_to_query": torch.repeat_interleave(torch.arange(len(items)), torch.tensor(counts)),
    }
    if "target_query" in items[0]:
        # (B + B + N, 1, h, w) in the order the model sees the images: queries, positives, negatives.
        batch["targets"] = torch.cat(
            [
                torch.stack([it["target_query"] for it in items]),
                torch.stack([it["target_positive"] for it in items]),
                torch.cat([it["target_negatives"] for it in items]),
            ]
        )
    return batch


def _read_mat_spec(dm: PlaceDataModule, split: str) -> PlaceSplit:
    return load_mat_split(
        dm.root,
        dm.name,
        split,
        split_file=dm.split_file,
        db_dir=dm.db_dir,
        query_dir=dm.query_dir,
        eval_radius_m=dm.eval_radius_m,
        train_radius_m=dm.train_radius_m,
        train_min_distance_m=dm.train_min_distance_m,
        spatial_nms=dm.spatial_nms,
        nms_group_size=dm.nms_group_size,
    )


def _read_folder(dm: PlaceDataModule, split: str) -> PlaceSplit:
    return load_folder_split(
        dm.root,
        split,
        dm.name,
        dm.eval_radius_m or 25.0,
        dm.train_radius_m or 10.0,
        spatial_nms=dm.spatial_nms,
        train_min_distance_m=dm.train_min_distance_m,
        coordinates=dm.coordinates,
    )


#: On-disk formats by ``data.layout``: (data module, split name) -> PlaceSplit. A new format is one reader here.
LAYOUTS: dict[str, Callable[[PlaceDataModule, str], PlaceSplit]] = {
    "pittsburgh": _read_mat_spec,  # NetVLAD dataset specs: Pittsburgh, Tokyo 24/7, Tokyo Time Machine, the city
    "folder": _read_folder,  # @east@north@ file names
}


def _distance_or_none(value: Any) -> bool:
    """Whether a radius setting is null or a distance > 0."""
    try:
        return value is None or float(value) > 0
    except (TypeError, ValueError):
        return False


#: The ``mining.*`` settings the data module hands to the batch sampler; the others go to HardNegativeMiner.
SAMPLER_MINING_SETTINGS = ("refresh_every_queries", "cache_dtype", "database_subset")


def check_mining_keys(mining: Mapping[str, Any]) -> None:
    """Every ``mining.*`` key is a setting of the sampler or of HardNegativeMiner: one added with ``+`` that is
    neither (a typo) is a ConfigError naming it and the closest setting, before any data work (HardNegativeMiner
    refused it with a TypeError traceback after the splits were read)."""
    import difflib
    import inspect

    known = [*SAMPLER_MINING_SETTINGS, *(p for p in inspect.signature(HardNegativeMiner).parameters if p != "split")]
    for key in mining:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean mining.{close[0]}? " if close else ""
            raise ConfigError(f"mining.{key}: no such mining setting; {hint}the settings are {', '.join(known)}")


class PlaceDataModule(L.LightningDataModule):
    """Train/val/test splits of one dataset and the offline-mined training tuples.

    Args:
        layout: ``pittsburgh`` (NetVLAD ``.mat`` split files: Pittsburgh, Tokyo 24/7, Tokyo Time Machine, the
            synthetic city) or ``folder`` (``@east@north@`` names).
        root: dataset folder.
        name: dataset name (``pitts30k``, ``pitts250k``, ``tokyo247``, ``tokyoTM``, ``city``).
        splits: which split names serve as train/val/test; None where the dataset has no such split (Tokyo 24/7
            has only a test split).
        split_file: the split's file under ``root/datasets/`` (``{name}`` and ``{split}`` filled in).
        db_dir / query_dir: database and query image folders, relative to ``root`` or absolute.
        spatial_nms: evaluate with spatial non-maximum suppression (one database image per place in the
            ranking); nms_group_size: consecutive database images forming one place (None: same position).
        image_size: (height, width) every image is resized to.
        batch_size: training tuples per step (each = query, positive, up to negatives_per_query negatives).
        eval_batch_size: images per step for validation, test and the mining cache.
        num_workers: DataLoader workers.
        persistent_workers: keep the workers of the training and evaluation loaders alive between epochs
            (``auto``: on CUDA machines, where re-spawning them each epoch idles the GPU; needs num_workers > 0).
        mining: keyword arguments of :class:`HardNegativeMiner` plus ``refresh_every_queries``.
        eval_radius_m / train_radius_m: override the split files' 25 m / 10 m.
        train_min_distance_m: training positives lie farther than this (Tokyo Time Machine's protocol: 1 m).
        coordinates: ``folder`` layout: ``utm`` (names ``@east@north@`` in metres) or ``latlon`` (``@lat@lon@`` in
            degrees, turned into local metres).
        seed: shuffling and negative sampling.
        prepare: optional callable run once in ``prepare_data`` (the synthetic city generates itself there).
        guidance: semantic guidance for de-attention (``source``, ``suppress``, ``mask_dir``, ``class_groups``,
            ``cache_dir``) or None; the targets are built once the model tells the feature grid.
    """

    def __init__(
        self,
        root: str | None,
        name: str,
        layout: str = "pittsburgh",
        splits: Mapping[str, str] | None = None,
        image_size: tuple[int, int] = (480, 640),
        batch_size: int = 4,
        eval_batch_size: int = 16,
        num_workers: int = 4,
        persistent_workers: bool | str = "auto",
        mining: Mapping[str, Any] | None = None,
        eval_radius_m: float | None = None,
        train_radius_m: float | None = None,
        train_min_distance_m: float = 0.0,
        coordinates: str = "utm",
        seed: int = 0,
        prepare: Callable[[], Any] | None = None,
        guidance: Mapping[str, Any] | None = None,
        split_file: str = "{name}_{split}.mat",
        db_dir: str = "",
        query_dir: str = "queries_real",
        spatial_nms: bool = False,
        nms_group_size: int | None = None,
        tag: str | None = None,
    ):
        super().__init__()
        del tag  # data.tag names the files derived from this data (read from the config by vpr.centroids)
        if layout not in LAYOUTS:
            raise ConfigError(f"data.layout={layout!r}: choose one of {sorted(LAYOUTS)}")
        self.root = root
        self.name = name
        self.layout = layout
        self.splits = {"train": "train", "val": "val", "test": "test", **dict(splits or {})}
        self.split_file = str(split_file)
        self.db_dir = str(db_dir or "")
        self.query_dir = str(query_dir or "")
        self.spatial_nms = bool(spatial_nms)
        if nms_group_size is not None:
            try:
                ok = int(nms_group_size) == float(nms_group_size) >= 1
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ConfigError(
                    f"data.nms_group_size={nms_group_size!r}: must be a whole number >= 1 (consecutive database "
                    "images forming one place), or null for images at the same position"
                )
        self.nms_group_size = None if nms_group_size is None else int(nms_group_size)
        self.image_size = tuple(int(s) for s in image_size)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.num_workers = loader_workers(num_workers)
        if self.num_workers < int(num_workers):
            log.info(
                "data.num_workers=%d: this machine gives %d CPUs to the run; using %d loader workers",
                int(num_workers),
                self.num_workers,
                self.num_workers,
            )
        if persistent_workers not in (True, False, "auto"):
            raise ConfigError(f"data.persistent_workers={persistent_workers!r}: choose auto, true or false")
        self.persistent_workers = persistent_workers
        self.mining = dict(mining or {})
        check_mining_keys(self.mining)
        cache_dtype = str(self.mining.get("cache_dtype") or "float32")
        if cache_dtype not in ("float32", "float16"):
            raise ConfigError(f"mining.cache_dtype={cache_dtype}: choose float32 or float16")
        self.cache_dtype = getattr(torch, cache_dtype)
        for key, radius in (("eval_radius_m", eval_radius_m), ("train_radius_m", train_radius_m)):
            if not _distance_or_none(radius):
                raise ConfigError(
                    f"data.{key}={radius!r}: must be a distance > 0 (metres), or null for the split file's own"
                )
        self.eval_radius_m = None if eval_radius_m is None else float(eval_radius_m)
        self.train_radius_m = None if train_radius_m is None else float(train_radius_m)
        self.train_min_distance_m = float(train_min_distance_m)
        self.coordinates = str(coordinates)
        if not self.train_min_distance_m >= 0:
            raise ConfigError(f"data.train_min_distance_m={train_min_distance_m}: must be a distance >= 0 (metres)")
        if mining is not None:  # training: the radii the settings give are compared now, before any data work
            own = self.mining.get("negative_radius_m")
            if not _distance_or_none(own):
                raise ConfigError(
                    f"mining.negative_radius_m={own!r}: must be a distance > 0 (metres); leave it out for "
                    "the evaluation radius (data.eval_radius_m, else the split file's posDistThr)"
                )
            negatives = float(own) if own is not None else self.eval_radius_m
            check_radii(negatives, self.train_radius_m, self.train_min_distance_m, own is not None)
        self.seed = int(seed)
        self._prepare = prepare
        self.transform = eval_transform(self.image_size)
        self.encoder: DatasetEncoder | None = None
        self.miner: HardNegativeMiner | None = None
        self._mining_rounds: tuple[int, list[MiningStats]] = (-1, [])  # (epoch, its rounds so far)
        self._loaded: dict[str, PlaceSplit] = {}
        self._pending_miner_state: dict | None = None
        self._pending_round: dict | None = None
        self._sampler: MinedBatchSampler | None = None
        self._cache_images: tuple[PlaceSplit, ImageDataset] | None = None  # (the training split, its images)
        self.guidance = dict(guidance) if guidance and guidance.get("source") else None
        self._label_source = None
        self.targets: GuidanceTargets | None = None

    # -- splits -----------------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Generate the data when the config says how (the synthetic city): a folder that cannot be made or
        written is one error naming data.root."""
        if self._prepare is None:
            return
        try:
            self._prepare()
        except OSError as e:
            where = f"{e.strerror}: {e.filename}" if e.filename else str(e)
            raise DataError(
                f"data.root={self.root}: the data cannot be written there ({where}); point data.root "
                "(or paths.data_dir, VPR_DATA_DIR) at a folder you can write"
            ) from None

    def load_split(self, role: str) -> PlaceSplit:
        """The split playing ``role`` (train/val/test), read once."""
        split = self.splits.get(role)
        if split is None:
            have = [r for r, s in self.splits.items() if s is not None]
            hint = (
                " It is an evaluation-only dataset: train on another (data=pittsburgh, data=tokyotm) and test on "
                "this one with test_sets=[...] or eval.py data=..."
                if have == ["test"]
                else ""
            )
            raise DataError(
                f"dataset {self.name} has no {role} split (data.splits.{role} is null; it has {have}).{hint}"
            )
        if split not in self._loaded:
            s = LAYOUTS[self.layout](self, split)
            log.info("loaded %s from %s", s.describe(), Path(str(self.root)).expanduser().resolve())
            self._loaded[split] = s
        return self._loaded[split]

    @property
    def train_split(self) -> PlaceSplit:
        return self.load_split("train")

    @property
    def val_split(self) -> PlaceSplit:
        return self.load_split("val")

    @property
    def test_split(self) -> PlaceSplit:
        return self.load_split("test")

    def setup(self, stage: str | None = None) -> None:
        if self._prepare is not None and not Path(str(self.root)).exists():
            self._prepare()  # e.g. eval.py on a city that was never generated
        if stage in (None, "fit"):
            self._build_miner()
            self.val_split  # noqa: B018 - fail early on a missing val split
        elif stage == "validate":
            self.val_split  # noqa: B018
        elif stage in ("test", "predict"):
            self.test_split  # noqa: B018

    def _build_miner(self) -> None:
        if self.miner is not None:
            return
        kwargs = {k: v for k, v in self.mining.items() if k not in SAMPLER_MINING_SETTINGS}
        self.miner = HardNegativeMiner(self.train_split, **kwargs)
        split = self.train_split
        within = (
            f"between {split.train_min_distance_m:g} and {split.train_radius_m:g} m"
            if split.train_min_distance_m > 0
            else f"within {split.train_radius_m:.1f} m"
        )
        log.info(
            "training queries: %d usable, %d dropped (no database image %s)",
            len(self.miner.trainable_queries),
            self.miner.dropped_queries,
            within,
        )
        if self._pending_miner_state is not None:
            self.miner.load_state_dict(self._pending_miner_state)
            self._pending_miner_state = None

    # -- semantic guidance ------------------------------------------------------------------------------------
    def label_source(self, download: bool = True):
        """The guidance's label source, built once (a segmentation network is loaded once per run). Without
        ``download`` (pictures, which are a bonus) torchvision's model is taken only from the torch cache."""
        if self._label_source is None:  # a network runs on the run's device (its own GPU under DDP)
            device = self.trainer.strategy.root_device if self.trainer is not None else None
            self._label_source = build_label_source(self.guidance, self.root, download=download, device=device)
        return self._label_source

    def set_feature_grid(self, grid: tuple[int, int]) -> None:
        """Called by the model once it knows its feature grid: builds the guidance targets (once)."""
        if self.guidance is None or (self.targets is not None and self.targets.grid == tuple(grid)):
            return
        g = self.guidance
        split = self.train_split
        source = self.label_source()
        trainer = self.trainer
        shard, combine, agree = (0, 1), None, None
        if trainer is not None and trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            # every rank computes its share of the images (called on all ranks, from on_fit_start)
            shard = (trainer.global_rank, trainer.world_size)
            combine = functools.partial(_sum_over_ranks, device=trainer.strategy.root_device)
            agree = _rank_zero_says
        self.targets = GuidanceTargets(
            source,
            g.get("suppress", ["person", "vehicle"]),
            split.image_paths,
            grid,
            g.get("cache_dir"),
            num_workers=self.num_workers,
            shard=shard,
            combine=combine,
            agree=agree,
        )
        schedule = (
            f" (x {g['weight_after']} from epoch {g['switch_epoch']})"
            if g.get("weight_after") is not None and g.get("switch_epoch") is not None
            else ""
        )
        log.info(
            "semantic guidance (guidance.source=%s): %s; suppressed: %s (class ids %s); %s loss x %s%s on the "
            "%dx%d feature grid",
            g["source"],
            source.describe(),
            ", ".join(self.targets.suppress),
            self.targets.suppressed_ids,
            g.get("loss", "mse"),
            g.get("weight"),
            schedule,
            grid[0],
            grid[1],
        )

    # -- mining cache -----------------------------------------------------------------------------------------
    def _encode_for_mining(
        self, query_ids: np.ndarray, db_index: np.ndarray | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.encoder is None:
            raise RuntimeError(
                "PlaceDataModule.encoder is not set: the OfflineMining callback (vpr.callbacks) sets it at fit start"
            )
        split = self.train_split
        if self._cache_images is None or self._cache_images[0] is not split:
            # One dataset of the whole training split (database, then queries) for every round: the encoder keeps
            # its loader's workers for it, and each round asks for its own items.
            self._cache_images = (split, ImageDataset([*split.db_paths, *split.q_paths], self.transform))
        db = np.arange(split.num_db) if db_index is None else np.asarray(db_index, dtype=np.int64)
        items = np.concatenate([db, split.num_db + np.asarray(query_ids, dtype=np.int64)])
        desc = self.encoder(
            self._cache_images[1], "mining cache", dtype=self.cache_dtype, indices=items, keep_workers=True
        )
        return desc[len(db) :], desc[: len(db)]

    def _record_stats(self, stats: MiningStats) -> None:
        # The sampler's epoch: Lightning starts the loader (and its first round) before the epoch begins, and
        # after a resume from an end-of-epoch checkpoint trainer.current_epoch still names the finished one.
        epoch = stats.epoch if stats.epoch >= 0 else (self.trainer.current_epoch if self.trainer is not None else 0)
        if epoch != self._mining_rounds[0]:
            self._mining_rounds = (epoch, [])
        self._mining_rounds[1].append(stats)

    def epoch_mining_stats(self, epoch: int) -> tuple[MiningStats, int] | None:
        """The mining rounds of ``epoch`` combined, and how many there were (None if none ran in this process:
        a run resumed after the epoch's last round)."""
        recorded, rounds = self._mining_rounds
        return (MiningStats.combine(rounds), len(rounds)) if recorded == epoch and rounds else None

    # -- loaders ----------------------------------------------------------------------------------------------
    def _on_cuda(self) -> bool:
        """Whether batches go to a CUDA device: the attached trainer's root device, else CUDA's presence."""
        if self.trainer is not None:
            return self.trainer.strategy.root_device.type == "cuda"
        return torch.cuda.is_available()

    def _loader_kwargs(self) -> dict[str, Any]:
        cuda = self._on_cuda()
        persistent = cuda if self.persistent_workers == "auto" else self.persistent_workers
        return {
            "num_workers": self.num_workers,
            "pin_memory": cuda,  # not with trainer=cpu on a GPU machine: no CUDA context for nothing
            "persistent_workers": bool(persistent) and self.num_workers > 0,
            "worker_init_fn": loader_worker_init(),
        }

    def train_dataloader(self) -> DataLoader:
        self._build_miner()
        trainer = self.trainer
        sampler = MinedBatchSampler(
            self.miner,
            self._encode_for_mining,
            batch_size=self.batch_size,
            refresh_every_queries=int(self.mining.get("refresh_every_queries", 1000)),
            seed=self.seed,
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
            on_round=self._record_stats,
            database_subset=self.mining.get("database_subset"),
        )
        if trainer is not None:
            # The epoch about to run. Lightning creates (and prefetches from) this loader before it calls
            # set_epoch; after a resume from an end-of-epoch checkpoint trainer.current_epoch still names the
            # finished epoch, so the first mining round would use its query order and seed.
            sampler.set_epoch(trainer.fit_loop.epoch_progress.current.processed)
            sampler.finished = nothing_left_to_train(trainer)
        if self._pending_round is not None:
            sampler.resume_from(self._pending_round)  # used only if that epoch is the one about to run
            self._pending_round = None
        self._sampler = sampler
        return DataLoader(
            TripletDataset(self.train_split, self.transform, self.targets),
            batch_sampler=sampler,
            collate_fn=collate_triplets,
            **self._loader_kwargs(),
        )

    def _eval_loader(self, split: PlaceSplit) -> DataLoader:
        """The split's images in order; under DDP this rank's shard (every world_size-th image, padded to equal
        length), since the strategy leaves samplers to the data module (the mined batch sampler shards itself).
        The module gathers the shards and puts every descriptor back at its index."""
        dataset = ImageDataset(split.image_paths, self.transform)
        trainer = self.trainer
        sampler = None
        if trainer is not None and trainer.world_size > 1:
            sampler = DistributedSampler(
                dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
            )
        return DataLoader(
            dataset,
            batch_size=self.eval_batch_size,
            shuffle=False,
            sampler=sampler,
            **self._loader_kwargs(),
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_split)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_split)

    # -- checkpoint state: the remembered negatives and the position within the epoch --------------------------
    def state_dict(self) -> dict[str, Any]:
        if self.miner is None:
            return {}
        state: dict[str, Any] = {"miner": self.miner.state_dict()}
        trainer = self.trainer
        if self._sampler is not None and trainer is not None and trainer.state.fn == "fit":
            # Batches trained so far in this epoch (a checkpoint written after a training step counts that step).
            done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
            position = self._sampler.position_state(done)
            if position is not None:
                state["round"] = position
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_round = state_dict.get("round")
        if "miner" not in state_dict:
            return
        if self.miner is not None:
            self.miner.load_state_dict(state_dict["miner"])
        else:
            self._pending_miner_state = state_dict["miner"]


def nothing_left_to_train(trainer: L.Trainer) -> bool:
    """Whether the fit Lightning is starting has no epoch to train: a run resumed from a checkpoint that had
    trained ``max_epochs`` (or ``max_steps``), or that early stopping had ended. Lightning finds it out only after
    it has built the training loader and taken its first batch (a mining round: a cache pass over the database);
    a run that early stopping ended would even train one more epoch, since the stop itself is not in the
    checkpoint, only the callback's reason. Said here, from the restored loops and callbacks, before any of it."""
    loop = trainer.fit_loop
    epochs_done, steps_done = loop.epoch_progress.current.processed, loop.epoch_loop.global_step
    if loop.max_epochs not in (None, -1) and epochs_done >= loop.max_epochs:
        return True
    if loop.max_steps not in (None, -1) and steps_done >= loop.max_steps:
        return True
    stopped = (
        early_stop_recorded(cb.state_dict())
        for cb in trainer.callbacks
        if isinstance(cb, L.pytorch.callbacks.EarlyStopping)
    )
    if trainer.ckpt_path is None or not any(stopped):
        return False
    if (loop.min_epochs and epochs_done < loop.min_epochs) or (loop.min_steps and steps_done < loop.min_steps):
        return False  # Lightning trains on to the minimum, early stopping or not
    trainer.should_stop = True  # as early stopping had set it in the resumed run
    return True


def early_stop_recorded(state: Any) -> bool:
    """Whether an early stopping callback's state (its ``state_dict()``, as a checkpoint keeps it) says it had ended
    the training: a stopping reason other than NOT_STOPPED (0; Lightning >= 2.5.5), else a stopped epoch."""
    if not isinstance(state, dict):
        return False
    reason = state.get("stopping_reason")
    return int(reason) != 0 if reason is not None else int(state.get("stopped_epoch") or 0) > 0


def _sum_over_ranks(table: np.ndarray, failure: BaseException | None, device: torch.device) -> np.ndarray:
    """The element-wise sum of every rank's ``table`` (on ``device``: NCCL reduces only GPU tensors). When a rank's
    share failed (``failure``), every rank raises: that rank its own error, the others a DataError naming it, so no
    rank waits in the sum for one that stopped."""
    said = [None] * dist.get_world_size()
    dist.all_gather_object(said, None if failure is None else user_message(failure))
    failed = [(rank, message) for rank, message in enumerate(said) if message is not None]
    if failure is not None:
        raise failure
    if failed:
        rank, message = failed[0]
        raise DataError(f"guidance targets of DDP process {rank}: {message}")
    t = torch.from_numpy(table).to(device)
    dist.all_reduce(t)
    return t.cpu().numpy()


def _rank_zero_says(value: bool) -> bool:
    """Rank 0's ``value``, on every rank."""
    said = [value]
    dist.broadcast_object_list(said, src=0)
    return bool(said[0])
