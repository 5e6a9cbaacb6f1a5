"""Checkpoints: which file ``ckpt_path`` means, the run config stored in it, and partial weight loading.

train.py stores the composed run config in every checkpoint (``vpr_config``), so that eval.py rebuilds the
exact network (backbone, attention, head, loss, model settings, seed, training image size) whatever its own
command line says.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from vpr.errors import ConfigError

log = logging.getLogger(__name__)

#: Settings that define the network: taken from the checkpoint, whatever the command line says.
MODEL_KEYS = ("backbone", "attention", "head", "loss", "model", "seed")


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


def read_checkpoint(path: str) -> tuple[dict[str, Any], dict | None]:
    """(the checkpoint, its stored run config or None)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise ConfigError(f"ckpt_path={path} is not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise ConfigError(f"ckpt_path={path} has no state_dict: not a Lightning checkpoint of train.py")
    return state, state.get("vpr_config")


def with_stored_network(cfg: DictConfig, stored: dict, image_size_given: bool) -> DictConfig:
    """``cfg`` with the network settings of a checkpoint's stored config (and its training image size, unless the
    command line gave one). The weights come from the checkpoint: nothing is downloaded."""
    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, False)
    for key in MODEL_KEYS:
        if key in stored:
            cfg[key] = stored[key]
    cfg.backbone.pretrained = False
    if not image_size_given:
        cfg.data.image_size = stored["data"]["image_size"]
    return cfg


def load_matching_weights(module: torch.nn.Module, path: str) -> None:
    """Load the parameters of checkpoint ``path`` whose names and shapes match ``module``'s (``init_weights``)."""
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
