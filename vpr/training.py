"""train.py's work: build everything from the config, (cluster,) train with offline mining, test, report."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vpr.builders import build_datamodule, build_module, command_line_overrides, init_netvlad, mining_margin
from vpr.errors import ConfigError
from vpr.eval.results import format_table
from vpr.io import write_json_atomic, write_text_atomic
from vpr.pictures import save_retrieval_pictures
from vpr.test_sets import prepare_test_sets, resolve_test_sets, run_test_sets, shared_data_overrides

log = logging.getLogger(__name__)


def validate_config(cfg: DictConfig) -> None:
    """Refuse inconsistent settings up front, naming what to change."""
    if cfg.mining.negatives_per_query < 1:
        raise ConfigError("mining.negatives_per_query must be >= 1")
    if cfg.data.batch_size < 1:
        raise ConfigError("data.batch_size (training tuples per step) must be >= 1")
    if cfg.monitor.split("/")[0] != "val":
        raise ConfigError(f"monitor={cfg.monitor}: choose a validation metric such as val/R@1 or val/R@5")
    n = int(cfg.monitor.split("@")[-1]) if "@" in cfg.monitor else None
    if n is not None and n not in list(cfg.model.recall_at):
        raise ConfigError(f"monitor={cfg.monitor} but model.recall_at={list(cfg.model.recall_at)} does not list {n}")


def wandb_offline_default() -> bool:
    """Offline unless an API key or a login is present (then W&B itself handles a lost network)."""
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return True
    if os.environ.get("WANDB_API_KEY"):
        return False
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return not (netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"))


def build_loggers(cfg: DictConfig) -> list[Any]:
    loggers = []
    for name, conf in (cfg.get("logger") or {}).items():
        if conf is None or "_target_" not in conf:
            continue
        kwargs: dict[str, Any] = {}
        if name == "wandb":
            if conf.get("offline") is None:
                kwargs["offline"] = wandb_offline_default()
            group, job = sweep_identity()
            if conf.get("group") is None and group:
                kwargs["group"] = group  # one W&B group per Hydra sweep
            if conf.get("name") is None:
                kwargs["name"] = "-".join(str(x) for x in (cfg.get("variant"), f"seed{cfg.seed}", job) if x)
            tags = [str(t) for t in (conf.get("tags") or [])]
            if cfg.get("variant") and str(cfg.variant) not in tags:
                kwargs["tags"] = [*tags, str(cfg.variant)]
            os.environ.setdefault("WANDB_SILENT", "true")
            Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)
        loggers.append(instantiate(conf, **kwargs))
    return loggers


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


def build_callbacks(cfg: DictConfig, with_logger: bool = True) -> list[L.Callback]:
    """The configured callbacks; those that only feed a logger are left out when there is none."""
    out = []
    for c in (cfg.get("callbacks") or {}).values():
        if c is None or "_target_" not in c:
            continue
        if not with_logger and c._target_.endswith("LearningRateMonitor"):
            continue
        out.append(instantiate(c))
    return out


def resolve_ckpt_path(ckpt_path: str | None, log_dir: str, task_name: str = "train") -> str | None:
    """``last``: the newest ``last.ckpt`` under ``<log_dir>/<task_name>``; a path must exist."""
    if ckpt_path in (None, "", "null"):
        return None
    if ckpt_path == "last":
        found = sorted(Path(log_dir, task_name).rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise ConfigError(f"ckpt_path=last: no last.ckpt under {Path(log_dir, task_name)}; train first or give a path")
        log.info("resuming from %s", found[-1])
        return str(found[-1])
    if not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path}: no such checkpoint file")
    return ckpt_path


def load_matching_weights(module: torch.nn.Module, path: str) -> None:
    """Load the parameters of checkpoint ``path`` whose names and shapes match ``module``'s."""
    if not Path(path).is_file():
        raise ConfigError(f"init_weights={path}: no such checkpoint file")
    state = torch.load(path, map_location="cpu", weights_only=False).get("state_dict", {})
    own = module.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not any(k.startswith("head.") for k in matching):
        raise ConfigError(f"init_weights={path} holds no weights for this head: was it trained with the same head and K?")
    module.load_state_dict(matching, strict=False)
    skipped = sorted({k.split(".")[0] for k in own if k not in matching})
    log.info("init_weights: %d tensors from %s; kept their initialisation: %s", len(matching), path, skipped or "none")


def print_budget(cfg: DictConfig, dm, module) -> None:
    """What the run will cost, before it starts: images per epoch, cache passes, descriptor memory."""
    split = dm.train_split
    queries = len(dm.miner.trainable_queries)
    rounds = -(-queries // int(cfg.mining.refresh_every_queries))
    dim = int(module.head.out_dim)
    per_tuple = 2 + int(cfg.mining.negatives_per_query)
    cache_images = rounds * split.num_db + queries
    cache_gb = (split.num_db + int(cfg.mining.refresh_every_queries)) * dim * 4 / 1e9
    params = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    log.info(
        "budget per epoch: %d training queries (%d dropped) in %d mining rounds; up to %d tuple images "
        "(%d per tuple) and %d cache images; descriptor %d-d, cache %.2f GB float32; %.1fM parameters "
        "(%.1fM trainable); mining margin %.3f",
        queries,
        dm.miner.dropped_queries,
        rounds,
        queries * per_tuple,
        per_tuple,
        cache_images,
        dim,
        cache_gb,
        params / 1e6,
        trainable / 1e6,
        mining_margin(cfg),
    )


def single_log_stream() -> None:
    """Lightning logs through its own console handler and Hydra's root handler: keep only Hydra's (console + file)."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).handlers.clear()


def run_training(cfg: DictConfig) -> dict[str, Any]:
    """Train (and test) as configured; returns the test results (and the untrained ones when asked)."""
    single_log_stream()
    validate_config(cfg)
    L.seed_everything(int(cfg.seed), workers=True)
    torch.set_float32_matmul_precision("high")
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out_dir / "config.yaml", resolve=True)

    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    # Test sets are read now: a missing one fails before the training, not after it.
    shared = shared_data_overrides(cfg, command_line_overrides(), trained_image_size=cfg.data.image_size)
    test_sets = prepare_test_sets(cfg, resolve_test_sets(cfg, shared))
    module = build_module(cfg)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), cfg.paths.log_dir, cfg.task_name)
    if ckpt_path is None and cfg.get("init_weights"):
        load_matching_weights(module, cfg.init_weights)
    elif ckpt_path is None:
        init_netvlad(cfg, module, dm)  # a resumed run restores the head from the checkpoint instead
    print_budget(cfg, dm, module)

    loggers = build_loggers(cfg)
    trainer: L.Trainer = instantiate(
        cfg.trainer, logger=loggers or False, callbacks=build_callbacks(cfg, with_logger=bool(loggers))
    )
    for lg in trainer.loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    results: dict[str, Any] = {}
    if cfg.get("test_untrained") and ckpt_path is None:
        trainer.test(module, datamodule=dm, verbose=False)
        results["untrained"] = module.results["test"]
        if trainer.is_global_zero:
            write_json_atomic(out_dir / "results_untrained.json", results["untrained"])

    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)

    if cfg.get("test_after_training", True) and not trainer.interrupted:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        trainer.test(module, datamodule=dm, ckpt_path=best or None, verbose=False)
        results["trained"] = module.results["test"]
        results["trained"]["checkpoint"] = best or None
        if not trainer.is_global_zero:  # every rank holds the same gathered results; one writes them
            return results
        write_json_atomic(out_dir / "results.json", results["trained"])
        columns = {k: results[k] for k in ("untrained", "trained") if k in results}
        table = format_table(columns, title="Test recall (%)")
        print("\n" + table + f"\n\nrun folder: {out_dir}\n", flush=True)
        write_text_atomic(out_dir / "results.md", table + "\n")
        picture = save_retrieval_pictures(module, dm, "test", out_dir / "pictures" / "test_retrievals.png")
        for lg in trainer.loggers:
            if picture is not None and hasattr(lg, "log_image"):
                lg.log_image(key="test/retrievals", images=[str(picture)])
    if test_sets and cfg.get("test_after_training", True) and not trainer.interrupted:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        results["test_sets"] = run_test_sets(test_sets, module, trainer, out_dir, ckpt_path=best or None,
                                             title="Test recall (%) of the trained network on the test sets")
        for lg in trainer.loggers:
            lg.log_metrics({f"test_sets/{label}/R@{n}": r for label, res in results["test_sets"].items()
                            for n, r in res["recall_at"].items()})
    return results
