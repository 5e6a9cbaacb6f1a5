"""The Lightning callback that wires offline hard-negative mining between the model and the data, and the
checkpoint writer that never leaves half a file.

The model and the data module never call each other: this callback hands the data module the model's
encoder (descriptors of an image set, for the mining cache) and, when semantic guidance trains an attention
mask, the model's feature grid (the size of the guidance targets); after every epoch it logs the last mining
round's statistics. build.py adds it to every training run.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO

from vpr.data.datamodule import PlaceDataModule
from vpr.errors import ConfigError, DataError, user_message
from vpr.io import atomic_path
from vpr.models.module import PlaceRecognitionModule
from vpr.progress import LOG_INTERVAL_S, LineWriter

log = logging.getLogger(__name__)


class OfflineMining(L.Callback):
    """Connects :class:`PlaceRecognitionModule` and :class:`PlaceDataModule` for offline mining."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        if not isinstance(dm, PlaceDataModule) or not isinstance(pl_module, PlaceRecognitionModule):
            raise ConfigError(
                "offline mining trains a PlaceRecognitionModule on a PlaceDataModule (data=... configs build one); "
                f"got {type(pl_module).__name__} and {type(dm).__name__}"
            )
        dm.encoder = pl_module.encode_dataset
        if pl_module.aux_weight > 0:
            dm.set_feature_grid(pl_module.feature_grid(dm.image_size))
        elif getattr(pl_module.attention, "supervised_mask", False):
            log.warning(
                "%s trains without semantic guidance (guidance=none): its mask has no target and no auxiliary loss",
                type(pl_module.attention).__name__,
            )

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.release_encode_workers()  # the mining cache's loader workers, kept between rounds

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        pl_module.release_encode_workers()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        log.info("epoch %d trained: global step %d", trainer.current_epoch, trainer.global_step)
        epoch = trainer.datamodule.epoch_mining_stats(trainer.current_epoch)
        if epoch is None:
            return
        stats, rounds = epoch
        pl_module.log_dict(
            {
                "mining/rounds": float(rounds),
                "mining/skipped_queries": float(stats.skipped),
                "mining/negatives_per_query": stats.mean_negatives,
                "mining/cache_seconds": stats.encode_seconds,
                "mining/positive_distance": stats.mean_positive_distance,
                "mining/hardest_negative_distance": stats.mean_hardest_negative_distance,
            },
            # The epoch's rounds together: sums of counts and times, means weighted by mined queries. Every rank
            # mined the same tuples: the mean over ranks is the value (and Lightning asks for it).
            sync_dist=True,
        )


class CheckpointOnStop(L.Callback):
    """A run stopped by SIGTERM (a scheduler's preemption or time limit, ``kill``) or Ctrl-C while it trains
    writes ``last.ckpt`` where it stopped, between two steps: ``ckpt_path=last`` continues from there exactly as a
    step checkpoint would (the mining round being trained is part of it). A stop during validation keeps the
    checkpoint of the epoch before."""

    def __init__(self, dirpath: str | os.PathLike) -> None:
        self.dirpath = os.fspath(dirpath)
        self._restored = False  # the training state (a resumed run's) is in place: saving now loses nothing

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A stop from here to on_train_start (guidance targets, Lightning's restore) would save the state before
        # the resumed checkpoint's was restored: last.ckpt would go back to epoch 0.
        self._restored = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restored = True

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        from lightning.pytorch.trainer.states import RunningStage
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if not isinstance(exception, (SIGTERMException, KeyboardInterrupt)):
            return
        if trainer.state.stage != RunningStage.TRAINING or trainer.sanity_checking or not self._restored:
            return
        path = os.path.join(self.dirpath, "last.ckpt")
        trainer.save_checkpoint(path)
        if trainer.is_global_zero:
            log.warning(
                "%s at epoch %d, step %d: saved %s; continue with ckpt_path=last",
                "SIGTERM" if isinstance(exception, SIGTERMException) else "Ctrl-C",
                trainer.current_epoch,
                trainer.global_step,
                path,
            )


class SigtermWithoutCollectives(L.Callback):
    """:func:`sigterm_without_collectives` for every loop (Lightning installs its SIGTERM handler when a loop starts,
    just before these hooks); with any callbacks configured.

    Under DDP the evaluation loops (validation, test) stop on an agreed signal: Lightning's evaluation loop stops a
    process after any batch but the last when its own flag is set, with no collective, so a process group's
    SIGTERM that reached one process during its last batch (or while it waited in the gather of the descriptors)
    left it waiting for the one that stopped: a gloo "Connection closed by peer" traceback and exit status 1, not
    the SIGTERM line. While an evaluation loop runs, the handler only notes the signal, and after every batch (and
    at the loop's end) the processes take the maximum of their notes before Lightning's check, so all of them stop
    after the same batch. (Every process runs as many evaluation batches: the samplers pad the shards.)"""

    def __init__(self) -> None:
        self.agreeing = False  # an evaluation loop under DDP runs: the handler notes, the batches' ends agree
        self.noted = False  # a SIGTERM this process received while agreeing, not yet agreed on

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sigterm_without_collectives(trainer, self)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_agreeing(trainer)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_agreeing(trainer)

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self._agree(trainer)

    def on_test_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self._agree(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_agreeing(trainer)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_agreeing(trainer)

    def _start_agreeing(self, trainer: L.Trainer) -> None:
        self.noted = False
        self.agreeing = sigterm_without_collectives(trainer, self) and _distributed(trainer)

    def _stop_agreeing(self, trainer: L.Trainer) -> None:
        if self.agreeing:
            self.agreeing = False  # from here a signal sets Lightning's flag again: none is left unagreed
            self._agree(trainer, force=True)

    def _agree(self, trainer: L.Trainer, force: bool = False) -> None:
        """Every process's flag becomes the maximum of the processes' flags and notes (one all_reduce)."""
        if not (self.agreeing or force):
            return
        connector = trainer._signal_connector
        mine = self.noted or bool(connector.received_sigterm)
        flag = torch.tensor([1 if mine else 0], device=trainer.strategy.root_device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if int(flag.item()):
            connector.received_sigterm = True  # every process stops: the note is spent
            self.noted = False
        # Otherwise the note was not set when read, and one set since (a signal landing meanwhile) is kept for the
        # next agreement: clearing it here could drop a signal that arrived between the read and the clearing.


def _distributed(trainer: L.Trainer) -> bool:
    return trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()


def stop_if_signalled(trainer: L.Trainer) -> None:
    """After ``trainer.fit/test`` returned: a SIGTERM that came while Lightning's handler was installed but after its
    loop's last check (a test's epoch end, the recall computation) only set its flag; stop now, as it would have.
    (The next ``trainer.test`` would clear the flag.)"""
    if getattr(trainer, "received_sigterm", False):
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        raise SIGTERMException(143)


def sigterm_without_collectives(trainer: L.Trainer, notes: SigtermWithoutCollectives | None = None) -> bool:
    """Replace, in the SIGTERM handler Lightning installed for the running loop, its notifier with one that does
    what it does less its ``dist.broadcast``: a collective inside a signal handler runs wherever the signal lands,
    and a process group's SIGTERM reaching a DDP process while another waits in the mining cache's all_gather
    deadlocked both (the stop itself is agreed on at the next training step, where Lightning broadcasts rank 0's
    flag; in an evaluation loop, at the end of each batch: ``notes``). Returns whether it is in place (False: not
    Lightning's handler as this version builds it)."""
    handlers = getattr(signal.getsignal(signal.SIGTERM), "signal_handlers", None)
    connector = getattr(trainer, "_signal_connector", None)
    notifier = getattr(type(connector), "_sigterm_notifier_fn", None)
    if not isinstance(handlers, list) or notifier is None:
        return False
    for i, handler in enumerate(handlers):
        lightnings = getattr(handler, "__func__", None) is notifier and getattr(handler, "__self__", None) is connector
        ours = getattr(handler, "func", None) is _note_sigterm and handler.args[0] is connector  # an earlier hook's
        if lightnings or ours:
            handlers[i] = functools.partial(_note_sigterm, connector, notes)
            return True
    return False


def _note_sigterm(connector: Any, notes: SigtermWithoutCollectives | None, signum: int, frame: Any) -> None:
    """Lightning's SIGTERM notifier without its broadcast: pass the signal on to the DDP processes this one started
    (once), and set the flag its loops stop on; while the processes agree on it (``notes.agreeing``), only note it
    for their next agreement."""
    log.info("received SIGTERM (%d)", signum)
    if not connector.received_sigterm and not (notes is not None and notes.noted):
        launcher = connector.trainer.strategy.launcher
        if launcher is not None:
            launcher.kill(signum)
    if notes is not None and notes.agreeing:
        notes.noted = True
    else:
        connector.received_sigterm = True


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file beside the target, flushed to disk, then renamed over it.

    A kill during a save leaves the previous checkpoint intact (and at worst a hidden ``.*.tmp`` file in the
    checkpoint folder, which the run that resumes it removes; never a truncated ``last.ckpt``).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        with atomic_path(path, suffix=".tmp") as tmp:  # synced to disk before the rename
            torch.save(checkpoint, tmp)


#: Where a checkpoint keeps the W&B run id, so that a resumed training continues the same run.
WANDB_ID_KEY = "wandb_run_id"
#: Where it keeps that run's W&B group (None: none), so that a resumed run started from another sweep stays in it.
WANDB_GROUP_KEY = "wandb_run_group"
#: Where it keeps the W&B entity the run lives under (None: not known, an offline run started without
#: ``logger.wandb.entity``), so that a resumed run continues it there, not under the default entity of the resuming
#: command.
WANDB_ENTITY_KEY = "wandb_run_entity"
#: Where it keeps the run's W&B name (``baseline-seed1-job0``), so that a resumed run keeps it wherever it is resumed
#: (as a single run, or as another job of another sweep).
WANDB_NAME_KEY = "wandb_run_name"


def live_wandb_entity(run: Any) -> str | None:
    """The entity of a started online W&B run (the account's default one when the run was started without
    ``entity``: W&B answers with it); None for an offline or disabled run, which has none, or no run."""
    try:
        if run is None or getattr(run, "offline", True) is not False or getattr(run, "disabled", False) is True:
            return None
        entity = getattr(run, "entity", None)
    except Exception:  # noqa: BLE001 - a run W&B no longer answers about: the settings' entity stands
        return None
    return entity if isinstance(entity, str) and entity else None


def live_wandb_name(run: Any) -> str | None:
    """The name of a started W&B run (a rename during the run included); None without one."""
    try:
        name = getattr(run, "name", None) if run is not None else None
    except Exception:  # noqa: BLE001 - a run W&B no longer answers about: the settings' name stands
        return None
    return name if isinstance(name, str) and name else None


class RecordRunIds(L.Callback):
    """Stores the W&B run id, group, entity and name in every checkpoint."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        for lg in trainer.loggers:
            if type(lg).__name__ == "WandbLogger" and lg.version:
                checkpoint[WANDB_ID_KEY] = str(lg.version)
                started = getattr(lg, "_wandb_init", {})  # what the run was started with
                group = started.get("group")
                checkpoint[WANDB_GROUP_KEY] = str(group) if group else None
                # the live run's, not the settings': a run started without an entity lives under the account's
                # default one, which a resume by another account or machine would not find on its own
                entity = live_wandb_entity(getattr(lg, "_experiment", None)) or started.get("entity")
                checkpoint[WANDB_ENTITY_KEY] = str(entity) if entity else None
                name = live_wandb_name(getattr(lg, "_experiment", None)) or started.get("name")
                checkpoint[WANDB_NAME_KEY] = str(name) if name else None


class LogFileProgressBar(TQDMProgressBar):
    """Lightning's bars for output that is not a terminal (CI, SLURM logs, ``| tee``): redrawn at most every
    ``interval_s`` seconds and at the end of each loop, instead of at every step, each redraw a line of its own
    (:class:`vpr.progress.LineWriter`), so the log lines between them start lines too."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.interval_s = float(interval_s)
        self._clock = clock
        self._last_draw = -float("inf")

    @staticmethod
    def _in_lines(make: Callable[[], Any]) -> Any:
        # Lightning's bars write to the sys.stdout of the moment they are made
        with contextlib.redirect_stdout(LineWriter(sys.stdout)):
            return make()

    def init_sanity_tqdm(self) -> Any:
        return self._in_lines(super().init_sanity_tqdm)

    def init_train_tqdm(self) -> Any:
        return self._in_lines(super().init_train_tqdm)

    def init_validation_tqdm(self) -> Any:
        return self._in_lines(super().init_validation_tqdm)

    def init_test_tqdm(self) -> Any:
        return self._in_lines(super().init_test_tqdm)

    def init_predict_tqdm(self) -> Any:
        return self._in_lines(super().init_predict_tqdm)

    def _should_update(self, current: int, total: int) -> bool:
        if not self.is_enabled:
            return False
        now = self._clock()
        if current == total or current <= 1 or now - self._last_draw >= self.interval_s:
            self._last_draw = now
            return True
        return False


class MaskQuality(L.Callback):
    """How well a supervised attention mask (de-attention) separates the suppressed classes from the static scene
    (vpr/eval/masks.py), measured on up to ``images`` evenly spread images of the split after every validation
    (logged as ``mask/auc``, ``mask/on_suppressed``, ``mask/on_static``) and after the test (kept in the test
    results, hence in results.json). Nothing happens without a supervised mask or without semantic guidance."""

    def __init__(self, images: int = 64):
        self.images = int(images)
        self._targets: dict[tuple[str, tuple[int, int]], np.ndarray] = {}
        self._said_constant = False  # a mask that does not vary is said once per run
        self._no_targets: set[str] = set()  # splits whose images have no label maps (mask_dir covers training)

    @staticmethod
    def applies(trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
        dm = trainer.datamodule
        return (
            isinstance(dm, PlaceDataModule)
            and dm.guidance is not None
            and bool(getattr(getattr(pl_module, "attention", None), "supervised_mask", False))
        )

    def measure_if_labelled(
        self, pl_module: PlaceRecognitionModule, dm: PlaceDataModule, split
    ) -> dict[str, float] | None:
        """:meth:`measure`, or None (said once per split) where the split's images have no labels: label maps under
        ``guidance.mask_dir`` need only cover the training images, and this measure is a bonus."""
        key = f"{split.dataset}/{split.split}"
        if key in self._no_targets:
            return None
        try:
            return self.measure(pl_module, dm, split)
        except DataError as e:
            self._no_targets.add(key)
            log.warning("mask quality on %s not measured: %s", key, user_message(e))
            return None

    @torch.no_grad()
    def measure(self, pl_module: PlaceRecognitionModule, dm: PlaceDataModule, split) -> dict[str, float]:
        from vpr.data.dataset import load_image
        from vpr.data.guidance import compute_targets
        from vpr.eval.masks import mask_quality

        paths = list(split.image_paths)
        chosen = [
            paths[i] for i in np.linspace(0, len(paths) - 1, num=min(self.images, len(paths))).round().astype(int)
        ]
        g = dm.guidance
        source = dm.label_source()
        suppressed = sorted({i for group in g.get("suppress", ["person", "vehicle"]) for i in source.group_ids(group)})
        was_training = pl_module.training
        pl_module.eval()
        masks, targets = [], []
        for start in range(0, len(chosen), dm.eval_batch_size):
            batch = chosen[start : start + dm.eval_batch_size]
            x = torch.stack([dm.transform(load_image(p)) for p in batch]).to(pl_module.device)
            _, mask = pl_module.describe(x)
            grid = tuple(int(s) for s in mask.shape[-2:])
            masks.append(mask[:, 0].float().cpu().numpy())
            missing = [p for p in batch if (str(p), grid) not in self._targets]
            for p, target in zip(missing, compute_targets(source, missing, suppressed, grid, desc="mask targets")):
                self._targets[(str(p), grid)] = target
            targets.extend(self._targets[(str(p), grid)] for p in batch)
        pl_module.train(was_training)
        masks = np.concatenate(masks)
        if float(np.ptp(masks)) == 0.0 and not self._said_constant:
            self._said_constant = True
            log.warning(
                "the attention mask is the same number (%.4g) on every cell of every image: no gradient "
                "reaches its layers (a ReLU dead on every input?), so the mask and its auxiliary loss learn "
                "nothing; try another seed, a lower learning rate, or check the backbone's features",
                float(masks.flat[0]),
            )
        return mask_quality(masks, np.stack(targets))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.applies(trainer, pl_module):
            return
        # Every DDP process measures the same images with the same weights, so the values agree and sync_dist
        # (which Lightning asks for at epoch level) only averages equal numbers.
        q = self.measure_if_labelled(pl_module, trainer.datamodule, trainer.datamodule.val_split)
        if q is None:
            return
        pl_module.log_dict(
            {
                "mask/auc": q["auc"],
                "mask/on_suppressed": q["mask_on_suppressed"],
                "mask/on_static": q["mask_on_static"],
            },
            sync_dist=True,
        )
        log.info(
            "mask on the validation images: AUC %.3f, mean %.3f on suppressed classes, %.3f on the static scene",
            q["auc"],
            q["mask_on_suppressed"],
            q["mask_on_static"],
        )

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not self.applies(trainer, pl_module) or "test" not in pl_module.results:
            return
        q = self.measure_if_labelled(pl_module, trainer.datamodule, trainer.datamodule.test_split)
        if q is not None:
            pl_module.results["test"]["mask"] = q
