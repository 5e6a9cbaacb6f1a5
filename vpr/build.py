"""From the composed Hydra config to objects: the one path shared by train.py, eval.py and cluster.py.

Network (backbone, attention slot, head) with seeded initialisation, data module, LightningModule, loggers,
callbacks and the Trainer. Decisions that depend on a component are asked of the built component (a head's
``needs_centroids``, a loss's ``mining_margin``, a backbone's ``tag``), not read from config text.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf
from torch import nn

from vpr import variant_tags
from vpr.callbacks import (
    WANDB_ENTITY_KEY,
    WANDB_GROUP_KEY,
    WANDB_NAME_KEY,
    AtomicCheckpointIO,
    CheckpointOnStop,
    LogFileProgressBar,
    OfflineMining,
    RecordRunIds,
    SigtermWithoutCollectives,
)
from vpr.centroids import CLUSTER_SETTINGS, exclude_groups
from vpr.data.transforms import checked_image_size
from vpr.devices import loader_workers
from vpr.errors import ConfigError, DataError, missing_value_message
from vpr.progress import interactive

log = logging.getLogger(__name__)


#: What a component's constructor raises when a setting is wrong: reported as a ConfigError naming the group.
# Lightning's MisconfigurationException: a Trainer setting it refuses (trainer.devices=0).
SETTING_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    RuntimeError,
    OSError,
    ImportError,
    AttributeError,
    MisconfigurationException,
)


def instantiate_setting(group: str, conf: Any, /, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` whose failures from a wrong setting end as a :class:`ConfigError` naming the
    config group, its target and the constructor's own message (not Hydra's wrapped repr)."""
    if OmegaConf.is_dict(conf) and "_target_" in conf and (message := _text_for_a_number(group, conf, set(kwargs))):
        raise ConfigError(message)
    try:
        return instantiate(conf, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, (ConfigError, DataError)):
            raise cause from e
        if not isinstance(cause, SETTING_ERRORS):
            raise
        target = conf.get("_target_") if hasattr(conf, "get") else None
        raise ConfigError(f"{group} ({target}): {cause}{_closest_parameter(group, target, cause)}") from e


def _closest_parameter(group: str, target: Any, cause: BaseException) -> str:
    """For "got an unexpected keyword argument 'x'": the constructor's parameter closest to ``x`` (a typo added
    with ``+``, as Hydra suggests for a key the config lacks), else nothing."""
    import difflib
    import inspect
    import re

    found = re.search(r"unexpected keyword argument '(\w+)'", str(cause))
    if not found or not target:
        return ""
    try:
        from hydra.utils import get_object

        params = [
            p for p in inspect.signature(get_object(str(target))).parameters if p not in ("self", "args", "kwargs")
        ]
    except Exception:  # noqa: BLE001 - only a hint
        return ""
    close = difflib.get_close_matches(found.group(1), params, n=1)
    return (
        (
            f"; did you mean {group}.{close[0]}? (a '+' adds a key the config lacks: here the constructor has no "
            f"{found.group(1)!r})"
        )
        if close
        else f"; its parameters: {', '.join(params)}"
    )


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """A context in which torch's global RNG is seeded, restored afterwards.

    Model construction runs inside it, so the same seed gives the same random weights in cluster.py, train.py and
    eval.py (k-means centroids of a randomly initialised backbone are only valid for those exact weights).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


#: The k-means settings (configs/cluster): each a count of at least 1, with what it counts.
CLUSTER_COUNTS = {f"cluster.{name}": meaning for name, meaning in CLUSTER_SETTINGS.items()}


#: Settings that are true or false (null too for eval.spatial_nms: the dataset's own): text such as "maybe" is
#: refused, not taken as true.
TRUE_OR_FALSE = (
    "eval.spatial_nms",
    "data.spatial_nms",
    "cluster.auto",
    "model.freeze_batchnorm",
    "test_untrained",
    "test_after_training",
    "overwrite",
)


def true_or_false(cfg: DictConfig, key: str) -> bool | None:
    """The setting ``key`` as a bool (None when unset or null); anything else is a ConfigError naming it."""
    value = OmegaConf.select(cfg, key)
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r}: must be true or false")
    return value


def check_common_settings(cfg: DictConfig, trainer: bool = True) -> None:
    """Settings every script reads, checked before any work: the seeds, the k-means counts, the true-or-false
    switches, the evaluation batch size and loader workers, the image size and, for the scripts that run a
    Lightning Trainer (``trainer``), a GPU trainer on a machine without one."""
    whole_number(cfg, "seed", 0, "the seed of weights, sampling and mining", nullable=False)
    for key, meaning in CLUSTER_COUNTS.items():  # any script may cluster (train.py and eval.py with cluster.auto)
        whole_number(cfg, key, 1, meaning, nullable=False)
    seed_meaning = "the sampling and k-means seed of a pretrained backbone's centroids"
    whole_number(cfg, "cluster.seed", 0, seed_meaning, nullable=False)
    exclude_groups(cfg)  # a list of group names, and a guidance to label them
    for key in TRUE_OR_FALSE:
        true_or_false(cfg, key)
    whole_number(cfg, "data.eval_batch_size", 1, "images per evaluation step", nullable=False)  # every script encodes
    whole_number(cfg, "data.num_workers", 0, "DataLoader worker processes", nullable=False)
    size = OmegaConf.select(cfg, "data.image_size")
    if size is not None:
        try:
            checked_image_size(OmegaConf.to_container(size) if OmegaConf.is_config(size) else size)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    accelerator = str((cfg.get("trainer") or {}).get("accelerator", "auto"))
    if trainer and accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} (trainer=gpu, which the paper_* experiments choose) but "
            "this machine has no CUDA GPU that torch can use: add trainer=default (it picks the "
            "device) or trainer=cpu, or leave out trainer=gpu"
        )
    if trainer:
        check_precision((cfg.get("trainer") or {}).get("precision", "32-true"))


def check_recall_at(cfg: DictConfig) -> list[int]:
    """``model.recall_at`` as a non-empty list of whole numbers >= 1 (the N of Recall@N); anything else is a
    ConfigError now, not at the first validation after an epoch of training."""
    value = OmegaConf.select(cfg, "model.recall_at")
    items = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    try:
        ok = isinstance(items, list) and bool(items) and all(int(n) == float(n) >= 1 for n in items)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(
            f"model.recall_at={items!r}: give a list of whole numbers >= 1, the N of Recall@N, e.g. "
            "model.recall_at=[1,5,10,20]"
        )
    return [int(n) for n in items]


#: Lightning's precision settings the model supports: float32, or float32 weights with autocast to a half type.
SUPPORTED_PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
_PRECISION_ALIASES = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}


def check_precision(setting: Any) -> str:
    """``trainer.precision`` as one of :data:`SUPPORTED_PRECISIONS` (Lightning's short spellings 32, 16 and bf16
    accepted, and None: Lightning's default); anything else is a ConfigError. Whole-model half or double precision
    (``bf16-true``, ``16-true``, ``64-true``) is refused: the images and NetVLAD's soft-assignment and normalisation
    stay float32."""
    text = "32-true" if setting is None else str(setting)  # None: Lightning's default
    text = _PRECISION_ALIASES.get(text, text)
    if text in SUPPORTED_PRECISIONS:
        return text
    why = (
        "the whole model in one precision is not supported (the images and NetVLAD's soft-assignment and "
        "normalisation are float32); mixed precision keeps float32 weights and runs the convolutions in half"
        if text.endswith("-true")
        else "not a precision this project trains in"
    )
    raise ConfigError(
        f"trainer.precision={setting}: {why}; choose one of {', '.join(SUPPORTED_PRECISIONS)} (bf16-mixed on "
        "GPUs with bfloat16, which trainer=gpu chooses; 16-mixed on older GPUs; 32-true on the CPU)"
    )


_ABSENT = object()


def whole_number(cfg: DictConfig, key: str, smallest: int, meaning: str = "", nullable: bool = True) -> int | None:
    """The setting ``key`` as an int >= ``smallest`` (None when absent, or null where ``nullable``: a setting whose
    null means something); anything else is a ConfigError naming it."""
    value = OmegaConf.select(cfg, key, default=_ABSENT)
    if value is _ABSENT or value is None and nullable:
        return None
    if value is None:
        raise ConfigError(f"{key}=null: must be a whole number >= {smallest}" + (f" ({meaning})" if meaning else ""))
    try:
        ok = int(value) == float(value) and int(value) >= smallest
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(
            f"{key}={value!r}: must be a whole number >= {smallest}" + (f" ({meaning})" if meaning else "")
        )
    return int(value)


def model_settings() -> tuple[str, ...]:
    """The ``model.*`` settings, as configs/base.yaml declares them; any other key would be read by nothing."""
    from omegaconf import OmegaConf

    from vpr import CONFIG_DIR

    return tuple(OmegaConf.load(CONFIG_DIR / "base.yaml").model.keys())


def check_model_settings(cfg: DictConfig) -> None:
    """The network's settings that the module and NetVLAD check when they are built, after the data is read (and
    a synthetic city generated): ``model.channels_last``, ``model.compile``, ``model.lr_multipliers`` and NetVLAD's
    K and version, checked now, with the same messages; and a ``model.*`` key that nothing reads (a typo)."""
    from vpr.models.heads.netvlad import NetVLAD, check_netvlad_settings
    from vpr.models.module import check_model_switches, checked_lr_multipliers

    model = cfg.get("model") or {}
    known = model_settings()
    for key in model:
        if key not in known:  # added with + (Hydra's advice for a key the config lacks): read by nothing
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean model.{close[0]}? " if close else ""
            raise ConfigError(f"model.{key}: no such model setting; {hint}the settings are {', '.join(known)}")
    check_model_switches(model.get("channels_last", "auto"), model.get("compile", False))
    checked_lr_multipliers(model.get("lr_multipliers"))
    head = cfg.get("head") or {}
    target = str(head.get("_target_", ""))
    if target == f"{NetVLAD.__module__}.{NetVLAD.__qualname__}":
        try:
            check_netvlad_settings(head.get("num_clusters", 64), head.get("version", "v1"))
        except ValueError as e:
            raise ConfigError(f"head ({target}): {e}") from None


def build_network(cfg: DictConfig) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(backbone, attention, head) with deterministic initialisation for ``cfg.seed``."""
    with seeded(cfg.seed):
        backbone = instantiate_setting("backbone", cfg.backbone)
        channels = int(backbone.out_channels)
        attention = instantiate_setting("attention", cfg.attention, channels=channels)
        head = instantiate_setting("head", cfg.head, dim=channels)
    return backbone, attention, head


def mining_margin(cfg: DictConfig) -> float:
    """``mining.margin``, or when null the loss's own (``loss.mining_margin``: sTML's margin + margin_pn)."""
    if cfg.mining.get("margin") is not None:
        try:
            margin = float(cfg.mining.margin)
        except ValueError:
            raise ConfigError(
                f"mining.margin={cfg.mining.margin!r}: must be a number, or null for the loss's own margin"
            ) from None
        if not margin >= 0:
            raise ConfigError(
                f"mining.margin={cfg.mining.margin!r}: must be >= 0 (a negative is hard if d(q,n) < d(q,p) + margin), "
                "or null for the loss's own margin"
            )
        return margin
    loss = instantiate_setting("loss", cfg.loss)
    margin = getattr(loss, "mining_margin", None)
    if margin is None:
        raise ConfigError(
            f"loss {type(loss).__name__} does not say which margin makes a negative hard (no mining_margin): "
            "set mining.margin=..."
        )
    return float(margin)


def build_datamodule(cfg: DictConfig, data_cfg: DictConfig | None = None, with_training: bool = True):
    """The data module of ``cfg.data`` (or of ``data_cfg``, a test set's); ``eval.spatial_nms`` overrides the data's.

    Without training (a test set) neither mining nor semantic guidance is set up.
    """
    data_cfg = cfg.data if data_cfg is None else data_cfg
    kwargs: dict[str, Any] = {"seed": cfg.seed}
    if with_training:
        kwargs["mining"] = OmegaConf.to_container(cfg.mining, resolve=True)
        kwargs["mining"]["margin"] = mining_margin(cfg)
        guidance = cfg.get("guidance") or {}
        if guidance.get("source") and (missing := sorted(OmegaConf.missing_keys(guidance))):
            raise ConfigError(missing_value_message(missing[0]))  # full keys: guidance.mask_dir
        kwargs["guidance"] = OmegaConf.to_container(guidance, resolve=True) if guidance.get("source") else None
    nms = (cfg.get("eval") or {}).get("spatial_nms")
    if nms is not None:
        kwargs["spatial_nms"] = bool(nms)
    return instantiate_setting("data", data_cfg, **kwargs, _recursive_=True)


def guided(cfg: DictConfig, attention: nn.Module) -> bool:
    """Semantic guidance applies when it is configured and the attention module's mask asks for it."""
    return bool((cfg.get("guidance") or {}).get("source")) and bool(getattr(attention, "supervised_mask", False))


def _text_for_a_number(group: str, conf: Any, given: set[str] = frozenset()) -> str | None:
    """The first ``group.key='text'`` whose constructor parameter is annotated as a number. Constructors check few
    of their arguments: torch's StepLR takes ``gamma='abc'`` and fails only at the step that uses it, a loss takes
    ``margin='abc'`` and fails in the first training step. Keys in ``given`` are replaced by the caller's values."""
    import typing

    from hydra.utils import get_object

    try:
        target = get_object(str(conf.get("_target_")))
        hints = typing.get_type_hints(target.__init__ if isinstance(target, type) else target)
    except Exception:  # an unresolvable target or annotations are reported by the construction itself
        return None
    numeric = {int, float, bool, type(None), torch.Tensor}  # lr: float | Tensor
    for key, hint in hints.items():
        kinds = set(typing.get_args(hint)) or {hint}
        # only parameters that take numbers and nothing else: not str, not Literal["warn"], not Any
        if key not in conf or key in given or not kinds <= numeric or not kinds & {int, float, bool}:
            continue
        try:
            value = conf[key]
        except Exception:  # an unresolvable value is reported by the construction itself
            continue
        if isinstance(value, str):
            kind = (
                "true or false"
                if kinds & {int, float, bool} == {bool}
                else ("a whole number" if float not in kinds else "a number")
            )
            return f"{group}.{key}={value!r}: must be {kind}"
    return None


def check_optimizer_settings(cfg: DictConfig, optimizer_factory: Any, scheduler_factory: Any) -> None:
    """The optimizer and scheduler are built inside Lightning's fit; build them once on a probe parameter now and
    step them through the run's epochs, so that a refused setting (optimizer.lr=-1, a scheduler's bad argument,
    text where a number belongs) ends before any work as an error line."""
    probe = torch.nn.Parameter(torch.zeros(1))
    epochs = int(cfg.get("trainer", {}).get("max_epochs") or 1)

    def optimizer():
        return optimizer_factory([probe])

    def stepped_scheduler():
        if scheduler_factory is None:
            return
        opt = optimizer()
        scheduler = scheduler_factory(opt)
        probe.grad = torch.zeros_like(probe)
        for _ in range(min(epochs, 1000)):
            opt.step()
            scheduler.step()

    for group, make in (("optimizer", optimizer), ("scheduler", stepped_scheduler)):
        try:
            make()
        except (*SETTING_ERRORS, ArithmeticError) as e:
            conf = cfg.get(group) or {}
            message = f"{group} ({conf.get('_target_')}): {e}"
            if isinstance(e, ArithmeticError):  # StepLR(step_size=0) divides by it at its first step
                zeros = [f"{group}.{k}={v}" for k, v in conf.items() if not isinstance(v, bool) and v == 0]
                message += f"; {', '.join(zeros)} cannot be 0" if zeros else "; a setting of the group is out of range"
            raise ConfigError(message) from None


def optimizer_factories(cfg: DictConfig) -> tuple[Any, Any]:
    """The optimizer's and the scheduler's (None: none) factories, checked on a probe parameter."""
    optimizer = instantiate_setting("optimizer", cfg.optimizer)
    scheduler = cfg.get("scheduler")
    scheduler = instantiate_setting("scheduler", scheduler) if scheduler and "_target_" in scheduler else None
    check_optimizer_settings(cfg, optimizer, scheduler)
    return optimizer, scheduler


def build_module(cfg: DictConfig, with_training: bool = True):
    """The LightningModule; with training, also its optimizer and scheduler factories."""
    from vpr.models.module import PlaceRecognitionModule

    backbone, attention, head = build_network(cfg)
    guidance = cfg.get("guidance") or {}
    kwargs: dict[str, Any] = {}
    if with_training:
        kwargs["optimizer"], kwargs["scheduler"] = optimizer_factories(cfg)
    return PlaceRecognitionModule(
        backbone=backbone,
        attention=attention,
        head=head,
        loss=instantiate_setting("loss", cfg.loss),
        lr_multipliers=cfg.model.get("lr_multipliers"),
        recall_at=list(cfg.model.recall_at),
        freeze_batchnorm=bool(cfg.model.get("freeze_batchnorm", False)),
        encode_batch_size=int(cfg.data.eval_batch_size),
        encode_workers=loader_workers(int(cfg.data.num_workers)),
        run_config=OmegaConf.to_container(cfg, resolve=True),
        aux_loss=str(guidance.get("loss", "mse")),
        aux_weight=float(guidance.get("weight", 0.0)) if guided(cfg, attention) else 0.0,
        aux_weight_after=guidance.get("weight_after"),
        aux_switch_epoch=guidance.get("switch_epoch"),
        channels_last=cfg.model.get("channels_last", "auto"),
        compile=cfg.model.get("compile", False),
        compile_backend=str(cfg.model.get("compile_backend", "inductor")),
        **kwargs,
    )


# ---------------------------------------------------------------------------------------------------------
# Loggers, callbacks, Trainer
# ---------------------------------------------------------------------------------------------------------


def wandb_offline_default() -> bool:
    """Offline unless an API key or a login is present (then W&B itself handles a lost network). ``WANDB_MODE``
    (offline, dryrun) forces offline; ``WANDB_MODE=disabled`` is not a way of running offline: see
    :func:`wandb_mode`."""
    if os.environ.get("WANDB_MODE", "").strip().lower() in ("offline", "dryrun"):
        return True
    if os.environ.get("WANDB_API_KEY"):
        return False
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return not (netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"))


WANDB_MODES = ("online", "offline", "disabled")


def wandb_mode(conf: Any) -> tuple[str, str]:
    """(online | offline | disabled, why) of the ``logger.wandb`` settings ``conf``: the environment's
    ``WANDB_MODE=disabled`` turns W&B off whatever the settings say (W&B's own switch, e.g. for CI); else
    ``mode`` when set, else ``offline`` when set, else offline unless an API key or a login is present."""
    environment = os.environ.get("WANDB_MODE", "").strip().lower()
    mode = conf.get("mode")
    offline = conf.get("offline")
    if mode is not None:
        mode = {"dryrun": "offline"}.get(str(mode).strip().lower(), str(mode).strip().lower())
        if mode not in WANDB_MODES:
            raise ConfigError(
                f"logger.wandb.mode={conf.get('mode')}: choose online, offline or disabled (null: offline unless "
                "an API key or a login is present)"
            )
        if offline is not None and mode != "disabled" and (mode == "offline") != bool(offline):
            raise ConfigError(
                f"logger.wandb.mode={mode} and logger.wandb.offline={offline} contradict each other: set one of them"
            )
    if environment == "disabled":
        return "disabled", "WANDB_MODE=disabled"
    if mode is not None:
        return mode, f"logger.wandb.mode={mode}"
    if offline is not None:
        return ("offline" if offline else "online"), f"logger.wandb.offline={offline}"
    if wandb_offline_default():
        return "offline", "no API key or login, or WANDB_MODE=offline"
    return "online", "an API key or a login"


def sweep_identity() -> tuple[str | None, str | None]:
    """(sweep name, job number) under a Hydra multirun, else (None, None)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            return Path(hc.sweep.dir).name, f"job{hc.job.num}"
    except Exception:  # not under Hydra
        pass
    return None, None


def _multirun_job_hydra(run_folder: Path) -> dict[str, Any] | None:
    """The ``hydra`` settings of ``run_folder`` (its ``.hydra/hydra.yaml``) when it was a job of a multirun; None for
    a single run, or a folder Hydra left no record in."""
    import yaml

    try:
        hydra = (yaml.safe_load((Path(run_folder) / ".hydra" / "hydra.yaml").read_text()) or {}).get("hydra") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return hydra if isinstance(hydra, dict) and str(hydra.get("mode")) == "MULTIRUN" else None


def run_folder_group(run_folder: Path) -> str | None:
    """The W&B group :func:`build_loggers` gave the run of ``run_folder`` (a train.py run folder): its Hydra sweep's
    folder name when it was a job of a multirun (its ``.hydra/hydra.yaml``), else None (a single run, or a folder
    Hydra left no record in)."""
    hydra = _multirun_job_hydra(run_folder)
    if hydra is None:
        return None
    sweep_dir = str((hydra.get("sweep") or {}).get("dir") or "")
    if sweep_dir and "${" not in sweep_dir:
        return Path(sweep_dir).name
    output_dir = (hydra.get("runtime") or {}).get("output_dir")  # <sweep dir>/<job folder>
    return Path(str(output_dir)).parent.name if output_dir else None


def resumed_wandb_entity(state: dict[str, Any]) -> str | None:
    """The W&B entity the run a checkpoint continues was started with (:class:`RecordRunIds`); None: the default
    one, or a checkpoint written before entities were recorded."""
    entity = state.get(WANDB_ENTITY_KEY)
    return str(entity) if entity else None


def wandb_run_name(cfg: DictConfig, job: str | None) -> str:
    """The W&B name of a run: ``<variant>-seed<N>``, and ``-job<k>`` for job k of a Hydra multirun."""
    return "-".join(str(x) for x in (cfg.get("variant"), f"seed{cfg.seed}", job) if x)


def resumed_wandb_name(state: dict[str, Any], ckpt_path: str | Path, cfg: DictConfig) -> str | None:
    """The W&B name of the run a checkpoint continues: the one it records (:class:`RecordRunIds`), else, for a
    checkpoint written before names were recorded, the one :func:`build_loggers` gave the run of the folder it lies
    in (``<run>/checkpoints/``): with the job number it had in its sweep, whatever job, if any, resumes it."""
    if WANDB_NAME_KEY in state:
        return str(state[WANDB_NAME_KEY]) if state[WANDB_NAME_KEY] else None
    hydra = _multirun_job_hydra(Path(ckpt_path).resolve().parent.parent) or {}
    num = (hydra.get("job") or {}).get("num") if isinstance(hydra.get("job"), dict) else None
    return wandb_run_name(cfg, f"job{num}" if isinstance(num, int) else None)


def resumed_wandb_group(state: dict[str, Any], ckpt_path: str | Path) -> str | None:
    """The W&B group of the run a checkpoint continues: the one it records (:class:`RecordRunIds`), else, for a
    checkpoint written before groups were recorded, that of the run folder it lies in (``<run>/checkpoints/``,
    where a resumed run keeps writing): a resumed run stays in its own sweep's group, not the new sweep's."""
    if WANDB_GROUP_KEY in state:
        return state[WANDB_GROUP_KEY]
    return run_folder_group(Path(ckpt_path).resolve().parent.parent)


def build_loggers(
    cfg: DictConfig,
    wandb_id: str | None = None,
    wandb_group: str | None = None,
    wandb_entity: str | None = None,
    wandb_name: str | None = None,
) -> list[Any]:
    """The configured loggers; ``wandb_id`` continues that W&B run (a resumed training), in ``wandb_group`` (the
    group it was started in; None: none) unless ``logger.wandb.group`` names one, under ``wandb_entity`` (the
    entity it was started with; None: the default one) unless ``logger.wandb.entity`` names one, and with the name
    ``wandb_name`` (None: this run's own, :func:`wandb_run_name`) unless ``logger.wandb.name`` gives one."""
    loggers = []
    for name, conf in (cfg.get("logger") or {}).items():
        if conf is None or "_target_" not in conf:
            continue
        kwargs: dict[str, Any] = {}
        if name == "wandb":
            mode, why = wandb_mode(conf)
            if mode == "disabled":
                log.info("W&B is off (%s): this run logs nothing to W&B", why)
                continue
            kwargs["offline"] = mode == "offline"
            if conf.get("mode") is not None:
                kwargs["mode"] = mode  # dryrun (W&B's old name) as offline
            if mode == "offline":
                log.info(
                    "W&B runs offline (%s): the run is kept in %s; upload it with: wandb sync %s",
                    why,
                    Path(cfg.paths.output_dir) / "wandb",
                    Path(cfg.paths.output_dir) / "wandb" / "offline-run-*",
                )
            group, job = sweep_identity()
            if conf.get("group") is None:
                if wandb_id:
                    kwargs["group"] = wandb_group  # a resumed run stays in the group it started in
                elif group:
                    kwargs["group"] = group  # one W&B group per Hydra sweep
            if conf.get("name") is None:
                # a resumed run keeps its name (a sweep's job resumed as a single run stays <variant>-seed<N>-job<k>)
                kwargs["name"] = str(wandb_name) if wandb_id and wandb_name else wandb_run_name(cfg, job)
            if "job_type" in conf and conf.get("job_type") is None and cfg.get("task_name"):
                kwargs["job_type"] = str(cfg.task_name)  # train, eval: the runs of one project told apart
            tags = variant_tags(conf.get("tags"), cfg.get("variant"))
            if tags != [str(t) for t in (conf.get("tags") or [])]:
                kwargs["tags"] = tags
            if wandb_id:
                kwargs.update(id=str(wandb_id), resume="allow")
                if conf.get("entity") is None and wandb_entity:
                    kwargs["entity"] = str(wandb_entity)  # the run continues where it was started
            os.environ.setdefault("WANDB_SILENT", "true")
            Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)
        logger = instantiate_setting(f"logger.{name}", conf, **kwargs)
        if name == "wandb" and getattr(logger, "_wandb_init", {}).get("anonymous", "") is None:
            # Lightning passes anonymous=None, which wandb (0.19+) answers with a deprecation warning on every run
            logger._wandb_init.pop("anonymous")
        loggers.append(logger)
    return loggers


def log_file_progress_bar(cfg: DictConfig) -> list[L.Callback]:
    """[LogFileProgressBar] when the bars are on and the output is not a terminal (a log file, a pipe), else []."""
    if cfg.get("trainer", {}).get("enable_progress_bar", True) and not interactive(sys.stdout):
        return [LogFileProgressBar()]
    return []


def build_callbacks(cfg: DictConfig, with_logger: bool = True) -> list[L.Callback]:
    """The configured callbacks (those that only feed a logger are left out when there is none) and OfflineMining."""
    out: list[L.Callback] = []
    for name, c in (cfg.get("callbacks") or {}).items():
        if c is None or "_target_" not in c:
            continue
        if not with_logger and c._target_.endswith("LearningRateMonitor"):
            continue
        out.append(instantiate_setting(f"callbacks.{name}", c))
    every = cfg.get("checkpoint_every_n_steps")
    if every and cfg.get("callbacks", {}).get("last_checkpoint") is not None:
        # Lightning wants one trigger per ModelCheckpoint: a second one writes the same last.ckpt between epochs.
        out.append(
            ModelCheckpoint(
                dirpath=cfg.callbacks.last_checkpoint.dirpath,
                filename="last",
                monitor=None,
                save_top_k=1,
                every_n_train_steps=int(every),
                enable_version_counter=False,
            )
        )
    out += log_file_progress_bar(cfg)
    out += [OfflineMining(), RecordRunIds()]
    if cfg.get("callbacks", {}).get("last_checkpoint") is not None:
        out.append(CheckpointOnStop(cfg.callbacks.last_checkpoint.dirpath))
    out.append(SigtermWithoutCollectives())
    return out


def finish_loggers(trainer: L.Trainer, failed: bool) -> None:
    """End the W&B run of this job (a Hydra multirun starts the next job's own run), marked failed if it was."""
    if not any(type(lg).__name__ == "WandbLogger" for lg in trainer.loggers):
        return
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)


def batchnorm_trains(module: nn.Module) -> bool:
    """Whether some BatchNorm layer computes batch statistics in training mode (the frozen stages of a backbone and
    ``model.freeze_batchnorm`` keep theirs in eval mode); the module's mode is restored."""
    was_training = module.training
    module.train()
    found = any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in module.modules())
    module.train(was_training)
    return found


def resolve_sync_batchnorm(setting: Any, module: nn.Module | None, cuda: bool) -> bool:
    """``trainer.sync_batchnorm``: true/false as given; ``auto`` = on CUDA, when some BatchNorm layer trains (then
    each rank's batch of a few tuples alone would give noisy statistics). SyncBatchNorm needs CUDA."""
    if setting in (True, False):
        return bool(setting)
    if setting != "auto":
        raise ConfigError(f"trainer.sync_batchnorm={setting!r}: choose auto, true or false")
    return bool(cuda and module is not None and batchnorm_trains(module))


def check_deterministic(setting: Any, module: nn.Module | None, cuda: bool) -> None:
    """``trainer.deterministic=true`` makes torch stop at the first op without a deterministic kernel: on CUDA,
    refuse it before any work when the network has such a layer (it marks itself ``cuda_backward_deterministic =
    False``: reflection padding, bilinear upsampling), naming the layer and the fix."""
    if setting is not True or not cuda or module is None:
        return
    layers = sorted(
        {type(m).__name__ for m in module.modules() if getattr(m, "cuda_backward_deterministic", True) is False}
    )
    if layers:
        raise ConfigError(
            f"trainer.deterministic=true: {', '.join(layers)} (this attention module) has no deterministic CUDA "
            "backward in torch (reflection padding, bilinear upsampling); use trainer.deterministic=warn (the "
            "default: deterministic kernels wherever torch has them) or train on the CPU"
        )


def _training_trainer(cfg: DictConfig, loggers: list[Any], module: nn.Module | None, say: bool = True) -> L.Trainer:
    """The training Trainer with ``loggers`` and the configured callbacks (``say``: log the choices it makes)."""
    precision = str(cfg.trainer.get("precision", "32-true"))
    if precision.startswith("bf16") and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        if say:
            log.warning("trainer.precision=%s: this GPU has no bfloat16; training in 16-mixed instead", precision)
        cfg = cfg.copy()
        cfg.trainer.precision = "16-mixed"
    extra: dict[str, Any] = {}
    if cfg.model.get("compile", False) not in (False, None):
        # validation and test under no_grad like the mining cache pass: one compiled graph for all three
        # (under inference_mode torch.compile guards on the tensors' dispatch keys and compiles again)
        extra["inference_mode"] = False
    if "sync_batchnorm" in cfg.trainer:
        setting = cfg.trainer.sync_batchnorm
        extra["sync_batchnorm"] = resolve_sync_batchnorm(setting, module, torch.cuda.is_available())
        if setting == "auto" and say:
            log.info(
                "trainer.sync_batchnorm=auto: %s",
                "SyncBatchNorm (BatchNorm layers train, on CUDA)"
                if extra["sync_batchnorm"]
                else "off (no BatchNorm layer trains, or no CUDA)",
            )
    return instantiate_setting(
        "trainer",
        cfg.trainer,
        logger=loggers or False,
        callbacks=build_callbacks(cfg, with_logger=bool(loggers)),
        plugins=[AtomicCheckpointIO()],
        **extra,
    )


#: Lightning Trainer counts it takes without a word when out of range, and what they do then.
TRAINER_COUNTS = {  # setting: (smallest allowed value, what it counts)
    # -5 logs every 5th step, -1 and 0.5 every step (step % n == 0)
    "trainer.log_every_n_steps": (0, "training steps between two logged losses; 0: none within an epoch"),
    # -5 runs no sanity check, as 0 does
    "trainer.num_sanity_val_steps": (-1, "validation batches run before training; 0: none, -1: all of them"),
    # a negative count is no minimum
    "trainer.min_epochs": (0, "epochs trained before early stopping may stop the run"),
    "trainer.min_steps": (0, "training steps before early stopping may stop the run"),
}


def check_trainer_settings(cfg: DictConfig) -> None:
    """The ``trainer.*`` settings (and the callbacks') that Lightning refuses only when the Trainer is made, after
    the data, the network and k-means: a Trainer is made now, without loggers (no W&B run opens) and without the
    network (``trainer.sync_batchnorm=auto`` is decided later), and dropped; torch's global switches it sets
    (deterministic algorithms, cuDNN benchmark) are restored. Also the settings Lightning takes without a word and
    trips over later or that do nothing: ``trainer.accumulate_grad_batches`` (0 divides by zero at the first step),
    :data:`TRAINER_COUNTS` out of range, ``min_epochs`` above ``max_epochs``, a negative ``gradient_clip_val`` (no
    clipping) and a ``trainer.deterministic`` that is no switch."""
    whole_number(cfg, "trainer.accumulate_grad_batches", 1, "batches whose gradients make one optimizer step")
    for key, (smallest, meaning) in TRAINER_COUNTS.items():
        whole_number(cfg, key, smallest, meaning)
    min_epochs, max_epochs = OmegaConf.select(cfg, "trainer.min_epochs"), OmegaConf.select(cfg, "trainer.max_epochs")
    if min_epochs is not None and max_epochs is not None and int(max_epochs) >= 0 and int(min_epochs) > int(max_epochs):
        raise ConfigError(
            f"trainer.min_epochs={min_epochs} is more than trainer.max_epochs={max_epochs}: training stops at "
            "max_epochs all the same; lower trainer.min_epochs or raise trainer.max_epochs"
        )
    clip = OmegaConf.select(cfg, "trainer.gradient_clip_val")
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip >= 0):
        raise ConfigError(
            f"trainer.gradient_clip_val={clip!r}: must be a number >= 0 (the largest gradient norm, or value with "
            "gradient_clip_algorithm=value; 0 or null: no clipping); a negative one clips nothing"
        )
    deterministic = OmegaConf.select(cfg, "trainer.deterministic")
    if not (deterministic is None or isinstance(deterministic, bool) or deterministic == "warn"):
        raise ConfigError(
            f"trainer.deterministic={deterministic!r}: choose true (stop at an op without a deterministic kernel), "
            "warn (deterministic kernels where torch has them), false or null"
        )
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    logging.disable(logging.WARNING)  # its choices (GPU available, ...) are logged once, by the run's own Trainer
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _training_trainer(cfg, [], None, say=False)
    finally:
        logging.disable(logging.NOTSET)
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]
        if saved[3] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[3]


def build_trainer(
    cfg: DictConfig,
    training: bool = True,
    wandb_id: str | None = None,
    module: nn.Module | None = None,
    wandb_group: str | None = None,
    loggers: list[Any] | None = None,
    wandb_entity: str | None = None,
    wandb_name: str | None = None,
) -> L.Trainer:
    """The training Trainer (configured loggers and callbacks), or a plain one-device Trainer for evaluation
    (logging to ``loggers``, none by default). ``module`` (training) decides ``trainer.sync_batchnorm=auto``;
    ``wandb_id``, ``wandb_group``, ``wandb_entity`` and ``wandb_name``: see :func:`build_loggers`."""
    if training:
        return _training_trainer(cfg, build_loggers(cfg, wandb_id, wandb_group, wandb_entity, wandb_name), module)
    devices = cfg.trainer.get("devices", "auto")
    if str(devices) not in ("1", "auto", "None") or cfg.trainer.get("strategy") not in (None, "auto"):
        log.warning(
            "trainer.devices=%s / strategy: evaluation runs in one process on one device (the encoding of a test "
            "split is short next to training); these settings apply to train.py",
            devices,
        )
    return L.Trainer(
        accelerator=cfg.trainer.get("accelerator", "auto"),
        devices=1,
        precision=cfg.trainer.get("precision", "32-true"),
        logger=loggers or False,
        callbacks=log_file_progress_bar(cfg),
        enable_progress_bar=bool(cfg.trainer.get("enable_progress_bar", True)),
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=cfg.paths.output_dir,
    )


# ---------------------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------------------


def command_line_overrides() -> list[str]:
    """The overrides this Hydra run was given on the command line ([] when not run by Hydra, e.g. in tests)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:
        return []


def cluster_command_overrides() -> str:
    """The overrides of this run that cluster.py needs (data, backbone, head, seed), as one string."""
    skip = ("ckpt_path", "trainer", "cluster.auto", "logger", "callbacks", "test_", "optimizer", "scheduler")
    return " ".join(o for o in command_line_overrides() if not o.startswith(skip))
