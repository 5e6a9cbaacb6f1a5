"""train.py's work: build everything from the config, (cluster,) train with offline mining, test, report."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from vpr import variant_with_overrides
from vpr.build import (
    build_datamodule,
    build_module,
    build_trainer,
    check_common_settings,
    check_deterministic,
    check_model_settings,
    check_recall_at,
    check_trainer_settings,
    cluster_command_overrides,
    command_line_overrides,
    finish_loggers,
    optimizer_factories,
    resumed_wandb_entity,
    resumed_wandb_group,
    resumed_wandb_name,
    wandb_mode,
    whole_number,
)
from vpr.callbacks import WANDB_ID_KEY, stop_if_signalled
from vpr.centroids import init_head
from vpr.checkpoints import (
    NothingToResume,
    identity_differences,
    load_matching_weights,
    read_checkpoint,
    resolve_ckpt_path,
    resume_settings,
    weight_mismatches,
)
from vpr.data.datamodule import early_stop_recorded
from vpr.devices import float32_matmul_precision, reuse_freed_memory, work_device
from vpr.errors import (
    ConfigError,
    export_sweep_job,
    pass_sigterm_on,
    stop_if_sigterm_was_swallowed,
    sweep_job,
    swept_settings,
)
from vpr.eval.tables import format_recall_table
from vpr.io import exclusive_lock, path_under, remove_partial_writes, write_json_atomic, write_text_atomic
from vpr.run import (
    log_test_results,
    process_rank,
    save_predictions,
    save_run_config,
    set_aside_earlier_checkpoints,
    set_aside_earlier_outputs,
    single_log_stream,
)
from vpr.run.test_sets import prepare_test_sets, resolve_test_sets, run_test_sets, shared_data_overrides
from vpr.viz.pictures import save_retrieval_pictures

log = logging.getLogger(__name__)


# Settings of training alone (check_common_settings checks those of every script: the evaluation batch, the loader
# workers, the k-means counts).
WHOLE_NUMBERS = {  # setting: (smallest allowed value, what it counts)
    "data.batch_size": (1, "training tuples per step"),
    "mining.negatives_per_query": (1, "hard negatives kept per query"),
    "mining.candidate_negatives": (1, "negatives sampled per query before the hardest are kept"),
    "mining.refresh_every_queries": (1, "training queries between two mining cache passes"),
    "trainer.max_epochs": (1, "epochs"),
    "checkpoint_every_n_steps": (1, "training steps between two last.ckpt writes within an epoch; null: none"),
    "mining.database_subset": (1, "database images cached per mining round; null: all"),
    "mining.chunk_queries": (1, "queries per distance-matrix chunk of a mining round"),
    "trainer.check_val_every_n_epoch": (1, "epochs between two validations"),
    "callbacks.mask_quality.images": (1, "images whose attention mask is measured; callbacks.mask_quality=null: off"),
}

#: The settings of WHOLE_NUMBERS whose null means none (all): the others stopped with a traceback on null.
NULL_MEANS_NONE = ("checkpoint_every_n_steps", "mining.database_subset")


def validate_config(cfg: DictConfig) -> None:
    """Refuse inconsistent settings up front, naming what to change."""
    check_common_settings(cfg)
    for key, (smallest, meaning) in WHOLE_NUMBERS.items():
        whole_number(cfg, key, smallest, meaning, nullable=key in NULL_MEANS_NONE)
    check_recall_at(cfg)
    check_model_settings(cfg)  # what the network's constructors refuse, after the data is read
    devices = OmegaConf.select(cfg, "trainer.devices")
    if devices is not None and (str(devices).strip() in ("0", "", "[]") or OmegaConf.is_list(devices) and not devices):
        # Lightning refuses it only when the Trainer is made: after the data, the network and k-means
        raise ConfigError(
            f"trainer.devices={devices}: no device to train on; give a count >= 1, -1 (all of them), a list of "
            "device ids, or auto"
        )
    check_monitor(cfg)
    if (cfg.get("logger") or {}).get("wandb") is not None:
        wandb_mode(cfg.logger.wandb)  # a wrong logger.wandb.mode fails now, not after clustering
    optimizer_factories(cfg)  # what torch refuses when Lightning's fit builds them (optimizer.lr=-1)
    check_trainer_settings(cfg)  # what Lightning would refuse when the Trainer is made, after k-means
    if cfg.get("ckpt_path") and cfg.get("init_weights"):
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path} and init_weights={cfg.init_weights}: a resumed run restores every weight "
            "from its checkpoint, so init_weights would not be used; drop init_weights to resume, or drop "
            "ckpt_path to start a new run from init_weights' tensors"
        )


def check_monitor(cfg: DictConfig) -> None:
    """``monitor``: the validation recall ``val/R@N`` that picks the best checkpoint and stops early, N one of
    ``model.recall_at`` (the only validation metrics logged). Anything else would fail in Lightning's checkpoint
    callback at the end of the first epoch's validation."""
    monitor, recall_at = str(cfg.get("monitor")), check_recall_at(cfg)
    if monitor.split("/")[0] != "val":
        raise ConfigError(f"monitor={monitor}: choose a validation metric such as val/R@1 or val/R@5")
    found = re.fullmatch(r"val/R@([1-9]\d*)", monitor)
    if found is None:
        raise ConfigError(
            f"monitor={monitor}: the validation metrics are val/R@N, N one of model.recall_at={recall_at}; choose "
            "one such as val/R@1 or val/R@5"
        )
    if int(found.group(1)) not in recall_at:
        raise ConfigError(f"monitor={monitor} but model.recall_at={recall_at} does not list {found.group(1)}")


def print_budget(cfg: DictConfig, dm, module) -> None:
    """What the run will cost, before it starts: images per epoch, cache passes, descriptor memory."""
    split = dm.train_split
    queries = len(dm.miner.trainable_queries)
    rounds = -(-queries // int(cfg.mining.refresh_every_queries))
    dim = int(module.head.out_dim)
    per_tuple = 2 + int(cfg.mining.negatives_per_query)
    subset = cfg.mining.get("database_subset")
    cached_db = cached_database_images(
        split.num_db,
        subset,
        min(int(cfg.mining.refresh_every_queries), queries),
        dm.miner.mean_positives(),
        int(cfg.mining.negatives_per_query),
    )
    cache_images = rounds * cached_db + queries
    cache_dtype = str(cfg.mining.get("cache_dtype") or "float32")
    cache_bytes = mining_cache_bytes(cached_db, int(cfg.mining.refresh_every_queries), dim, cache_dtype)
    cache_gb = cache_bytes / 1e9

    def millions(part) -> str:
        total = sum(p.numel() for p in part.parameters())
        trainable = sum(p.numel() for p in part.parameters() if p.requires_grad)
        return f"{total / 1e6:.2f}M ({trainable / 1e6:.2f}M trained)"

    log.info(
        "budget per epoch: %d training queries (%d dropped) in %d mining rounds; up to %d tuple images "
        "(%d per tuple) and about %d cache images; descriptor %d-d, cache %.2f GB %s; parameters %s: backbone %s, "
        "attention %s, head %s; mining margin %.3f",
        queries,
        dm.miner.dropped_queries,
        rounds,
        queries * per_tuple,
        per_tuple,
        cache_images,
        dim,
        cache_gb,
        cache_dtype,
        millions(module),
        millions(module.backbone),
        millions(module.attention),
        millions(module.head),
        dm.miner.margin,
    )
    where = free_memory(cfg)
    if where is not None:
        check_cache_fits(cache_bytes, *where)


def cached_database_images(
    num_db: int, subset: int | None, round_queries: int, mean_positives: float, negatives_per_query: int
) -> int:
    """Database images one mining round caches: all of them, or with partial mining the random subset plus the round
    queries' positives (their mean count) and remembered negatives (a full memory): an estimate from above in
    practice, since they overlap the subset and each other."""
    if not subset:
        return num_db
    extra = math.ceil(round_queries * (mean_positives + negatives_per_query))
    return min(int(subset) + extra, num_db)


def mining_cache_bytes(cached_db: int, round_queries: int, dim: int, dtype: str) -> int:
    """Memory of one mining round's descriptors: the cached database images and the round's queries."""
    return (cached_db + round_queries) * dim * (2 if dtype == "float16" else 4)


def free_memory(cfg: DictConfig) -> tuple[float, str] | None:
    """(free bytes, where) of the device the mining cache will live on: the GPU when training on one, else RAM."""
    device = work_device(cfg.trainer)
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0]), f"free memory of GPU {device.index}"
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")), "available RAM"
    except (ValueError, OSError, AttributeError):
        return None


def check_cache_fits(cache_bytes: float, free_bytes: float, where: str) -> None:
    """Refuse before training when the mining cache alone cannot fit (the model needs memory too)."""
    if cache_bytes > free_bytes:
        raise ConfigError(
            f"the mining cache needs {cache_bytes / 1e9:.1f} GB but there are {free_bytes / 1e9:.1f} GB of {where}: "
            "set mining.cache_dtype=float16 (half), mining.database_subset=N (cache N random database images per "
            "round), a smaller mining.refresh_every_queries, or fewer NetVLAD clusters (model.num_clusters)"
        )
    if cache_bytes > 0.5 * free_bytes:
        log.warning(
            "the mining cache (%.1f GB) takes more than half of the %.1f GB of %s",
            cache_bytes / 1e9,
            free_bytes / 1e9,
            where,
        )


def continue_in_run_folder(cfg: DictConfig, ckpt_path: str) -> None:
    """A resumed run writes its checkpoints where the resumed one did, so it keeps its best score and last.ckpt
    (this session's logs and results go to its own run folder)."""
    folder = str(Path(ckpt_path).resolve().parent)
    for name in ("checkpoint", "last_checkpoint"):
        if (cfg.get("callbacks") or {}).get(name) is not None:
            cfg.callbacks[name].dirpath = folder
    log.info("resuming %s: checkpoints continue in %s", ckpt_path, folder)


def check_resumed_network(
    module: torch.nn.Module | None, state: dict[str, Any], ckpt_path: str, cfg: DictConfig
) -> None:
    """A checkpoint resumed into a network of other settings is one error naming them (Lightning's strict load
    would end in a traceback), with the two ways out. Without ``module``, from the settings alone (before any data
    work); with it, also weight by weight. A released file (the NetVLAD baseline's, the paper code's) holds weights
    and no training of train.py to resume: refused with the setting that starts a training from it."""
    converted = state.get("released")
    if converted is not None:
        code = "the NetVLAD baseline" if converted.layout == "netvlad_baseline" else "the paper code"
        raise ConfigError(
            f"ckpt_path={ckpt_path} is a checkpoint of {code}: it holds that code's weights, not a training of "
            f"train.py to resume; start a new run from its weights with init_weights={ckpt_path} (ckpt_path= "
            "resumes the checkpoints train.py writes; eval.py and retrieve.py take this file as ckpt_path)"
        )
    stored = state.get("vpr_config") or {}
    differ = [
        f"{key} ({_target_of(stored.get(key))} in the checkpoint, {_target_of(cfg.get(key))} here)"
        for key in ("backbone", "attention", "head")
        if stored.get(key) is not None and _target_of(stored.get(key)) != _target_of(cfg.get(key))
    ]
    problems = weight_mismatches(module.state_dict(), state["state_dict"], {}) if module is not None else []
    if not differ and not problems:
        return
    raise ConfigError(
        f"ckpt_path={ckpt_path} holds another network than this run's: "
        + "; ".join(
            [
                *([", ".join(differ)] if differ else []),
                *([f"{len(problems)} weight(s) do not fit, e.g. {'; '.join(problems[:3])}"] if problems else []),
            ]
        )
        + ". Resume with the settings it was trained with (its run's config.yaml), or start a new run from its "
        f"weights with init_weights={ckpt_path}"
    )


def warn_resumed_settings(state: dict[str, Any], ckpt_path: str, cfg: DictConfig) -> None:
    """A checkpoint resumed with other settings of the run's identity (another loss, seed or image size: a path
    given by hand; ``ckpt_path=last`` takes only runs of the same settings) trains on with the command line's
    settings in the checkpoint's run folder: said once, with the differences, before any work."""
    differ = identity_differences(state.get("vpr_config"), cfg)
    if differ:
        log.warning(
            "ckpt_path=%s was trained with other settings: %s; the run continues with this command line's, and its "
            "checkpoints go on in %s beside the earlier ones (init_weights=%s starts a new run from its weights "
            "instead)",
            ckpt_path,
            "; ".join(differ),
            Path(ckpt_path).resolve().parent,
            ckpt_path,
        )


def _target_of(component: Any) -> str | None:
    if component is None:
        return None
    if not hasattr(component, "get"):
        return None
    if component.get("name"):  # backbones share one builder and differ by name
        return str(component.get("name"))
    target = component.get("_target_")
    return str(target).rsplit(".", 1)[-1] if target else None


def check_writable(folder: Path) -> None:
    """Fail now, not after the first epoch, when checkpoints cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write_test."):
            pass
    except OSError as e:
        raise ConfigError(
            f"checkpoint folder {folder} is not writable ({e.strerror}); set paths.log_dir (or "
            "callbacks.checkpoint.dirpath) to a folder you can write"
        ) from None


#: The checkpoint the first process resumes (empty: none), for the DDP processes Lightning starts from it.
RESUMED_ENV = "VPR_RESUMED_CHECKPOINT"


def checkpoint_to_resume(cfg: DictConfig) -> str | None:
    """The checkpoint ``ckpt_path`` names. For ``last``: the newest of a run with these settings; in a job of a
    sweep, that run must also have the job's values of what the sweep varies (a learning rate sweep's jobs each
    resume their own run), and a job with no such run starts anew. The command line's other settings prefer the
    run that had them. The DDP processes Lightning starts take the first process's choice."""
    if os.environ.get("LOCAL_RANK", "0") != "0" and RESUMED_ENV in os.environ:
        return os.environ[RESUMED_ENV] or None
    job = sweep_job()
    # What a sweep varies tells its jobs' runs apart, whatever it is (+trainer.gradient_clip_val=0.5,1 too); the
    # experiment is the variant, compared anyway.
    require = [k for k in swept_settings() if k not in ("ckpt_path", "experiment") and not k.startswith("hydra")]
    try:
        ckpt_path = resolve_ckpt_path(
            cfg.get("ckpt_path"),
            cfg.paths.log_dir,
            cfg.task_name,
            same_run_as=cfg,
            require=require if job is not None else [],
            prefer=resume_settings(command_line_overrides()),
        )
    except NothingToResume as e:
        if job is None:
            raise
        # Resuming a sweep cut short: the jobs it never started have nothing to resume, and start.
        log.warning("%s; this job of the sweep starts a new run", e)
        ckpt_path = None
    os.environ[RESUMED_ENV] = ckpt_path or ""
    return ckpt_path


def run_training(cfg: DictConfig) -> dict[str, Any]:
    """Train (and test) as configured; returns the test results (and the untrained ones when asked). TF32
    products are on for the run (the training's float32 work) and off again after it."""
    with float32_matmul_precision("high"):
        return _run_training(cfg)


def _run_training(cfg: DictConfig) -> dict[str, Any]:
    stop_if_sigterm_was_swallowed()  # a signal during the imports: stop before the work
    reuse_freed_memory()  # the steps' large activations from freed memory, not fresh pages (glibc)
    single_log_stream()
    # A job that fails here must not show an earlier result. A resumed run (a sweep continued in its own folders)
    # does not test the untrained network again: that result of the run's start stays.
    untrained = ("results_untrained.json",) if cfg.get("ckpt_path") else ()
    earlier = set_aside_earlier_outputs(Path(cfg.paths.output_dir), keep=untrained)
    validate_config(cfg)
    cfg.variant = variant_with_overrides(cfg.get("variant"), command_line_overrides())  # baseline+se: not baseline
    L.seed_everything(int(cfg.seed), workers=True)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_run_config(cfg, out_dir)
    export_sweep_job(os.environ)  # DDP processes started by Lightning run this sweep job, not the whole sweep

    # The checkpoint to resume is found and read first: a wrong ckpt_path fails before any data work.
    ckpt_path = checkpoint_to_resume(cfg)
    state: dict[str, Any] | None = None
    if ckpt_path is not None:
        state, _ = read_checkpoint(ckpt_path, trusted=cfg.get("trusted_targets"))  # plain weights, or refused
        check_resumed_network(None, state, ckpt_path, cfg)
        warn_resumed_settings(state, ckpt_path, cfg)
        continue_in_run_folder(cfg, ckpt_path)
        finished = int(state.get("epoch", 0)) + (0 if (state.get("PlaceDataModule") or {}).get("round") else 1)
        if finished >= int(cfg.trainer.max_epochs):
            log.warning(
                "%s has already trained %d epoch(s), trainer.max_epochs=%d: nothing is left to train (only "
                "the test runs); raise trainer.max_epochs to train on",
                ckpt_path,
                finished,
                int(cfg.trainer.max_epochs),
            )
        elif (cfg.get("callbacks") or {}).get("early_stopping") is not None and early_stopped(state):
            log.warning(
                "%s: early stopping had ended its training after epoch %d: nothing is left to train (only the test "
                "runs); callbacks.early_stopping=null trains on to trainer.max_epochs",
                ckpt_path,
                int(state.get("epoch", 0)),
            )
    folder = Path(cfg.callbacks.checkpoint.dirpath) if cfg.get("callbacks", {}).get("checkpoint") else out_dir
    check_writable(folder)
    with contextlib.ExitStack() as stack:
        if process_rank(os.environ) == 0:  # the other DDP processes write through rank 0
            stack.enter_context(exclusive_lock(folder / ".train.lock", lambda: _folder_busy(folder)))
            # A save that a kill cut short left its temporary file (the checkpoint itself stayed whole): no other
            # process writes here while the lock is held, so none is in progress.
            removed = remove_partial_writes(folder, ".ckpt")
            if removed:
                log.info("removed %d partial checkpoint file(s) of a save that was killed: %s", len(removed), removed)
        weights = cfg.get("init_weights")
        from_them = bool(weights) and path_under(str(weights), folder) is not None  # starts from one of them
        if ckpt_path is None:  # a new run: an earlier run's checkpoints here are not this run's
            # ... copied aside when it starts from one of them: moved, the file init_weights names would be gone (for
            # the DDP processes, which read it again, too); left alone, this run's last.ckpt would replace theirs
            set_aside_earlier_checkpoints(folder, out_dir, into=earlier, copy=from_them)
        return _train_in(cfg, out_dir, ckpt_path, state)


def early_stopped(state: dict[str, Any]) -> bool:
    """Whether a checkpoint's early stopping callback had ended its training (the run resumed from it trains no
    more: see :func:`vpr.data.datamodule.nothing_left_to_train`)."""
    callbacks = state.get("callbacks") or {}
    return any(early_stop_recorded(value) for key, value in callbacks.items() if str(key).startswith("EarlyStopping"))


def _folder_busy(folder: Path) -> None:
    raise ConfigError(
        f"another train.py is writing checkpoints in {folder} (a second ckpt_path=last of the same run?); "
        "wait for it to end, or resume from a copy of its checkpoint"
    )


def _train_in(cfg: DictConfig, out_dir: Path, ckpt_path: str | None, state: dict[str, Any] | None) -> dict[str, Any]:
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    # Test sets are read now: a missing one fails before the training, not after it.
    shared = shared_data_overrides(cfg, command_line_overrides(), trained_image_size=cfg.data.image_size)
    test_sets = prepare_test_sets(cfg, resolve_test_sets(cfg, shared))
    module = build_module(cfg)
    module.check_components(cfg.data.image_size)  # a component of one's own that breaks its contract: said now
    check_deterministic(cfg.trainer.get("deterministic"), module, work_device(cfg.trainer).type == "cuda")
    if dm.guidance is not None and module.aux_weight > 0:
        dm.label_source()  # the segmentation model loads, or fails, now: not after clustering and a cache pass
    wandb_id = wandb_group = wandb_entity = wandb_name = None
    if state is not None:
        check_resumed_network(module, state, ckpt_path, cfg)
        wandb_id = state.get(WANDB_ID_KEY)  # the W&B run the resumed training continues, in its own group
        wandb_group = resumed_wandb_group(state, ckpt_path) if wandb_id else None
        wandb_entity = resumed_wandb_entity(state) if wandb_id else None
        wandb_name = resumed_wandb_name(state, ckpt_path, cfg) if wandb_id else None
    if ckpt_path is None and cfg.get("init_weights"):
        load_matching_weights(module, cfg.init_weights)
    elif ckpt_path is None:
        init_head(cfg, module, dm, cluster_command_overrides())  # a resumed run restores the head instead
    print_budget(cfg, dm, module)

    trainer = build_trainer(
        cfg,
        wandb_id=wandb_id,
        wandb_group=wandb_group,
        wandb_entity=wandb_entity,
        wandb_name=wandb_name,
        module=module,
    )
    pass_sigterm_on(getattr(trainer.strategy.launcher, "kill", None))  # outside the loops too, to the DDP processes
    failed = True
    try:
        results = train_and_test(cfg, trainer, dm, module, ckpt_path, test_sets, out_dir)
        failed = False
        return results
    finally:
        finish_loggers(trainer, failed)  # each job of a sweep is its own W&B run, closed here, also on failure


def train_and_test(
    cfg: DictConfig, trainer: L.Trainer, dm, module, ckpt_path: str | None, test_sets, out_dir: Path
) -> dict[str, Any]:
    for lg in trainer.loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    results: dict[str, Any] = {}
    if cfg.get("test_untrained") and ckpt_path is None:
        module.test_log_prefix = "test_untrained"  # test/R@N is the trained network's
        try:
            trainer.test(module, datamodule=dm, verbose=False)
            stop_if_signalled(trainer)
        finally:
            module.test_log_prefix = "test"
        results["untrained"] = module.results["test"]
        if trainer.is_global_zero:
            write_json_atomic(out_dir / "results_untrained.json", results["untrained"])

    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    stop_if_signalled(trainer)
    if not cfg.get("test_after_training", True) or trainer.interrupted:
        return results

    best = (trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else "") or None
    trainer.test(module, datamodule=dm, ckpt_path=best, verbose=False, weights_only=True)
    stop_if_signalled(trainer)
    results["trained"] = {**module.results["test"], "checkpoint": best}
    if trainer.is_global_zero:  # every rank holds the same gathered results; one writes them
        write_json_atomic(out_dir / "results.json", results["trained"])
        columns = {k: results[k] for k in ("untrained", "trained") if k in results}
        table = format_recall_table(columns, title="Test recall (%)")
        print("\n" + table + f"\n\nrun folder: {out_dir}\n", flush=True)
        write_text_atomic(out_dir / "results.md", table + "\n")
        save_retrieval_pictures(module, dm, "test", out_dir / "pictures" / "test_retrievals.png")
        save_predictions(module, dm, out_dir)
        log_test_results(trainer.loggers, columns, out_dir)
    if test_sets:
        results["test_sets"] = run_test_sets(
            test_sets,
            module,
            trainer,
            out_dir,
            ckpt_path=best,
            title="Test recall (%) of the trained network on the test sets",
        )  # each set's recalls logged as test_<label>/R@N
    return results
