"""Checkpoints: which file ``ckpt_path`` means, the run config stored in it, and partial weight loading.

train.py stores the composed run config in every checkpoint (``vpr_config``), so that eval.py rebuilds the
exact network (backbone, attention, head, loss, model settings, seed, training image size) whatever its own
command line says.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from vpr.errors import ConfigError

log = logging.getLogger(__name__)

#: Settings that define the network: taken from the checkpoint, whatever the command line says.
MODEL_KEYS = ("backbone", "attention", "head", "loss", "model", "seed")


#: What makes two training runs "the same experiment" for ``ckpt_path=last``.
RUN_IDENTITY = ("variant", "seed", "backbone", "attention", "head", "loss", "data.name", "data.image_size")


def _identity(cfg: Any) -> dict[str, Any]:
    cfg = OmegaConf.create(cfg) if not OmegaConf.is_config(cfg) else cfg
    out = {}
    for key in RUN_IDENTITY:
        value = OmegaConf.select(cfg, key)
        out[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return out


def resolve_ckpt_path(ckpt_path: str | None, log_dir: str, task_name: str = "train",
                      same_run_as: DictConfig | None = None) -> str | None:
    """``last``: the newest ``last.ckpt`` under ``<log_dir>/<task_name>`` (with ``same_run_as``: of a run whose
    saved config.yaml has the same experiment settings, :data:`RUN_IDENTITY`); a path must exist."""
    if ckpt_path in (None, "", "null"):
        return None
    if ckpt_path == "last":
        found = sorted(Path(log_dir, task_name).rglob("last.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
        if not found:
            raise ConfigError(f"ckpt_path=last: no last.ckpt under {Path(log_dir, task_name)}; train first or give a path")
        if same_run_as is not None:
            want = _identity(same_run_as)
            matching = [p for p in found if _saved_identity(p) == want]
            if not matching:
                raise ConfigError(
                    f"ckpt_path=last: none of the {len(found)} last.ckpt under {Path(log_dir, task_name)} comes from a "
                    f"run with these settings ({', '.join(RUN_IDENTITY)}); the newest is {found[0]}. Give the "
                    "checkpoint's path (ckpt_path=...) to resume it anyway."
                )
            found = matching
        chosen = _newest_intact(found)
        log.info("ckpt_path=last: %s", chosen)
        return str(chosen)
    if not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path}: no such checkpoint file")
    return ckpt_path


def _newest_intact(last_files: list[Path]) -> Path:
    """The first readable checkpoint: each run's last.ckpt, then its other checkpoints, newest first."""
    skipped = []
    for last in last_files:
        others = sorted((p for p in last.parent.glob("*.ckpt") if p != last), key=lambda p: p.stat().st_mtime,
                        reverse=True)
        for candidate in (last, *others):
            try:
                load_weights_only(str(candidate))
            except ConfigError as e:
                log.warning("ckpt_path=last: skipping %s: %s", candidate, e)
                skipped.append(str(candidate))
                continue
            if skipped:
                log.warning("ckpt_path=last: %s is unreadable; resuming from %s instead", skipped[0], candidate)
            return candidate
    raise ConfigError(f"ckpt_path=last: no readable checkpoint among {skipped}; give a path (ckpt_path=...)")


def _saved_identity(ckpt: Path) -> dict[str, Any] | None:
    """The identity of the run that wrote ``<run>/checkpoints/last.ckpt``, from ``<run>/config.yaml``."""
    try:
        return _identity(OmegaConf.load(ckpt.parent.parent / "config.yaml"))
    except Exception:  # no or unreadable config.yaml: not a run of train.py
        return None


#: Where a stored config's ``_target_`` may point: the project's own components. Anything else is refused, so a
#: checkpoint cannot make eval.py build (and run) an arbitrary callable.
TRUSTED_TARGET_PREFIXES = ("vpr.",)


def load_weights_only(path: str, setting: str = "ckpt_path") -> dict[str, Any]:
    """``torch.load`` that accepts tensors, numbers, strings and containers only, never code.

    A file holding anything else (a pickled callable, a class instance) is refused with a ConfigError, before any
    of it runs; so is a truncated or foreign file.
    """
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found is None:  # not a pickle at all (text, another format): torch's weights-only reader stopped at once
            raise ConfigError(f"{setting}={path} is not a readable checkpoint (not a torch-saved file)") from None
        raise ConfigError(
            f"{setting}={path} holds Python objects other than tensors and numbers (it refers to {found.group(1)}). "
            "The checkpoints of train.py never do: refusing to load it, since unpickling such a file can run code."
        ) from None
    except Exception as e:  # truncated, empty, not a torch file
        raise ConfigError(f"{setting}={path} is not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise ConfigError(f"{setting}={path} has no state_dict: not a Lightning checkpoint of train.py")
    if baseline_layout(state["state_dict"]):
        state = {**state, "state_dict": from_baseline_layout(state["state_dict"], f"{setting}={path}")}
        log.info("%s=%s: a checkpoint of the NetVLAD baseline's layout (encoder.* -> backbone.features.*, pool.* -> "
                 "head.*); the network comes from the command line's settings (VGG16 + NetVLAD by default)", setting,
                 path)
    return state


def _numpy_scalar_globals() -> list[Any]:
    """numpy scalars and dtypes: the public NetVLAD codes save their recalls and best score as numpy float64.
    Rebuilding them runs no code of the file's choosing."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType") and n[0].isupper()]
    return [core.multiarray.scalar, np.dtype, *dtypes]


def baseline_layout(state_dict: dict[str, Any]) -> bool:
    """True for the NetVLAD baseline's (pytorch-NetVlad) keys: ``encoder.<i>.*`` and ``pool.*``, with or without
    DataParallel's ``.module``."""
    keys = list(state_dict)
    return bool(keys) and all(k.startswith(("encoder.", "pool.")) for k in keys) and any(
        k.startswith("pool.") for k in keys)


def from_baseline_layout(state_dict: dict[str, Any], where: str) -> dict[str, Any]:
    """The baseline's state dict in this project's names: ``encoder.<i>`` is VGG16 ``features[<i>]`` (the project's
    ``backbone.features.<i>``), ``pool.conv`` / ``pool.centroids`` are NetVLAD's (``head.*``)."""
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        plain = key.replace("encoder.module.", "encoder.", 1).replace("pool.module.", "pool.", 1)
        if plain.startswith("encoder."):
            out["backbone.features." + plain[len("encoder."):]] = value
        elif plain in ("pool.conv.weight", "pool.conv.bias", "pool.centroids"):
            out["head." + plain[len("pool."):]] = value
        else:
            raise ConfigError(f"{where}: key {key!r} is not part of the NetVLAD baseline's layout (encoder.<i>.*, "
                              "pool.conv.weight, pool.conv.bias, pool.centroids)")
    if "head.centroids" not in out or "head.conv.weight" not in out:
        raise ConfigError(f"{where}: the NetVLAD baseline's layout needs pool.conv.weight and pool.centroids")
    out["head.initialised"] = torch.tensor(True)  # the centroids come from the file, not from k-means
    return out


def check_stored_targets(stored: Any, path: str, where: str = "vpr_config") -> None:
    """Every ``_target_`` in a stored config must name one of the project's components."""
    if isinstance(stored, dict):
        target = stored.get("_target_")
        if target is not None and not str(target).startswith(TRUSTED_TARGET_PREFIXES):
            raise ConfigError(
                f"checkpoint {path}: its stored config asks to build {target!r} ({where}._target_), which is not "
                f"a component of this project ({', '.join(TRUSTED_TARGET_PREFIXES)}*); refusing to build it"
            )
        for key, value in stored.items():
            check_stored_targets(value, path, f"{where}.{key}")
    elif isinstance(stored, (list, tuple)):
        for i, value in enumerate(stored):
            check_stored_targets(value, path, f"{where}[{i}]")


def read_checkpoint(path: str) -> tuple[dict[str, Any], dict | None]:
    """(the checkpoint, its stored run config or None), loaded as weights only; the network part of the stored
    config may only name the project's components."""
    state = load_weights_only(path)
    stored = state.get("vpr_config")
    if stored is not None:
        check_stored_targets({k: stored.get(k) for k in MODEL_KEYS}, path)
    return state, stored


def without_pretrained(cfg: DictConfig) -> DictConfig:
    """``cfg`` whose backbone is not loaded with pretrained weights: a checkpoint provides every weight."""
    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, False)
    cfg.backbone.pretrained = False
    cfg.backbone.weights_path = None
    return cfg


def with_stored_network(cfg: DictConfig, stored: dict, image_size_given: bool) -> DictConfig:
    """``cfg`` with the network settings of a checkpoint's stored config (and its training image size, unless the
    command line gave one). The weights come from the checkpoint: nothing is downloaded."""
    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, False)
    for key in MODEL_KEYS:
        if key in stored:
            cfg[key] = stored[key]
    cfg.backbone.pretrained = False
    cfg.backbone.weights_path = None
    if not image_size_given:
        cfg.data.image_size = stored["data"]["image_size"]
    return cfg


def load_matching_weights(module: torch.nn.Module, path: str) -> None:
    """Load the parameters of checkpoint ``path`` whose names and shapes match ``module``'s (``init_weights``)."""
    if not Path(path).is_file():
        raise ConfigError(f"init_weights={path}: no such checkpoint file")
    state = load_weights_only(path, "init_weights")["state_dict"]
    own = module.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not any(k.startswith("head.") for k in matching):
        raise ConfigError(f"init_weights={path} holds no weights for this head: was it trained with the same head and K?")
    module.load_state_dict(matching, strict=False)
    skipped = sorted({k.split(".")[0] for k in own if k not in matching})
    log.info("init_weights: %d tensors from %s; kept their initialisation: %s", len(matching), path, skipped or "none")


def load_network_weights(module: torch.nn.Module, state: dict, ckpt_path: str) -> None:
    """Load a checkpoint's ``state_dict`` strictly; a mismatch names the checkpoint and the offending keys."""
    try:
        module.load_state_dict(state["state_dict"])
    except RuntimeError as e:  # missing / unexpected keys, other shapes: the message lists them
        detail = " ".join(str(e).split())
        raise ConfigError(
            f"ckpt_path={ckpt_path}: its weights do not fit the network its stored config (or the command line) "
            f"builds: {detail[:600]}{' ...' if len(detail) > 600 else ''}"
        ) from None
