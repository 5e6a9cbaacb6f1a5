"""Checkpoints: which file ``ckpt_path`` means, the run config stored in it, and partial weight loading.

train.py stores the composed run config in every checkpoint (``vpr_config``), so that eval.py rebuilds the
exact network (backbone, attention, head, loss, model settings, seed, training image size) whatever its own
command line says.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from vpr import released
from vpr.errors import ConfigError
from vpr.io import EARLIER_RUNS_DIR, read_weights_only

log = logging.getLogger(__name__)

#: Settings that define the network: taken from the checkpoint, whatever the command line says.
MODEL_KEYS = ("backbone", "attention", "head", "loss", "model", "seed")
#: ... except these settings of ``model``, which say how to evaluate or run it: the command line's when given.
EVALUATION_MODEL_KEYS = ("recall_at", "channels_last", "compile", "compile_backend")


#: What makes two training runs "the same experiment" for ``ckpt_path=last``.
RUN_IDENTITY = ("variant", "seed", "backbone", "attention", "head", "loss", "data.name", "data.tag", "data.image_size")


#: Settings a resumed run may give other values on its command line and still be the same run: where it runs and
#: logs, how long it trains, how it loads and evaluates. Other settings on the command line pick among the runs of
#: the same experiment (:func:`resolve_ckpt_path`).
RESUME_MAY_CHANGE = (
    "ckpt_path",
    "hydra",
    "paths",
    "logger",
    "trainer",
    "callbacks",
    "checkpoint_every_n_steps",
    "test_sets",
    "test_untrained",
    "trusted_targets",
    "data.root",
    "data.num_workers",
    "data.eval_batch_size",
    "data.persistent_workers",
)


def resume_settings(overrides: list[str]) -> list[str]:
    """The keys of ``overrides`` that tell runs of one experiment apart (``optimizer.lr``, ``mining``), in order:
    those of :data:`RUN_IDENTITY` and :data:`RESUME_MAY_CHANGE` left out."""
    out: list[str] = []
    for key in (o.lstrip("+~").split("=", 1)[0] for o in overrides):
        if key in out or key in RUN_IDENTITY or key == "experiment":
            continue
        if any(key == k or key.startswith(k + ".") or key.startswith(k + "/") for k in RESUME_MAY_CHANGE):
            continue
        out.append(key)
    return out


class NothingToResume(ConfigError):
    """``ckpt_path=last`` found no checkpoint of a run with these settings (a job of a sweep starts anew)."""


def overridden_keys(overrides: list[str]) -> set[str]:
    """The keys a command line's overrides set (``+``/``~``/``++`` prefixes dropped): {"data.image_size", "attention"}."""
    return {o.lstrip("+~").split("=", 1)[0] for o in overrides}


def _identity(cfg: Any) -> dict[str, Any]:
    return _values(cfg, list(RUN_IDENTITY))


def _values(cfg: Any, keys: list[str]) -> dict[str, Any]:
    """The values of ``keys`` in ``cfg``; a group's (``data``) without the settings a resumed run may change in it
    (``data.root``, ``data.num_workers``: :data:`RESUME_MAY_CHANGE`)."""
    cfg = OmegaConf.create(cfg) if not OmegaConf.is_config(cfg) else cfg
    out = {}
    for key in keys:
        name = key.replace("/", ".")
        value = OmegaConf.select(cfg, name)
        value = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if f"{name}.{k}" not in RESUME_MAY_CHANGE}
        out[key] = value
    return out


def _saved_values(ckpt: Path, keys: list[str]) -> dict[str, Any] | None:
    try:
        return _values(OmegaConf.load(ckpt.parent.parent / "config.yaml"), keys)
    except Exception:  # noqa: BLE001 - no or unreadable config.yaml
        return None


def _said(values: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (values or {}).items())


def resolve_ckpt_path(
    ckpt_path: str | None,
    log_dir: str,
    task_name: str = "train",
    same_run_as: DictConfig | None = None,
    require: list[str] | tuple[str, ...] = (),
    prefer: list[str] | tuple[str, ...] = (),
) -> str | None:
    """``last``: the newest ``last.ckpt`` under ``<log_dir>/<task_name>`` (with ``same_run_as``: of a run whose
    saved config.yaml has the same experiment settings, :data:`RUN_IDENTITY`); a path must exist.

    Keys such as ``optimizer.lr`` pick among the runs of the same experiment, by their saved values against
    ``same_run_as``'s: a run must agree on ``require`` (what a sweep varies: the other runs belong to its other
    jobs; none agreeing is :class:`NothingToResume`), and the newest that also agrees on ``prefer`` is taken; when
    none does, the newest of the others, with a warning naming the values it had (the command line's apply from
    there)."""
    if ckpt_path in (None, "", "null"):
        return None
    if ckpt_path == "last":
        chosen = _newest_last_checkpoint(Path(log_dir, task_name), same_run_as, require, prefer)
        log.info("ckpt_path=last: %s", chosen)
        return str(chosen)
    if Path(ckpt_path).is_dir():
        raise ConfigError(
            f"ckpt_path={ckpt_path} is a folder: give a checkpoint file in it (e.g. "
            f"{Path(ckpt_path) / 'last.ckpt'}), or ckpt_path=last for the newest run's"
        )
    if not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path}: no such checkpoint file")
    return ckpt_path


def _newest_last_checkpoint(
    folder: Path,
    same_run_as: DictConfig | None,
    require: list[str] | tuple[str, ...],
    prefer: list[str] | tuple[str, ...],
) -> Path:
    """What ``ckpt_path=last`` resumes: the newest intact ``last.ckpt`` under ``folder``, chosen among the runs like
    ``same_run_as`` as :func:`resolve_ckpt_path` says."""
    # not in hidden folders: a run folder's .earlier/ holds what earlier runs of that folder left, set aside
    found = [p for p in folder.rglob("last.ckpt") if not any(x.startswith(".") for x in p.relative_to(folder).parts)]
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    if not found:
        raise NothingToResume(
            _with_set_aside(f"ckpt_path=last: no last.ckpt under {folder}; train first or give a path", folder)
        )
    if same_run_as is not None:
        want = _identity(same_run_as)
        matching = [p for p in found if _saved_identity(p) == want]
        if not matching:
            raise NothingToResume(
                _with_set_aside(
                    f"ckpt_path=last: none of the {len(found)} last.ckpt under {folder} comes from a "
                    f"run with these settings ({', '.join(RUN_IDENTITY)}); the newest is {found[0]}. Give the "
                    "checkpoint's path (ckpt_path=...) to resume it anyway.",
                    folder,
                )
            )
        found = matching
        if require:
            keys = list(require)
            want_values = _values(same_run_as, keys)
            found = [p for p in found if _saved_values(p, keys) == want_values]
            if not found:
                raise NothingToResume(
                    _with_set_aside(
                        f"ckpt_path=last: no last.ckpt under {folder} comes from a run with these "
                        f"settings and {_said(want_values)} (the sweep's other jobs own the rest)",
                        folder,
                    )
                )
        keys = [k for k in prefer if k not in require]
        if keys:
            want_values = _values(same_run_as, keys)
            agreeing = [p for p in found if _saved_values(p, keys) == want_values]
            if agreeing:
                found = agreeing
            else:
                log.warning(
                    "ckpt_path=last: no run of these settings has %s; resuming the newest, %s, which had %s: "
                    "the command line's values apply from here",
                    _said(want_values),
                    found[0],
                    _said(_saved_values(found[0], keys)),
                )
    return _newest_intact(found)


def _with_set_aside(message: str, folder: Path) -> str:
    """``message``, the error of ``ckpt_path=last``, with what it leaves out: the ``last.ckpt`` files a new run in
    an earlier run's folder set aside (``<run>/.earlier/<time>/checkpoints/``), newest first, and the setting
    that resumes one."""
    aside = [p for p in folder.rglob("last.ckpt") if EARLIER_RUNS_DIR in p.relative_to(folder).parts[:-1]]
    if not aside:
        return message
    aside.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    listed = ", ".join(str(p) for p in aside[:3]) + (f" and {len(aside) - 3} more" if len(aside) > 3 else "")
    return (
        f"{message.rstrip('.')}. Set aside in {EARLIER_RUNS_DIR}/ by a new run in their folder, and so not resumed "
        f"by ckpt_path=last: {listed}; resume one with its path, e.g. ckpt_path={aside[0]} (its checkpoints then "
        "continue in that folder)"
    )


def _newest_intact(last_files: list[Path]) -> Path:
    """The first readable checkpoint: each run's last.ckpt, then its other checkpoints, newest first."""
    skipped = []
    for last in last_files:
        others = sorted(
            (p for p in last.parent.glob("*.ckpt") if p != last), key=lambda p: p.stat().st_mtime, reverse=True
        )
        for candidate in (last, *others):
            try:
                load_weights_only(str(candidate))
            except ConfigError as e:
                log.warning("ckpt_path=last: skipping %s (%s)", candidate, str(e).split(": ", 1)[-1])
                skipped.append(str(candidate))
                continue
            if skipped:
                log.warning("ckpt_path=last: %s is unreadable; taking %s instead", skipped[0], candidate)
            return candidate
    raise ConfigError(f"ckpt_path=last: no readable checkpoint among {skipped}; give a path (ckpt_path=...)")


def _saved_identity(ckpt: Path) -> dict[str, Any] | None:
    """The identity of the run that wrote ``<run>/checkpoints/last.ckpt``, from ``<run>/config.yaml``."""
    return _saved_values(ckpt, list(RUN_IDENTITY))


def identity_differences(stored: Any, cfg: Any) -> list[str]:
    """The settings of :data:`RUN_IDENTITY` on which a checkpoint's stored run config (``vpr_config``) and ``cfg``
    differ, a component's one by one (``loss._target_ (vpr.losses.TripletMarginLoss in the checkpoint,
    vpr.losses.SharpenedTripletMarginLoss here)``)."""
    if not stored:
        return []
    keys = list(RUN_IDENTITY)
    theirs, ours = _values(stored, keys), _values(cfg, keys)
    out = []
    for key in keys:
        a, b = theirs[key], ours[key]
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += [
                f"{key}.{k} ({a.get(k, 'unset')} in the checkpoint, {b.get(k, 'unset')} here)"
                for k in sorted({*a, *b}, key=lambda k: (k != "_target_", k))
                if a.get(k) != b.get(k)
            ]
        else:
            out.append(f"{key} ({a} in the checkpoint, {b} here)")
    return out


#: Where a stored config's ``_target_`` may point: the project's own components, and the packages the setting
#: ``trusted_targets`` names. Anything else is refused, so a checkpoint cannot make eval.py build (and run) an
#: arbitrary callable.
TRUSTED_TARGET_PREFIXES = ("vpr.",)

#: The stored settings a checkpoint's network is built from. The loss is stored too but never built from a
#: checkpoint (evaluation has none; a resumed run builds the command line's).
BUILT_FROM_CHECKPOINT = tuple(k for k in MODEL_KEYS if k != "loss")


def trusted_prefixes(trusted: Any) -> tuple[str, ...]:
    """``vpr.`` and the packages of the ``trusted_targets`` setting (``[myvpr]`` or ``[myvpr.]``: its modules)."""
    if trusted is None:
        return TRUSTED_TARGET_PREFIXES
    if isinstance(trusted, str) or not all(isinstance(t, str) and t.strip(". ") for t in trusted):
        raise ConfigError(f"trusted_targets={trusted}: a list of package names, e.g. trusted_targets=[myvpr]")
    return TRUSTED_TARGET_PREFIXES + tuple(t.strip().rstrip(".") + "." for t in trusted)


def _bare_released_state_dict(state: Any) -> bool:
    """Whether ``state`` is a state dict of the NetVLAD baseline's or the paper code's layout saved by itself: only
    tensors, by name, with no ``state_dict`` entry."""
    return (
        isinstance(state, dict)
        and "state_dict" not in state
        and bool(state)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
        and released.detect(state) is not None
    )


def load_weights_only(path: str, setting: str = "ckpt_path", ckpt_format: str = "auto") -> dict[str, Any]:
    """``torch.load`` that accepts tensors, numbers, strings and containers only, never code.

    A file holding anything else (a pickled callable, a class instance) is refused with a ConfigError, before any
    of it runs; so is a truncated or foreign file. A checkpoint of the NetVLAD baseline or of the paper code
    (:mod:`vpr.released`) comes back with its ``state_dict`` in this project's names and ``released`` (what was
    converted, and the network settings that reproduce its forward pass). ``ckpt_format`` (auto, lightning,
    netvlad_baseline, paper) refuses a file of another layout.
    """
    state = read_weights_only(path, f"{setting}={path}", "checkpoint", " The checkpoints of train.py never do.")
    if _bare_released_state_dict(state):
        # torch.save(model.state_dict()): the tensors of a released layout without the dict around them
        log.info("%s=%s holds a state dict alone (no 'state_dict' entry): read as the network's tensors", setting, path)
        state = {"state_dict": state}
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise ConfigError(
            f"{setting}={path} has no state_dict: neither a checkpoint of train.py nor one of the NetVLAD "
            "baseline or the paper code"
        )
    layout = released.detect(state["state_dict"])
    if ckpt_format not in released.FORMATS:
        raise ConfigError(f"ckpt_format={ckpt_format}: choose one of {', '.join(released.FORMATS)}")
    if ckpt_format == "lightning" and layout is not None:
        raise ConfigError(
            f"{setting}={path} is in {layout}'s layout, not a checkpoint of train.py: "
            f"use ckpt_format=auto (or {layout})"
        )
    if ckpt_format in ("netvlad_baseline", "paper") and layout is None:
        raise ConfigError(
            f"{setting}={path}: ckpt_format={ckpt_format}, but its state_dict has no encoder.* and pool.* "
            "keys (the layout of the NetVLAD baseline and the paper code)"
        )
    if ckpt_format == "netvlad_baseline" and layout == "paper":
        raise ConfigError(
            f"{setting}={path}: ckpt_format=netvlad_baseline, but it holds attention modules of the paper "
            "code: use ckpt_format=paper (or auto)"
        )
    if layout is not None:
        converted = released.convert(state["state_dict"], f"{setting}={path}")
        state = {**state, "state_dict": converted.network, "released": converted}
        log.info("%s=%s: a checkpoint in %s", setting, path, converted.describe())
        if converted.dropped:
            log.info(
                "%s=%s: %d tensors of layers that code builds but never runs are not loaded (%s, ...)",
                setting,
                path,
                len(converted.dropped),
                converted.dropped[0],
            )
    return state


def check_stored_targets(
    stored: Any, path: str, where: str = "vpr_config", trusted: tuple[str, ...] = TRUSTED_TARGET_PREFIXES
) -> None:
    """Every ``_target_`` in a stored config must name one of the project's components (or a trusted package's)."""
    if isinstance(stored, dict):
        target = stored.get("_target_")
        if target is not None and not str(target).startswith(trusted):
            package = str(target).split(".")[0]
            raise ConfigError(
                f"checkpoint {path}: its stored config asks to build {target!r} ({where}._target_), which is not "
                f"a component of this project or of a trusted package ({', '.join(t + '*' for t in trusted)}); "
                f"refusing to build it. If {package} is your own code, trust it: trusted_targets=[{package}]"
            )
        for key, value in stored.items():
            check_stored_targets(value, path, f"{where}.{key}", trusted)
    elif isinstance(stored, (list, tuple)):
        for i, value in enumerate(stored):
            check_stored_targets(value, path, f"{where}[{i}]", trusted)


def read_checkpoint(path: str, ckpt_format: str = "auto", trusted: Any = None) -> tuple[dict[str, Any], dict | None]:
    """(the checkpoint, its stored run config or None), loaded as weights only; the network part of the stored
    config may only name the project's components and those of the packages in ``trusted`` (the
    ``trusted_targets`` setting)."""
    prefixes = trusted_prefixes(trusted)
    state = load_weights_only(path, ckpt_format=ckpt_format)
    stored = state.get("vpr_config")
    if stored is not None:
        check_stored_targets({k: stored.get(k) for k in BUILT_FROM_CHECKPOINT}, path, trusted=prefixes)
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
    if cfg.get("variant") is None and stored.get("variant"):
        cfg.variant = stored["variant"]  # the row of a results table that evaluates several checkpoints
    if not image_size_given:
        cfg.data.image_size = stored["data"]["image_size"]
    return cfg


def _chooses_data(overrides: list[str]) -> bool:
    """Whether a command line chooses the data: ``data=<dataset>``, its name, tag or the city's preparation."""
    which_data = ("data.name", "data.tag", "data.prepare")
    return any(k == "data" or k == d or k.startswith(d + ".") for k in overridden_keys(overrides) for d in which_data)


def with_trained_data(cfg: DictConfig, stored: dict | None, overrides: list[str]) -> DictConfig:
    """``cfg`` whose data is the one the checkpoint was trained on, unless ``overrides`` choose the data (the config
    :func:`vpr.api.load_model` returns, not the default city): a synthetic city is that city (its preset and seed)
    on this machine, as eval.py takes it; another dataset is its stored settings, at the ``data.root`` it was
    trained from unless the overrides give one. The image size stays the one the network is built for. A file
    without a stored config (a released one) keeps the composed data."""
    trained = (stored or {}).get("data")
    if not trained or _chooses_data(overrides):
        return cfg
    if (
        trained.get("name") == cfg.data.get("name")
        and cfg.data.get("prepare")
        and "preset" in (trained.get("prepare") or {})
    ):
        cfg = cfg.copy()
        OmegaConf.set_struct(cfg, False)
        cfg.data.prepare.preset = trained["prepare"]["preset"]
        cfg.data.prepare.seed = trained["prepare"].get("seed", cfg.data.prepare.seed)
        return cfg
    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, False)
    size, root = cfg.data.image_size, cfg.data.get("root")
    cfg.data = trained
    cfg.data.image_size = size
    if "data.root" in overridden_keys(overrides):
        cfg.data.root = root
    return cfg


def with_checkpoint_city(cfg: DictConfig, stored: dict | None, overrides: list[str]) -> DictConfig:
    """eval.py of a checkpoint trained on a synthetic city, with no data setting on the command line but perhaps
    ``data.root`` (where that city is on this machine): the city it was trained on (its preset and seed), not the
    default one. A real dataset's root is a path of the machine that trained, so only the city is taken over."""
    trained = (stored or {}).get("data") or {}
    prepare = trained.get("prepare") or {}
    chosen = overridden_keys(overrides)
    data_chosen = _chooses_data(overrides)
    elsewhere = data_chosen or bool(chosen & {"experiment", "test_sets"})  # data chosen, or tested on other sets
    if not elsewhere and trained.get("name") and trained.get("name") != cfg.data.get("name"):
        log.warning(
            "the checkpoint was trained on %s, but the command line chooses no data: evaluating on %s, the default "
            "(data=<dataset> or test_sets=[...] for another)",
            trained.get("name"),
            cfg.data.get("name"),
        )
    if (
        data_chosen
        or trained.get("name") != cfg.data.get("name")
        or not cfg.data.get("prepare")
        or "preset" not in prepare
    ):
        return cfg
    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, False)
    cfg.data.prepare.preset, cfg.data.prepare.seed = prepare["preset"], prepare.get("seed", cfg.data.prepare.seed)
    log.info(
        "the checkpoint was trained on the %s city (seed %s): evaluating there (data.prepare.preset=... for another)",
        cfg.data.prepare.preset,
        cfg.data.prepare.seed,
    )
    return cfg


def network_from_checkpoint(
    cfg: DictConfig, state: dict, stored: dict | None, ckpt_path: str, overrides: list[str]
) -> DictConfig:
    """``cfg`` whose network is the checkpoint's: its stored config (train.py), the settings that reproduce a
    released file's code (:mod:`vpr.released`), or else the command line's; never pretrained weights."""
    if stored is not None:
        size_given = "data.image_size" in overridden_keys(overrides)
        ignored = sorted(
            k
            for k in overridden_keys(overrides)
            if k.split(".")[0] in ("backbone", "attention", "head")
            or (k.startswith("model.") and k.split(".")[1] not in EVALUATION_MODEL_KEYS)
        )
        if ignored:
            log.warning(
                "%s stores its network: %s on the command line %s not used (the network is the one it was trained "
                "as; init_weights= in train.py builds another network from its weights)",
                ckpt_path,
                ", ".join(ignored),
                "is" if len(ignored) == 1 else "are",
            )
        network = with_stored_network(cfg, stored, size_given)
        for key in EVALUATION_MODEL_KEYS:  # how to evaluate, not what the network is: the command line's
            if f"model.{key}" in overridden_keys(overrides):
                network.model[key] = cfg.model[key]
        return network
    if state.get("released") is not None:
        cfg = with_released_network(cfg, state["released"], overrides)
    else:
        log.warning("%s stores no vpr config: the network is built from the command line's settings", ckpt_path)
    return without_pretrained(cfg)


def with_released_network(cfg: DictConfig, converted: released.Converted, overrides: list[str]) -> DictConfig:
    """``cfg`` with the network of a released checkpoint: NetVLAD's K and version from its tensors, and (for the
    paper code's files) the attention that reproduces that code's forward pass, unless the command line chose an
    attention itself (``attention=...``: the file's attention tensors then go to the modules of the same class)."""
    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, False)
    given = overridden_keys(overrides)
    unused = [
        f"{key}={value} (the file's: {read})"
        for key, value, read in (
            ("model.num_clusters", cfg.model.get("num_clusters"), converted.head_settings["num_clusters"]),
            ("head.version", cfg.head.get("version"), converted.head_settings["version"]),
        )
        if key in given and str(value) != str(read)
    ]
    if unused:
        log.warning(
            "a released file's NetVLAD is read from its tensors: %s on the command line not used", "; ".join(unused)
        )
    cfg.model.num_clusters = converted.head_settings["num_clusters"]
    if "version" in cfg.head:
        cfg.head.version = converted.head_settings["version"]
    chose_attention = any(k == "attention" or k.startswith("attention.") for k in overridden_keys(overrides))
    if converted.attention_config is not None and not chose_attention:
        cfg.attention = converted.attention_config
        log.info(
            "the file's attention is built with the settings that reproduce its code's forward pass: %s",
            OmegaConf.to_yaml(cfg.attention).strip().replace("\n", "; "),
        )
    elif converted.layout == "netvlad_baseline" and not chose_attention:
        cfg.attention = {"_target_": "vpr.models.attention.base.Identity"}
    return cfg


def _with_released_attention(module: torch.nn.Module, state: dict, where: str, strict: bool) -> dict[str, Any]:
    """The checkpoint's state dict plus, for a paper code file, its attention tensors under ``module``'s names."""
    converted = state.get("released")
    weights = dict(state["state_dict"])
    if converted is None or not converted.attention:
        return weights
    placed, missing = released.place_attention(converted, module)
    if missing and strict:
        raise ConfigError(
            f"{where}: holds the paper code's {', '.join(missing)} module(s), but this network's attention "
            f"({type(module.attention).__name__}) has no such module; leave attention= out so that the "
            "file's own is built"
        )
    if missing:
        log.info(
            "%s: the paper code's %s module(s) have no counterpart in this network's attention: not loaded",
            where,
            ", ".join(missing),
        )
    weights.update(placed)
    return weights


def load_matching_weights(module: torch.nn.Module, path: str) -> None:
    """Load the parameters of checkpoint ``path`` whose names and shapes match ``module``'s (``init_weights``)."""
    if not Path(path).is_file():
        raise ConfigError(f"init_weights={path}: no such checkpoint file")
    state = _with_released_attention(
        module, load_weights_only(path, "init_weights"), f"init_weights={path}", strict=False
    )
    own = module.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not any(k.startswith("head.") for k in matching):
        raise ConfigError(
            f"init_weights={path} holds no weights for this head: was it trained with the same head and K?"
        )
    module.load_state_dict(matching, strict=False)
    skipped = sorted({k.split(".")[0] for k in own if k not in matching})
    log.info("init_weights: %d tensors from %s; kept their initialisation: %s", len(matching), path, skipped or "none")


def load_network_weights(module: torch.nn.Module, state: dict, ckpt_path: str) -> None:
    """Load a checkpoint's ``state_dict`` strictly; a mismatch names the checkpoint and the offending keys."""
    weights = _with_released_attention(module, state, f"ckpt_path={ckpt_path}", strict=True)
    converted = state.get("released")
    problems = weight_mismatches(module.state_dict(), weights, converted.origin if converted else {})
    if problems:
        shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
        raise ConfigError(
            f"ckpt_path={ckpt_path}: its weights do not fit the network its stored config (or the "
            f"command line) builds: {shown}"
        )
    module.load_state_dict(weights)


def weight_mismatches(own: dict[str, torch.Tensor], weights: dict[str, Any], origin: dict[str, str]) -> list[str]:
    """What keeps ``weights`` from loading strictly into a network whose state dict is ``own``, each named by the
    file's own key (``origin``: a released file's key of each converted name), the network's name beside it."""

    def name(key: str) -> str:  # a key the file has
        return f"{origin[key]} (this network's {key})" if key in origin and origin[key] != key else key

    def missing(key: str) -> str:  # a key the file lacks, as a released file would name it (VGG16 features, NetVLAD)
        for prefix, file_prefix in (("backbone.features.", "encoder."), ("head.", "pool.")):
            if origin and key.startswith(prefix):
                return f"{file_prefix}{key[len(prefix) :]} (this network's {key})"
        return key

    problems = [
        f"{name(k)} has shape {tuple(v.shape)}, the network's is {tuple(own[k].shape)}"
        for k, v in weights.items()
        if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)
    ]
    problems += [f"missing from the file: {missing(k)}" for k in own if k not in weights]
    problems += [f"not in this network: {name(k)}" for k in weights if k not in own]
    return problems


#: The released files (the NetVLAD baseline's, the paper code's) were trained on Pittsburgh's full 640x480 images.
RELEASED_IMAGE_SIZE = (480, 640)


def network_of_checkpoint(
    cfg: DictConfig,
    ckpt_path: str,
    overrides: list[str],
    device: str | torch.device | None = None,
    trained_data: bool = False,
) -> tuple[torch.nn.Module, DictConfig]:
    """(the checkpoint's network with its weights, in eval mode on ``device`` (None: this process's GPU when there
    is one), the config it was built from): what retrieve.py and :func:`vpr.api.load_model` encode with. A
    released file stores no image size: its images are taken at the Pittsburgh size it was trained at, unless
    ``overrides`` set ``data.image_size``. ``trained_data``: the config's data is the one the checkpoint was
    trained on (:func:`with_trained_data`)."""
    from vpr.build import build_module
    from vpr.devices import work_device

    state, stored = read_checkpoint(ckpt_path, str(cfg.get("ckpt_format") or "auto"), cfg.get("trusted_targets"))
    cfg = network_from_checkpoint(cfg, state, stored, ckpt_path, overrides)
    if trained_data:
        cfg = with_trained_data(cfg, stored, overrides)
    if stored is None and state.get("released") is not None and "data.image_size" not in overridden_keys(overrides):
        cfg.data.image_size = list(RELEASED_IMAGE_SIZE)
        log.info(
            "%s is a released file, which stores no image size: images at %dx%d, the Pittsburgh size it was "
            "trained at (data.image_size=[H,W] to change)",
            ckpt_path,
            *RELEASED_IMAGE_SIZE,
        )
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    module = build_module(cfg, with_training=False)
    load_network_weights(module, state, ckpt_path)
    module.to(device if device is not None else work_device(cfg.get("trainer"))).eval()
    module.apply_memory_format()
    return module, cfg
