"""The LightningModule: backbone -> attention slot -> head, trained on offline-mined tuples, scored by Recall@N.

It never imports the data package, nor does the data package import it: the OfflineMining callback
(vpr/callbacks.py) hands the data module this module's encoder (``encode_dataset``) for the mining cache and
its feature grid for semantic guidance. Evaluation reads the ground truth of the data module's ``val_split`` /
``test_split``.
"""

from __future__ import annotations

import logging
import numbers
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from vpr.data.transforms import normalise_pixels, pixel_statistics
from vpr.devices import loader_worker_init
from vpr.errors import ConfigError
from vpr.eval.exports import pair_distances
from vpr.eval.ranking import rank_split
from vpr.eval.recall import recall_at_n
from vpr.models.attention.base import AttentionOutput
from vpr.models.attention.deattention import deattention_loss
from vpr.progress import progress

log = logging.getLogger(__name__)


def _attention_output(attention: nn.Module, out: Any) -> AttentionOutput:
    """``out`` of ``attention``, refused with the fix when it is not an AttentionOutput."""
    if not isinstance(out, AttentionOutput):
        raise ConfigError(
            f"attention ({_name(attention)}) returned {type(out).__name__}: an "
            "attention module returns vpr.models.attention.base.AttentionOutput(features, weights, mask), weights "
            "and mask may be None (README, Extending)"
        )
    return out


def _name(component: nn.Module) -> str:
    return f"{type(component).__module__}.{type(component).__name__}"


def _shape(value: Any) -> str:
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


def _check_attention_shapes(attention: nn.Module, out: AttentionOutput, batch: int) -> None:
    """The features a (B, C, h, w) tensor and the weights None or (B, 1, h, w): what every head takes."""
    features, weights = out.features, out.weights
    if not isinstance(features, torch.Tensor) or features.dim() != 4 or len(features) != batch:
        raise ConfigError(
            f"attention ({_name(attention)}) returned features {_shape(features)} for a batch of {batch} feature "
            "maps: features are a (B, C, h, w) tensor (README, Extending)"
        )
    b, _, h, w = features.shape
    if weights is not None and (not isinstance(weights, torch.Tensor) or tuple(weights.shape) != (b, 1, h, w)):
        raise ConfigError(
            f"attention ({_name(attention)}) returned weights {_shape(weights)} for features "
            f"{tuple(features.shape)}: weights are one per location, (B, 1, h, w) = {(b, 1, h, w)}, or None "
            "(README, Extending)"
        )


def _check_head_output(head: nn.Module, att: AttentionOutput, batch: int) -> torch.Tensor:
    """The head has an integer ``out_dim`` and turns the attention's output into (B, out_dim) descriptors."""
    out_dim = getattr(head, "out_dim", None)
    if isinstance(out_dim, bool) or not isinstance(out_dim, numbers.Integral) or out_dim < 1:  # numpy's ints too
        raise ConfigError(
            f"head ({_name(head)}) has out_dim={out_dim!r}: a head has an attribute out_dim, the length of its "
            "descriptor, a whole number >= 1 (README, Extending)"
        )
    try:
        out = head(att.features, att.weights)
    except (ValueError, RuntimeError) as e:
        weights = "None" if att.weights is None else _shape(att.weights)
        raise ConfigError(
            f"head ({_name(head)}) failed on the attention's output (features {_shape(att.features)}, weights "
            f"{weights}): {e}"
        ) from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (batch, out_dim):
        raise ConfigError(
            f"head ({_name(head)}) returned {_shape(out)} for a batch of {batch}: a head returns (B, out_dim) = "
            f"{(batch, out_dim)} descriptors (README, Extending)"
        )
    return out


def _check_loss_output(loss: nn.Module, descriptors: torch.Tensor) -> None:
    """The loss of tuples of ``descriptors`` (B, D) is one number: each query's positive is the next query, each
    query has one negative (the query itself)."""
    b = len(descriptors)
    out = loss(descriptors, descriptors.roll(1, 0), descriptors, torch.arange(b, device=descriptors.device))
    if not isinstance(out, torch.Tensor) or out.numel() != 1:
        raise ConfigError(
            f"loss ({_name(loss)}) returned {_shape(out)} for {b} tuples: a loss returns one number, the tuples' "
            "loss as a scalar tensor (README, Extending)"
        )


#: torch.compile's modes (``model.compile=<mode>``).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _number(value: Any) -> float:
    """``value`` as a float; NaN when it is not a number (NaN fails every comparison)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def check_model_switches(channels_last: Any, compile: Any) -> None:
    """``model.channels_last`` (auto, true or false) and ``model.compile`` (false, true or a torch.compile mode);
    anything else is a ConfigError naming the setting."""
    if channels_last not in (True, False, "auto"):
        raise ConfigError(f"model.channels_last={channels_last!r}: choose auto, true or false")
    if compile not in (True, False, *COMPILE_MODES):
        raise ConfigError(
            f"model.compile={compile!r}: choose false, true or a torch.compile mode ({', '.join(COMPILE_MODES)})"
        )


def checked_lr_multipliers(lr_multipliers: Mapping[str, float] | None) -> dict[str, float]:
    """Each component's factor on the optimizer's lr, 1.0 where not given; a component other than backbone,
    attention and head, or a factor that is not a number >= 0, is a ConfigError."""
    factors = {"backbone": 1.0, "attention": 1.0, "head": 1.0, **dict(lr_multipliers or {})}
    for name, factor in factors.items():
        if name not in ("backbone", "attention", "head"):
            raise ConfigError(
                f"model.lr_multipliers.{name}: no such component; the factors are for backbone, attention, head"
            )
        if not _number(factor) >= 0:
            raise ConfigError(
                f"model.lr_multipliers.{name}={factor!r}: must be a number >= 0 (the component's factor on "
                "optimizer.lr; 0 leaves it untrained)"
            )
    return factors


def _check_guidance_weights(weight: Any, weight_after: Any, switch_epoch: Any) -> None:
    """The weights of the mask's auxiliary loss are numbers >= 0; ``weight_after`` and ``switch_epoch`` (a whole
    number >= 0) come together or not at all. Anything else is a ConfigError naming the guidance settings."""
    if not _number(weight) >= 0 or weight_after is not None and not _number(weight_after) >= 0:
        raise ConfigError(
            f"guidance.weight={weight!r}, guidance.weight_after={weight_after!r}: the weights of "
            "the mask's auxiliary loss must be numbers >= 0"
        )
    if (weight_after is None) != (switch_epoch is None):
        raise ConfigError(
            f"guidance.weight_after={weight_after!r}, guidance.switch_epoch={switch_epoch!r}: give "
            "both (weight_after replaces guidance.weight from epoch switch_epoch on), or neither"
        )
    epoch = _number(switch_epoch)
    if switch_epoch is not None and not (epoch >= 0 and epoch.is_integer()):
        raise ConfigError(
            f"guidance.switch_epoch={switch_epoch!r}: must be a whole number >= 0 (the epoch from which "
            "guidance.weight_after replaces guidance.weight)"
        )


class PlaceRecognitionModule(L.LightningModule):
    """VPR model and its training/evaluation logic.

    Args:
        backbone: image (B, 3, H, W) -> feature map (B, C, h, w); attribute ``out_channels``.
        attention: feature map -> ``AttentionOutput(features, weights, mask)``.
        head: (features, weights) -> (B, D) L2-normalised descriptor; attribute ``out_dim``.
        loss: (query, positive, negatives, neg_to_query) -> scalar.
        optimizer: partial optimizer (``torch.optim.SGD`` with lr, momentum, weight decay) taking param groups.
        scheduler: partial LR scheduler (StepLR), stepped once per epoch after the optimizer, or None.
        lr_multipliers: per component (``backbone``, ``attention``, ``head``) factor on the optimizer's lr
            (e.g. 10 for the CRN layers).
        recall_at: the N of Recall@N.
        freeze_batchnorm: keep every BatchNorm of the backbone in eval mode, so that the training forward pass
            computes the same descriptor as the cache pass (eval mode).
        encode_batch_size / encode_workers: loader settings for the mining cache pass.
        run_config: the composed configuration, stored in every checkpoint so that ``eval.py`` can rebuild it.
        aux_loss: ``mse`` or ``bce`` between the attention mask and the semantic guidance target.
        aux_weight: its weight (0: no auxiliary loss); ``aux_weight_after`` replaces it from epoch
            ``aux_switch_epoch`` on (the paper's 0.1 for 4 epochs, then 0.001).
        channels_last: ``auto`` (on CUDA devices), True or False: weights and images in the channels-last memory
            format, which tensor-core convolutions prefer. The numbers are the same as without.
        compile: False, True (torch.compile's default mode) or a mode name (``reduce-overhead``,
            ``max-autotune``, ...): compile the backbone, the attention and the head in place once the module is
            on its device. State-dict keys stay the same, so checkpoints load either way.
        compile_backend: torch.compile's backend (``inductor``; ``aot_eager`` compiles quickly, for debugging).
    """

    def __init__(
        self,
        backbone: nn.Module,
        attention: nn.Module,
        head: nn.Module,
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        lr_multipliers: Mapping[str, float] | None = None,
        recall_at: Sequence[int] = (1, 5, 10, 20),
        freeze_batchnorm: bool = False,
        encode_batch_size: int = 16,
        encode_workers: int = 0,
        run_config: dict | None = None,
        aux_loss: str = "mse",
        aux_weight: float = 0.0,
        aux_weight_after: float | None = None,
        aux_switch_epoch: int | None = None,
        channels_last: bool | str = "auto",
        compile: bool | str = False,
        compile_backend: str = "inductor",
    ):
        super().__init__()
        check_model_switches(channels_last, compile)
        self.channels_last_setting = channels_last
        self.compile_mode = compile
        self.compile_backend = str(compile_backend)
        self._compiled = False
        self.backbone = backbone
        self.attention = attention
        self.head = head
        self.loss = loss
        # Pixel normalisation on this module's device (describe); not in the state dict: checkpoints hold the network.
        mean, std = pixel_statistics()
        self.register_buffer("_pixel_mean", mean, persistent=False)
        self.register_buffer("_pixel_std", std, persistent=False)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.lr_multipliers = checked_lr_multipliers(lr_multipliers)
        self.recall_at = tuple(int(n) for n in recall_at)
        self.freeze_batchnorm = freeze_batchnorm
        self.encode_batch_size = int(encode_batch_size)
        self.encode_workers = int(encode_workers)
        self._kept_loader: DataLoader | None = None  # the mining cache's loader, its workers kept between rounds
        self.run_config = run_config
        if aux_loss not in ("mse", "bce"):
            raise ConfigError(f"guidance.loss={aux_loss!r}: choose mse or bce")
        self.aux_loss = aux_loss
        if aux_weight:  # the attention mask is supervised: its guidance settings are used
            _check_guidance_weights(aux_weight, aux_weight_after, aux_switch_epoch)
        self.aux_weight = float(aux_weight)
        self.aux_weight_after = aux_weight_after
        self.aux_switch_epoch = aux_switch_epoch
        self.results: dict[str, dict] = {}
        # The loggers' name of a test's recalls, <prefix>/R@N: test for the run's own test split; another test set
        # logs under its own (test_<label>, run_test_sets), so that it does not overwrite test/R@N.
        self.test_log_prefix = "test"
        self.predictions: dict[str, np.ndarray] = {}  # stage -> (num_q, max N) retrieved database indices
        self._said_recall_sizes: set[str] = set()  # splits whose database is smaller than an N (said once)
        self.prediction_distances: dict[str, np.ndarray] = {}  # "test" -> L2 distances of those (num_q, max N)
        # Applied to the evaluation descriptors (a (N, D) tensor on their device) before ranking: PCA-whitening.
        self.descriptor_transform: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._eval_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._epoch_start = 0.0
        # Where an epoch's time goes (its log line): tuples trained, seconds of validation in it.
        self._tuples_trained = 0
        self._validation_start = 0.0
        self._validation_seconds = 0.0

    # -- the descriptor ---------------------------------------------------------------------------------------
    @property
    def channels_last(self) -> bool:
        if self.channels_last_setting == "auto":
            return self.device.type == "cuda"
        return bool(self.channels_last_setting)

    def apply_memory_format(self) -> None:
        """Weights to channels-last when it is on (once the module is on its device); parameters stay the same
        objects, so optimizers keep them. Then ``model.compile``, once: each of backbone, attention and head is
        compiled in place (``nn.Module.compile``), which keeps parameter names and objects."""
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        if self.compile_mode is not False and not self._compiled:
            mode = None if self.compile_mode in (True, "default") else str(self.compile_mode)
            for part in (self.backbone, self.attention, self.head):
                part.compile(mode=mode, backend=self.compile_backend)
            self._compiled = True
            log.info(
                "model.compile: backbone, attention and head compiled (mode %s, backend %s); the first steps "
                "include the compilation",
                mode or "default",
                self.compile_backend,
            )

    def on_fit_start(self) -> None:
        self.apply_memory_format()

    def on_validation_start(self) -> None:
        self.apply_memory_format()
        self._validation_start = time.perf_counter()

    def on_validation_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._validation_seconds += time.perf_counter() - self._validation_start

    def on_test_start(self) -> None:
        self.apply_memory_format()

    def describe(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """images: (B, 3, H, W), uint8 pixels as the loaders give them (normalised here, on this module's device)
        or floats already normalised -> (descriptors (B, out_dim), spatial mask (B, 1, h, w) or None)."""
        images = normalise_pixels(images, self._pixel_mean, self._pixel_std, channels_last=self.channels_last)
        features = self.backbone(images)
        att = _attention_output(self.attention, self.attention(features))
        return self.head(att.features, att.weights), att.mask

    @torch.no_grad()
    def check_components(self, image_size: Sequence[int]) -> None:
        """One forward of the attention module, the head and the loss on the feature grid of ``image_size`` (eval
        mode, a batch of two zero maps): a module that returns something else than AttentionOutput, weights of
        another shape than (B, 1, h, w), a head without ``out_dim`` or whose descriptors are not (B, out_dim), or a
        loss that is not a single number is said now, not at the first cache pass or training step."""
        grid = self.feature_grid(image_size)
        channels = getattr(self.backbone, "out_channels", None)
        if channels is None:
            return
        modules = (self.attention, self.head)
        was_training = [m.training for m in modules]
        for m in modules:
            m.eval()
        try:
            x = torch.zeros(2, int(channels), *grid, device=self.device)
            att = _attention_output(self.attention, self.attention(x))
            _check_attention_shapes(self.attention, att, len(x))
            descriptors = _check_head_output(self.head, att, len(x))
            if self.loss is not None:
                _check_loss_output(self.loss, descriptors)
        finally:
            for m, training in zip(modules, was_training):
                m.train(training)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) -> descriptors (B, out_dim), L2-normalised."""
        return self.describe(images)[0]

    def train(self, mode: bool = True) -> PlaceRecognitionModule:
        super().train(mode)
        if mode:
            self._freeze_batchnorm()
        return self

    def _freeze_batchnorm(self) -> None:
        if self.freeze_batchnorm:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Also here, not only in train(): Lightning restores each submodule's mode as it captured it around
        # validation, and a run resumed inside a mining round trains before any cache pass has called train().
        self._freeze_batchnorm()

    # -- mining cache -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_dataset(
        self,
        dataset: Dataset,
        desc: str = "encoding",
        dtype: torch.dtype = torch.float32,
        indices: Sequence[int] | None = None,
        keep_workers: bool = False,
    ) -> torch.Tensor:
        """Descriptors of the items ``indices`` of ``dataset`` ((image, index) pairs; all of them by default), in
        order: (len, out_dim), stored as ``dtype`` (float16 halves a mining cache).

        Eval mode, no gradients. Under DDP each rank encodes every world_size-th item and the shards are
        gathered, so every rank returns the full matrix. ``keep_workers``: the loader's worker processes stay
        alive for the next call on the same ``dataset`` (the mining cache: a round every 1000 queries would
        otherwise start and stop them each time) until :meth:`release_encode_workers`.
        """
        was_training = self.training
        self.eval()
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self._trainer else (1, 0)
        items = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)
        mine = items[rank::world].tolist()
        if keep_workers and self.encode_workers > 0:
            loader = self._loader_kept_for(dataset)
            loader.batch_sampler.batches = [
                mine[i : i + self.encode_batch_size] for i in range(0, len(mine), self.encode_batch_size)
            ]
        else:
            loader = self._encode_loader(Subset(dataset, mine), persistent=False)
        t0 = time.perf_counter()
        # Filled in place: collecting the batches and concatenating them would hold the cache twice at its end
        # (12 GB, not 6, for a Pitts250k database in float16).
        local = torch.empty(len(mine), self.head.out_dim, device=self.device, dtype=dtype)
        filled = 0
        ctx = (
            self._trainer.precision_plugin.forward_context() if self._trainer else torch.autocast("cpu", enabled=False)
        )
        try:
            with ctx:
                for images, _ in progress(loader, desc=desc, leave=False, disable=rank != 0):
                    out = self(images.to(self.device, non_blocking=True))
                    local[filled : filled + len(out)] = out
                    filled += len(out)
        finally:
            self.train(was_training)  # also when a pass fails (a corrupt image): the caller may go on
        if world > 1:
            local = self._gather_shards(local, len(items), world)
        log.debug("%s: %d images in %.1f s", desc, len(items), time.perf_counter() - t0)
        return local

    def _encode_loader(self, dataset: Dataset, persistent: bool, batch_sampler: Any = None) -> DataLoader:
        batching = (
            {"batch_sampler": batch_sampler} if batch_sampler is not None else {"batch_size": self.encode_batch_size}
        )
        return DataLoader(
            dataset,
            **batching,
            num_workers=self.encode_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=persistent,
            worker_init_fn=loader_worker_init(),
        )

    def _loader_kept_for(self, dataset: Dataset) -> DataLoader:
        """The loader with kept workers for ``dataset``: the one made for it before, or a new one (the workers of
        a loader for another dataset are released first)."""
        if self._kept_loader is None or self._kept_loader.dataset is not dataset:
            self.release_encode_workers()
            self._kept_loader = self._encode_loader(dataset, persistent=True, batch_sampler=_SettableBatches())
        return self._kept_loader

    def release_encode_workers(self) -> None:
        """End the worker processes kept by ``encode_dataset(..., keep_workers=True)`` (at the end of fitting)."""
        kept, self._kept_loader = self._kept_loader, None
        if kept is not None and kept._iterator is not None:
            kept._iterator._shutdown_workers()  # now, not whenever the loader is collected

    def _gather_shards(self, local: torch.Tensor, total: int, world: int) -> torch.Tensor:
        """Reassemble rank-strided shards (rank r holds items r, r + world, ...) into (total, D)."""
        per_rank = -(-total // world)
        padded = torch.zeros(per_rank, local.shape[1], device=local.device, dtype=local.dtype)
        padded[: len(local)] = local
        gathered = self.all_gather(padded)  # (world, per_rank, D)
        out = torch.empty(total, local.shape[1], device=local.device, dtype=local.dtype)
        for r in range(world):
            n = len(range(r, total, world))
            out[r::world] = gathered[r, :n]
        return out

    @torch.no_grad()
    def feature_grid(self, image_size: Sequence[int]) -> tuple[int, int]:
        """(h, w) of the backbone's feature map for (H, W) images."""
        was_training = self.backbone.training
        self.backbone.eval()
        h, w = self.backbone(torch.zeros(1, 3, *image_size, device=self.device)).shape[-2:]
        self.backbone.train(was_training)
        return int(h), int(w)

    def current_aux_weight(self) -> float:
        if self.aux_switch_epoch is not None and self.aux_weight_after is not None:
            if self.current_epoch >= self.aux_switch_epoch:
                return float(self.aux_weight_after)
        return self.aux_weight

    # -- training ---------------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """batch: query (B,3,H,W), positive (B,3,H,W), negatives (N,3,H,W), neg_to_query (N,)."""
        b = batch["query"].shape[0]
        self._tuples_trained += b
        images = torch.cat([batch["query"], batch["positive"], batch["negatives"]])
        desc, mask = self.describe(images)
        q, p, n = desc[:b], desc[b : 2 * b], desc[2 * b :]
        loss = self.loss(q, p, n, batch["neg_to_query"])
        self.log("train/metric_loss", loss, on_step=False, on_epoch=True, batch_size=b, sync_dist=True)
        weight = self.current_aux_weight()
        if weight > 0 and mask is not None and "targets" in batch:
            aux = deattention_loss(mask, batch["targets"].to(mask.dtype), kind=self.aux_loss)
            self.log("train/aux_loss", aux, on_step=False, on_epoch=True, batch_size=b, sync_dist=True)
            loss = loss + weight * aux
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=b, sync_dist=True)
        self.log(
            "train/negatives_per_query", n.shape[0] / b, on_step=False, on_epoch=True, batch_size=b, sync_dist=True
        )
        return loss

    def on_train_start(self) -> None:
        # A run resumed inside an epoch may not see on_train_epoch_start for it (Lightning skips the hook then).
        self._start_epoch_clock()

    def on_train_epoch_start(self) -> None:
        self._start_epoch_clock()

    def _start_epoch_clock(self) -> None:
        self._epoch_start = time.perf_counter()
        self._tuples_trained = 0
        self._validation_seconds = 0.0

    def _epoch_mining(self) -> Any:
        """The epoch's mining rounds combined (vpr.data.mining.MiningStats), or None."""
        dm = getattr(self.trainer, "datamodule", None)
        mined = dm.epoch_mining_stats(self.current_epoch) if hasattr(dm, "epoch_mining_stats") else None
        return mined[0] if mined else None

    def _epoch_breakdown(self, seconds: float, mined: Any) -> str:
        """``training 80.0 s (1500 tuples, 18.8/s), cache passes 15.0 s, validation 17.0 s``: the training steps' time
        is the epoch's less its cache passes (mining included) and validation."""
        cache = mined.encode_seconds + mined.mine_seconds if mined is not None else 0.0
        steps = max(seconds - cache - self._validation_seconds, 1e-9)
        tuples = self._tuples_trained * self.trainer.world_size  # each rank trains its share of every round
        return (
            f"training {steps:.1f} s ({tuples} tuples, {tuples / steps:.1f}/s), cache passes {cache:.1f} s, "
            f"validation {self._validation_seconds:.1f} s"
        )

    def on_train_epoch_end(self) -> None:
        mined = self._epoch_mining()
        # Lightning starts the training loader, and with it the epoch's first mining round, before the epoch's
        # hooks run: the epoch began with that round.
        start = min(self._epoch_start, mined.started) if mined is not None and mined.started else self._epoch_start
        seconds = time.perf_counter() - start
        # batches of this epoch trained before a resume from a step checkpoint (the mined batch sampler continues
        # the round itself): the clock then timed only the rest of the epoch
        sampler = getattr(self.trainer.train_dataloader, "batch_sampler", None)
        resumed_after = int(getattr(sampler, "resumed_after", 0) or 0)
        if resumed_after:  # no per-epoch time to log or extrapolate
            if not self.trainer.is_global_zero:
                return
            log.info(
                "epoch %d: its rest after the %d batches trained before the resume took %.1f min",
                self.current_epoch,
                resumed_after,
                seconds / 60,
            )
            return
        self.log("train/epoch_seconds", seconds, sync_dist=True)  # every rank: a collective of all or none
        if not self.trainer.is_global_zero:
            return
        left = (self.trainer.max_epochs or 0) - self.current_epoch - 1
        log.info(
            "epoch %d took %.1f min (%s)%s",
            self.current_epoch,
            seconds / 60,
            self._epoch_breakdown(seconds, mined),
            f"; about {left * seconds / 60:.0f} min for the {left} epoch{'s' if left > 1 else ''} left"
            if left > 0
            else "",
        )

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ValueError("no optimizer configured (set optimizer=sgd)")
        base_lr = self.optimizer_factory.keywords.get("lr") if hasattr(self.optimizer_factory, "keywords") else None
        groups = []
        for name in ("backbone", "attention", "head"):
            params = [p for p in getattr(self, name).parameters() if p.requires_grad]
            if params:
                group: dict[str, Any] = {"params": params, "name": name}
                if base_lr is not None:
                    group["lr"] = base_lr * float(self.lr_multipliers.get(name, 1.0))
                groups.append(group)
        if not groups:
            raise ValueError("no trainable parameters: check backbone.train_from")
        optimizer = self.optimizer_factory(groups)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # -- evaluation -------------------------------------------------------------------------------------------
    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        images, index = batch
        self._eval_outputs.append((self(images).float(), index))

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_start(self) -> None:
        self._eval_outputs = []

    def on_test_epoch_start(self) -> None:
        self._eval_outputs = []

    def _collect(self, total: int) -> torch.Tensor:
        """Descriptors of the whole evaluation set in dataset order, gathered over ranks: (total, D), on the
        device they were computed on. Each step's block is scattered into place and released, so the memory
        peaks near twice the split's descriptors, not three times."""
        outputs, self._eval_outputs = self._eval_outputs, []
        if self.trainer.world_size > 1:
            # DistributedSampler pads with repeated items; scattering by index makes duplicates harmless.
            desc = torch.cat([d for d, _ in outputs])
            index = torch.cat([i for _, i in outputs]).to(desc.device)
            outputs = [(self.all_gather(desc).flatten(0, 1), self.all_gather(index).flatten(0, 1))]
            del desc, index
        first = outputs[0][0]
        out = torch.zeros(total, first.shape[1], dtype=first.dtype, device=first.device)
        seen = torch.zeros(total, dtype=torch.bool, device=first.device)
        del first
        while outputs:
            desc, index = outputs.pop()
            index = index.to(out.device)
            out[index] = desc
            seen[index] = True
            del desc, index
        if not bool(seen.all()):
            raise RuntimeError(f"evaluation covered {int(seen.sum())} of {total} images")
        return out

    def _finish_eval(self, stage: str) -> None:
        split = getattr(self.trainer.datamodule, f"{stage}_split")
        desc = self._collect(split.num_db + split.num_q)
        if self.descriptor_transform is not None:  # PCA on the descriptors' device, before the copy to the host
            desc = self.descriptor_transform(desc)
        desc = desc.cpu().numpy()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the split's blocks back to the driver: faiss-gpu allocates outside torch
        too_big = [n for n in self.recall_at if n >= split.num_db]
        if too_big and split.describe() not in self._said_recall_sizes:
            self._said_recall_sizes.add(split.describe())
            log.warning(
                "model.recall_at %s: %s has only %d database images, so R@N there counts every query that "
                "has a true match at all",
                too_big,
                split.describe(),
                split.num_db,
            )
        predictions = rank_split(split, desc[: split.num_db], desc[split.num_db :], k=max(self.recall_at))
        recalls = recall_at_n(predictions, split.eval_positives(), self.recall_at)
        self.predictions[stage] = predictions
        if stage == "test":  # for the per-query predictions file (validation does not need them)
            self.prediction_distances[stage] = pair_distances(desc[: split.num_db], desc[split.num_db :], predictions)
        self.results[stage] = {
            "dataset": split.dataset,
            "split": split.split,
            "num_queries": split.num_q,
            "num_database": split.num_db,
            "recall_at": {str(n): r for n, r in recalls.items()},
            "spatial_nms": split.spatial_nms,
            "own_capture_time_excluded": split.db_time is not None,
        }
        prefix = "val" if stage == "val" else self.test_log_prefix
        for n, r in recalls.items():
            # identical on every rank (descriptors are gathered first): sync_dist only averages equal values
            self.log(f"{prefix}/R@{n}", r, sync_dist=True, prog_bar=n == self.recall_at[0])

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self._eval_outputs = []
            return
        self._finish_eval("val")

    def on_test_epoch_end(self) -> None:
        self._finish_eval("test")

    # -- checkpoints ------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.run_config is not None:
            checkpoint["vpr_config"] = self.run_config


class _SettableBatches:
    """A batch sampler whose batches are set before each pass: a loader with persistent workers draws its
    indices from it in the main process, so each mining round reads its own images with the same workers."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)
