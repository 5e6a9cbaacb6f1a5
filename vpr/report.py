"""The paper's results table from a Hydra multirun folder: mean ± std of Recall@N per model over seeds.

``python -m vpr.report DIR [--out OUT.md] [--plot OUT.png] [--metric-split test] [--untrained]``

DIR is searched recursively; every folder holding ``results.json`` or ``results_sets.json`` is one run, described
by the ``config.yaml`` next to it (or Hydra's ``.hydra/config.yaml``)::

    DIR/multirun.yaml                           Hydra's (not needed)
    DIR/<job_num>_<variant>_seed<seed>/config.yaml      variant, seed, data.name
    DIR/<job_num>_<variant>_seed<seed>/.hydra/overrides.yaml   the job's command line: [experiment=..., seed=1]
    DIR/<job_num>_<variant>_seed<seed>/results.json     {"dataset", "split", "recall_at": {"1": 0.42, ...}}
    DIR/<job_num>_<variant>_seed<seed>/results_untrained.json   optional, same shape

A job with ``test_sets`` writes ``results_sets.json`` (one results.json-shaped entry per set): eval.py instead of
``results.json``, train.py beside it (its own test split stays in ``results.json``). The own test split is the first
table, each set a table of its own after it; ``recall_curves.png`` (``--plot``) has a panel per table, titled with
its set and dataset/split.

A job folder (one holding ``config.yaml`` or ``.hydra/``) with neither file is a failed or unfinished
job: it is listed under the table as ``missing: <folder>``, followed by ``(failed: <error>)`` when its log
(``train.log``, ``eval.log``) ends with the script's error. Each row says which dataset/split its numbers
come from ("mixed" when its runs disagree), because a val number next to a test number means nothing.

A row is one model over its seeds: its variant and the job's command-line settings (``.hydra/overrides.yaml``)
that differ between runs of that variant, named after it (``baseline (optimizer.lr=0.1)``); a job whose command
line left such a setting at its default counts with the value its ``config.yaml`` (or, for a config group, its
``.hydra/hydra.yaml`` choice) records, so sweeps read together give one row per model. Settings that do not
change the recipe (:data:`IGNORED_SETTINGS`: ``seed``, ``ckpt_path``, ``hydra.*``, ``paths.*``,
``data.root``, ``logger``, ``data.num_workers``, ...) are left out; a city's ``data.prepare.preset`` counts without
its occlusion level, which has a column of its own. ΔR@1 compares a row with the baseline row of the same
settings where there are several baseline rows. An eval.py job of a checkpoint takes the training job's settings
(and its own on top, pca_dim and the like): that job's folder is the one above the checkpoint's ``checkpoints/``
(results.json's ``checkpoint``), where its ``.hydra/overrides.yaml`` is; its variant and seed are in the eval job's
``config.yaml``, which eval.py copies from the checkpoint (the training's other settings are not recorded there).

The variant of a run is ``variant`` in its config; without it, Hydra's ``experiment`` choice (from
``.hydra/hydra.yaml`` or ``.hydra/overrides.yaml``); without that, the config's ``task_name`` (``train``) when the
settings are known, else the folder name minus the job number (``train_seed1``). A run whose settings are not
known (no ``.hydra/overrides.yaml``, or an eval.py job whose checkpoint's training folder is gone) is grouped by
its variant alone.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vpr.eval.tables import markdown_table
from vpr.io import write_text_atomic

# The paper's order; anything else follows alphabetically.
VARIANT_ORDER: tuple[str, ...] = (
    "baseline",
    "baseline_stml",
    "crn",
    "bam",
    "cbam",
    "se",
    "deattention",
    "deattention_features",
    "deattention_se",
    "deattention_stml",
)
# Columns shown whenever at least one run has them, even if not every run does.
ALWAYS_SHOWN: tuple[int, ...] = (1, 5, 10)
# Folders that belong to a run's loggers, never runs themselves (wandb keeps its own config.yaml).
SKIPPED_DIRS: frozenset[str] = frozenset({"wandb", "csv", "tensorboard", "lightning_logs", "checkpoints"})
SWEEP_HINT = "python train.py -m experiment=city_baseline seed=1,2,3"
# Command-line settings (``.hydra/overrides.yaml``) that never tell two models apart: left out of a row's settings.
# A key stands for itself and everything below it (``hydra`` for ``hydra.launcher.partition``, ``hydra/launcher``).
IGNORED_SETTINGS: tuple[str, ...] = (
    "seed",  # what a row averages over
    "variant",  # the row's name already
    "ckpt_path",  # resuming (ckpt_path=last), or eval.py's checkpoint: its training run's settings count instead
    "hydra",  # the launcher, the sweep's folders
    "paths",  # where data and outputs are
    "data.root",
    "logger",  # where the numbers are logged
    "tags",
    "data.num_workers",  # loader processes
    "data.eval_batch_size",  # images per encoding step (eval mode: the same descriptors)
    "model.channels_last",  # how the network runs, not what it is (checkpoints.EVALUATION_MODEL_KEYS)
    "model.compile",
    "model.compile_backend",
    "model.recall_at",  # which N are measured, not their values
    "test_sets",  # tables of their own; the own test split is not affected
    "test_untrained",
    "test_after_training",
    "checkpoint_every_n_steps",  # when last.ckpt is written
    "trusted_targets",  # what a checkpoint may build
    "ckpt_format",
)
# Not left out: trainer.devices (under DDP each rank trains on batches of its own: another training), trainer=... and
# everything else a run's numbers may depend on.


@dataclass(frozen=True)
class Run:
    """One finished job. recall_at: N -> recall as a fraction in [0, 1]."""

    variant: str
    seed: int | None
    dataset: str
    split: str
    recall_at: dict[int, float]
    path: Path
    untrained: Run | None = None  # the same job's results_untrained.json, when it wrote one
    mask_auc: float | None = None  # the supervised attention mask's ROC-AUC (results.json "mask"), when measured
    occlusion: str | None = None  # the synthetic city's query occlusion level (low / medium / high); None: not the city
    test_set: str | None = None  # the label of one of eval.py's test_sets (results_sets.json); None: results.json
    # The command-line settings of the run that trained the network (.hydra/overrides.yaml, less IGNORED_SETTINGS),
    # (key, value) sorted by key; None: not known (no .hydra/overrides.yaml), the run is grouped by variant alone.
    settings: tuple[tuple[str, str], ...] | None = None
    # The job folder whose config.yaml (and .hydra/hydra.yaml) hold the values of the run's settings where its command
    # line left them at their defaults; None: not known (an eval.py job of a checkpoint: the training job's config
    # and its own disagree on whose a setting is).
    config_dir: Path | None = None

    @property
    def split_label(self) -> str:
        return f"{self.dataset}/{self.split}"


@dataclass(frozen=True)
class Row:
    """One variant summarised over its runs; recalls in percent. std is NaN where fewer than two runs have N."""

    variant: str
    runs: int
    split: str  # "dataset/split", or "mixed" when the runs disagree
    splits: tuple[str, ...]  # every distinct "dataset/split" among the runs, sorted
    mean_pct: dict[int, float]
    std_pct: dict[int, float]
    count: dict[int, int]  # runs that reported each N
    seeds: tuple[int | None, ...]
    paths: tuple[Path, ...]
    mask_auc: tuple[float, ...] = ()  # of the runs that measured their mask
    occlusion: str | None = None
    # The settings that tell this row from other rows of its variant: (key, value), value None where the row's runs
    # did not give the key on the command line and their config does not say its value.
    settings: tuple[tuple[str, str | None], ...] = ()

    @property
    def label(self) -> str:
        """The variant, and the settings that tell it from the variant's other rows: ``baseline (optimizer.lr=0.1)``."""
        if not self.settings:
            return self.variant
        parts = [f"{k}={v}" if v is not None else f"{k} not given" for k, v in self.settings]
        return f"{self.variant} ({', '.join(parts)})"


@dataclass
class Scan:
    """What a multirun folder holds: readable runs, job folders without results, results that could not be read."""

    root: Path
    runs: list[Run] = field(default_factory=list)
    missing: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    # Of the missing jobs, those whose log ends in an error: the error's text (the job's own ``error:`` line).
    failed: dict[Path, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------- reading


def _load_yaml(path: Path) -> Any:
    from omegaconf import OmegaConf

    # resolve=False: Hydra's .hydra/*.yaml keep ${...} interpolations that cannot be resolved outside the run.
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def _load_json(path: Path) -> Any:
    import json

    with open(path) as f:
        return json.load(f)


def _plain(value: Any) -> str | None:
    """A usable string setting, or None for absent / empty / unresolved interpolations."""
    if value is None:
        return None
    text = str(value).strip()
    return text if text and "${" not in text else None


def _job_config(run_dir: Path) -> dict[str, Any]:
    for candidate in (run_dir / "config.yaml", run_dir / ".hydra" / "config.yaml"):
        if candidate.is_file():
            cfg = _load_yaml(candidate)
            return cfg if isinstance(cfg, dict) else {}
    return {}


def _experiment_choice(run_dir: Path) -> str | None:
    hydra_yaml = run_dir / ".hydra" / "hydra.yaml"
    if hydra_yaml.is_file():
        try:
            choice = _load_yaml(hydra_yaml)["hydra"]["runtime"]["choices"].get("experiment")
        except Exception:  # a damaged hydra.yaml only costs us this fallback
            choice = None
        if _plain(choice):
            return _plain(choice)
    overrides = run_dir / ".hydra" / "overrides.yaml"
    if overrides.is_file():
        try:
            items = _load_yaml(overrides)
        except Exception:
            items = []
        for item in items or []:
            key, _, value = str(item).lstrip("+~").partition("=")
            if key == "experiment" and _plain(value):
                return _plain(value)
    return None


def _folder_variant(run_dir: Path) -> str:
    # Hydra names sweep jobs "<job_num>_<override_dirname>"; the number is not part of the variant.
    stripped = re.sub(r"^\d+_", "", run_dir.name)
    return stripped or run_dir.name


def _overrides(run_dir: Path) -> list[str] | None:
    """The job's command-line overrides (Hydra's ``.hydra/overrides.yaml``, a list of ``key=value``); None where
    there is no such file or it is not such a list."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    try:
        items = _load_yaml(path)
    except Exception:  # a damaged file: the settings are not known, as without one
        return None
    return [str(item) for item in items] if isinstance(items, list) else None


def _ignored(key: str) -> bool:
    key = key.lstrip("~")
    return any(key == k or key.startswith((k + ".", k + "/")) for k in IGNORED_SETTINGS)


def _setting_value(key: str, value: str) -> str:
    """A value as a key of the table: numbers in one spelling (1e-3 and 0.001 are the same setting), a city's
    preset without its occlusion level (the occlusion column holds that)."""
    value = value.strip()
    if key == "data.prepare.preset":
        return value.partition("-occlusion-")[0]
    if value.lower() in ("true", "false", "null"):
        return value.lower()
    if value.startswith("[") and value.endswith("]"):
        items = [v.strip() for v in value[1:-1].split(",")] if value[1:-1].strip() else []
        if all(items) and not any(c in value[1:-1] for c in "[]{}'\""):
            return "[" + ",".join(_setting_value(key, v) for v in items) + "]"
        return value
    try:
        return str(int(value))
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        return value
    return repr(number) if math.isfinite(number) else value


def _config_value(key: str, value: Any) -> str | None:
    """A resolved config value as :func:`_setting_value` spells the same value given on a command line; None for what
    a command line's ``key=value`` does not give (a mapping, an interpolation left unresolved)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return _setting_value(key, repr(value))
    if isinstance(value, str):
        return _setting_value(key, value) if "${" not in value else None
    if isinstance(value, list):
        items = [_config_value(key, v) for v in value]
        return "[" + ",".join(items) + "]" if all(i is not None and "," not in i for i in items) else None
    return None


def _default_setting(config_dir: Path, key: str) -> str | None:
    """The value a job had for a setting its command line did not give (the config's default): the config group
    option chosen (``.hydra/hydra.yaml``'s choices: ``optimizer=sgd``) for a group, else the value in the job's
    resolved ``config.yaml`` (``optimizer.lr=0.001``); None where neither says."""
    hydra_yaml = config_dir / ".hydra" / "hydra.yaml"
    if hydra_yaml.is_file():
        try:
            choices = _load_yaml(hydra_yaml)["hydra"]["runtime"]["choices"]
        except Exception:  # no choices there: the config's value below
            choices = {}
        if isinstance(choices, dict) and key in choices:
            return _plain(choices[key])
    value: Any = _job_config(config_dir)
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return _config_value(key, value)


def _settings(overrides: Sequence[str]) -> dict[str, str]:
    """``key=value`` overrides as {key: value}, less :data:`IGNORED_SETTINGS` (``+``/``++`` dropped from keys)."""
    out = {}
    for item in overrides:
        key, _, value = item.partition("=")
        key = key.strip().lstrip("+")
        if key and not _ignored(key):
            out[key] = _setting_value(key, value)
    return out


def _training_dir(run_dir: Path, cfg: dict[str, Any], checkpoint: Any) -> Path | None:
    """For an eval.py job: the job folder of the training run that wrote its checkpoint (``<job>/checkpoints/*.ckpt``,
    as train.py saves them), when it is still there; None otherwise."""
    if cfg.get("task_name") != "eval" or not _plain(checkpoint):
        return None
    folder = Path(str(checkpoint)).parent.parent
    try:
        if folder.resolve() == run_dir.resolve():
            return None
    except OSError:
        return None
    return folder if (folder / "config.yaml").is_file() or (folder / ".hydra").is_dir() else None


def _seed(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    return None


def _identity(
    run_dir: Path, cfg: dict[str, Any], checkpoint: Any
) -> tuple[str, int | None, dict[str, str] | None, Path | None]:
    """(variant, seed, settings) of a job. An eval.py job of a checkpoint takes the training run's: its variant and
    seed are in the job's config (eval.py records the checkpoint's), its command-line settings in the training job's
    ``.hydra/overrides.yaml`` (with the eval job's own on top: pca_dim, data, ...). Settings are None where the
    training run's overrides are not known; the variant then falls back as the module docstring says. Last, the
    folder whose config holds the values of settings the command line did not give (:attr:`Run.config_dir`)."""
    seed = _seed(cfg.get("seed"))
    source = _training_dir(run_dir, cfg, checkpoint) or run_dir
    source_cfg = cfg if source == run_dir else _job_config(source)
    trained = _overrides(source)
    settings = None
    if trained is not None:
        settings = _settings(trained)
        if source != run_dir:
            settings.update(_settings(_overrides(run_dir) or []))
    if seed is None:
        seed = _seed(source_cfg.get("seed"))
    variant = _plain(cfg.get("variant")) or _plain(source_cfg.get("variant")) or _experiment_choice(source)
    if variant is None and source == run_dir and cfg.get("task_name") == "eval" and _plain(checkpoint):
        # A released file (no run of train.py behind it, no variant): the file is the model, one row each.
        path = Path(str(checkpoint))
        settings = {**(settings or {}), "checkpoint": f"{path.parent.name}/{path.name}"}
    if variant is None and settings is not None:
        # Known settings tell the rows apart: the task (train), not the folder's name with its seed (train_seed1).
        variant = _plain(source_cfg.get("task_name")) or re.sub(r"_seed-?\d+$", "", _folder_variant(source))
    return variant or _folder_variant(source), seed, settings, run_dir if source == run_dir else None


def _parse_results(data: Any, path: Path) -> tuple[str, str, dict[int, float]]:
    if not isinstance(data, dict) or not isinstance(data.get("recall_at"), dict) or not data["recall_at"]:
        raise ValueError(f'{path.name} has no \'recall_at\' mapping like {{"1": 0.42, "5": 0.7}}')
    recall: dict[int, float] = {}
    for key, value in data["recall_at"].items():
        try:
            n, r = int(key), float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{path.name}: recall_at entry {key!r}: {value!r} is not N: fraction") from None
        if n < 1 or not math.isfinite(r) or not 0.0 <= r <= 1.0:
            raise ValueError(f"{path.name}: recall_at[{key}] = {value!r}; expected N >= 1 and a fraction in [0, 1]")
        recall[n] = r
    return str(data.get("dataset") or ""), str(data.get("split") or "?"), dict(sorted(recall.items()))


def _read_run(run_dir: Path) -> tuple[list[Run], list[tuple[Path, str]]]:
    """The runs of one job folder (its own test and each of its test sets), and the files of it that could not be
    read while others could. Raises when nothing of it can be read."""
    cfg = _job_config(run_dir)
    own = _load_json(run_dir / "results.json") if (run_dir / "results.json").is_file() else None
    checkpoint = own.get("checkpoint") if isinstance(own, dict) else None
    if not checkpoint and (run_dir / "results_sets.json").is_file():
        try:
            sets = _load_json(run_dir / "results_sets.json")
            checkpoint = next(iter(sets.values())).get("checkpoint")
        except Exception:  # read again below, where its faults are reported
            pass
    variant, seed, settings, config_dir = _identity(run_dir, cfg, checkpoint or cfg.get("ckpt_path"))
    frozen = tuple(sorted(settings.items())) if settings is not None else None
    data_cfg = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    fallback_dataset = _plain(data_cfg.get("name")) or "?"
    prepare = data_cfg.get("prepare") if isinstance(data_cfg.get("prepare"), dict) else {}
    preset = _plain(prepare.get("preset"))
    occlusion = (preset.partition("-occlusion-")[2] or "medium") if preset else None

    def load(path: Path, untrained: Run | None, data: Any = None, test_set: str | None = None) -> Run:
        data = _load_json(path) if data is None else data
        dataset, split, recall = _parse_results(data, path)
        mask = data.get("mask") if isinstance(data.get("mask"), dict) else {}
        auc = mask.get("auc")
        auc = float(auc) if isinstance(auc, (int, float)) and math.isfinite(auc) else None
        return Run(
            variant,
            seed,
            dataset or fallback_dataset,
            split,
            recall,
            run_dir,
            untrained,
            auc,
            occlusion,
            test_set,
            frozen,
            config_dir,
        )

    runs: list[Run] = []
    problems: list[tuple[Path, str]] = []
    if (run_dir / "results.json").is_file():  # the run's own test split (train.py; eval.py without test_sets)
        untrained_path = run_dir / "results_untrained.json"
        untrained = None
        if untrained_path.is_file():
            try:
                untrained = load(untrained_path, None)
            except (OSError, ValueError):
                untrained = None  # the trained numbers are what the table is about; a bad extra file is not fatal
        runs.append(load(run_dir / "results.json", untrained, own))
    sets_path = run_dir / "results_sets.json"
    if sets_path.is_file():  # test_sets: a run per set (eval.py; train.py after its own test)
        try:
            sets = _load_json(sets_path)
            if not isinstance(sets, dict) or not sets:
                raise ValueError("results_sets.json holds no {label: results} mapping")
            runs += [load(sets_path, None, data, str(label)) for label, data in sets.items()]
        except (OSError, ValueError) as e:  # the own test's numbers still count
            if not runs:
                raise
            problems.append((sets_path, str(e)))
    return runs, problems


#: The scripts' logs in a job folder (Hydra names them by task), and how a user error is written at their end.
JOB_LOGS: tuple[str, ...] = ("train.log", "eval.log", "cluster.log", "retrieve.log")
LOG_RECORD = re.compile(r"^\[[0-9:, -]+\]\[([^\]]*)\]\[([A-Z]+)\] ?(.*)$")


def _failure(job: Path) -> str | None:
    """The error a job without results ended with: its log's last record when that is the script's ``error:`` line
    (``[vpr][ERROR]``: a setting, a file, a signal); None otherwise (killed, still running, or a run of the folder
    going on after an earlier one failed)."""
    for name in JOB_LOGS:
        path = job / name
        if not path.is_file():
            continue
        try:
            with open(path, "rb") as f:
                f.seek(max(0, path.stat().st_size - 65536))
                tail = f.read().decode("utf-8", errors="replace")
        except OSError:
            continue
        for line in reversed(tail.splitlines()):
            match = LOG_RECORD.match(line)
            if match:  # the last record (a message may continue over lines of its own)
                logger, level, text = match.groups()
                return text.strip() if (logger, level) == ("vpr", "ERROR") and text.strip() else None
    return None


def scan(root: str | os.PathLike) -> Scan:
    """Find every run under ``root`` (see the module docstring). Raises FileNotFoundError when there is none."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"vpr.report: {root} is not a folder; pass the multirun folder of a sweep "
            f"(e.g. outputs/train/multiruns/<date>), made by `{SWEEP_HINT}`."
        )
    result = Scan(root=root)
    run_dirs: list[Path] = []
    job_dirs: list[Path] = []
    for current, dirnames, filenames in os.walk(root):
        here = Path(current)
        is_job = "config.yaml" in filenames or ".hydra" in dirnames
        # Hidden folders (.hydra, .git) and logger folders never hold runs.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIPPED_DIRS)
        if "results.json" in filenames or "results_sets.json" in filenames:
            run_dirs.append(here)
        elif is_job and here != root:
            job_dirs.append(here)

    def inside(a: Path, b: Path) -> bool:
        return a != b and b in a.parents

    # A job folder is missing its results only when nothing below or above it produced a results.json, and it
    # is the outermost such folder (a failed job's own sub-folders are not separate jobs).
    candidates = [j for j in job_dirs if not any(inside(r, j) or inside(j, r) for r in run_dirs)]
    result.missing = sorted(j for j in candidates if not any(inside(j, o) for o in candidates))
    for job in result.missing:
        reason = _failure(job)
        if reason is not None:
            result.failed[job] = reason

    if not run_dirs:
        found = f" ({len(result.missing)} job folder(s), none finished)" if result.missing else ""
        first = next((job for job in result.missing if job in result.failed), None)
        if first is not None:  # the sweep ran and failed: what to fix, not how to start one
            raise FileNotFoundError(
                f"vpr.report: no results.json anywhere under {root}{found}; {_relative(first, root)} failed: "
                f"{result.failed[first]}. Fix that and run the sweep again."
            )
        raise FileNotFoundError(
            f"vpr.report: no results.json anywhere under {root}{found}. Run the sweep first, e.g. "
            f"`{SWEEP_HINT}`, then pass its multirun folder."
        )
    for run_dir in sorted(run_dirs):
        try:
            runs, problems = _read_run(run_dir)
            result.runs.extend(runs)
            result.unreadable.extend(problems)
        except (OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
            result.unreadable.append((run_dir, str(e)))
        # omegaconf's parser errors are not ValueErrors; still one bad job, not a reason to crash the report.
        except Exception as e:
            result.unreadable.append((run_dir, f"{type(e).__name__}: {e}"))
    return result


def collect_runs(root: str | os.PathLike) -> list[Run]:
    """Every readable run under ``root`` (sorted by folder). Raises FileNotFoundError when there is none."""
    return scan(root).runs


# --------------------------------------------------------------------------------------------- summarising


def variant_sort_key(variant: str) -> tuple[int, str]:
    return (VARIANT_ORDER.index(variant), "") if variant in VARIANT_ORDER else (len(VARIANT_ORDER), variant)


OCCLUSION_ORDER: tuple[str, ...] = ("low", "medium", "high")


def _occlusion_key(level: str | None) -> tuple[int, str]:
    return (OCCLUSION_ORDER.index(level), "") if level in OCCLUSION_ORDER else (len(OCCLUSION_ORDER), str(level))


def _shown_settings(runs: Sequence[Run]) -> list[tuple[tuple[str, str | None], ...]]:
    """Per run, its settings that differ between runs of its variant (absent keys as None); () for a run whose
    settings are not known. A setting one run gave and another left at its default counts with the default's value
    (the job's config: :func:`_default_setting`), so sweeps combined in one table give one row per model whether or
    not their command lines named its values; it is None ("not given") only where the job's config does not say."""
    keys: dict[str, set[str]] = {}
    for run in runs:
        if run.settings is not None:
            keys.setdefault(run.variant, set()).update(k for k, _ in run.settings)
    defaults: dict[tuple[Path, str], str | None] = {}

    def value(run: Run, key: str) -> str | None:
        given = dict(run.settings or ())
        if key in given or run.config_dir is None:
            return given.get(key)
        if (run.config_dir, key) not in defaults:
            try:
                defaults[run.config_dir, key] = _default_setting(run.config_dir, key)
            except Exception:  # an unreadable config: the setting is not known, as before
                defaults[run.config_dir, key] = None
        return defaults[run.config_dir, key]

    filled = [
        {k: value(run, k) for k in sorted(keys[run.variant])} if run.settings is not None else None for run in runs
    ]
    differing = {
        variant: [
            k
            for k in sorted(names)
            if len({f[k] for r, f in zip(runs, filled) if r.variant == variant and f is not None}) > 1
        ]
        for variant, names in keys.items()
    }
    return [() if f is None else tuple((k, f[k]) for k in differing[run.variant]) for run, f in zip(runs, filled)]


def _settings_sort_key(settings: tuple[tuple[str, str | None], ...]) -> tuple:
    """Numbers in numeric order (0.001 before 0.1), then text; a key not given first."""

    def value_key(value: str | None) -> tuple[int, float, str]:
        if value is None:
            return (0, 0.0, "")
        try:
            number = float(value)
        except ValueError:
            return (2, 0.0, value)
        return (1, number, "") if math.isfinite(number) else (2, 0.0, value)

    return tuple((k, value_key(v)) for k, v in settings)


def summarise(runs: Sequence[Run]) -> list[Row]:
    """One row per variant and settings (the command-line settings that differ between runs of the variant, see
    :data:`IGNORED_SETTINGS`), and per occlusion level of the city when runs differ in it; in :data:`VARIANT_ORDER`
    then alphabetically, settings in order, levels low to high. Recalls in percent, std with ddof=1."""
    groups: dict[tuple[str, tuple, str | None], list[Run]] = {}
    for run, shown in zip(runs, _shown_settings(runs)):
        groups.setdefault((run.variant, shown, run.occlusion), []).append(run)
    rows = []
    order = sorted(groups, key=lambda k: (variant_sort_key(k[0]), _settings_sort_key(k[1]), _occlusion_key(k[2])))
    for key in order:
        variant, shown, occlusion = key
        group = groups[key]
        ns = sorted({n for run in group for n in run.recall_at})
        mean, std, count = {}, {}, {}
        for n in ns:
            values = np.array([100.0 * run.recall_at[n] for run in group if n in run.recall_at])
            mean[n] = float(values.mean())
            std[n] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            count[n] = len(values)
        splits = tuple(sorted({run.split_label for run in group}))
        rows.append(
            Row(
                variant=variant,
                runs=len(group),
                split=splits[0] if len(splits) == 1 else "mixed",
                splits=splits,
                mean_pct=mean,
                std_pct=std,
                count=count,
                seeds=tuple(run.seed for run in group),
                paths=tuple(run.path for run in group),
                mask_auc=tuple(run.mask_auc for run in group if run.mask_auc is not None),
                occlusion=occlusion,
                settings=shown,
            )
        )
    return rows


def recall_columns(rows: Sequence[Row]) -> list[int]:
    """Every N reported by all runs, plus R@1/5/10 whenever any run has them; ascending."""
    present = {n for row in rows for n in row.count}
    everywhere = {n for n in present if all(row.count.get(n, 0) == row.runs for row in rows)}
    return sorted(everywhere | (present & set(ALWAYS_SHOWN)))


def _cell(row: Row, n: int) -> str:
    if row.count.get(n, 0) == 0:
        return "–"
    std = row.std_pct[n]
    text = f"{row.mean_pct[n]:.1f} ± " + ("–" if math.isnan(std) else f"{std:.1f}")
    if row.count[n] < row.runs:
        text += f" ({row.count[n]} of {row.runs} runs)"
    return text


def _mask_cell(row: Row) -> str:
    if not row.mask_auc:
        return "–"
    values = np.array(row.mask_auc)
    std = f"{values.std(ddof=1):.3f}" if len(values) > 1 else "–"
    return f"{values.mean():.3f} ± {std}" + (f" ({len(values)} of {row.runs} runs)" if len(values) < row.runs else "")


def _delta_cell(row: Row, baseline: Row | None) -> str:
    if baseline is None or row is baseline:
        return "–"  # the baseline itself, or no baseline at this occlusion level
    if 1 not in row.count or 1 not in baseline.count:
        return "n/a (no R@1)"
    if row.split == "mixed" or row.split != baseline.split:
        return "n/a (split differs)"
    delta = row.mean_pct[1] - baseline.mean_pct[1]
    noise = row.std_pct[1] + baseline.std_pct[1]
    if math.isnan(noise):
        return f"{delta:+.1f} (std n/a)"
    verdict = "beyond" if abs(delta) > noise else "within"
    return f"{delta:+.1f} ({verdict} {noise:.1f})"


def format_markdown(
    rows: Sequence[Row],
    *,
    title: str | None = None,
    missing: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> str:
    """The results table as markdown; ``missing`` (job folders without results) and ``notes`` are listed below."""
    if not rows:
        raise ValueError("format_markdown: no rows to show; summarise() a non-empty list of runs first.")
    ns = recall_columns(rows)
    baselines = [row for row in rows if row.variant == "baseline"]
    baseline = baselines[0] if baselines else None
    by_level = len({row.occlusion for row in rows}) > 1
    header = ["variant", *(["occlusion"] if by_level else []), *(f"R@{n}" for n in ns), "runs", "split"]
    align = ["---", *(["---"] if by_level else []), *("---:" for _ in ns), "---:", "---"]
    if baseline is not None:
        header.append("ΔR@1 vs baseline")
        align.append("---:")
    with_mask = any(row.mask_auc for row in rows)
    if with_mask:
        header.append("mask AUC")
        align.append("---:")
    lines = [f"# {title}", ""] if title else []
    cells = []
    for row in rows:
        cells.append(
            [
                row.label,
                *([str(row.occlusion or "–")] if by_level else []),
                *(_cell(row, n) for n in ns),
                str(row.runs),
                row.split,
            ]
        )
        if baseline is not None:
            level = [b for b in baselines if b.occlusion == row.occlusion]
            alike = [b for b in level if b.settings == row.settings]
            if len(alike) == 1 or len(level) < 2:
                cells[-1].append(_delta_cell(row, (alike or level or [None])[0]))
            else:
                cells[-1].append("n/a (several baselines)")
        if with_mask:
            cells[-1].append(_mask_cell(row))
    lines.append(markdown_table(header, cells, align))
    lines += ["", "Recall@N in %, mean ± sample std (ddof=1) over runs (seeds); '± –' means a single run."]
    if baseline is not None:
        lines.append(
            "ΔR@1: mean R@1 minus the baseline's, in points; 'beyond x' when |Δ| exceeds x = std of the variant "
            "+ std of the baseline, 'within x' otherwise."
            + (
                " Against the baseline row of the same settings, where the baseline has several."
                if len({b.occlusion for b in baselines}) < len(baselines)
                else ""
            )
        )
    if with_mask:
        lines.append(
            "mask AUC: ROC-AUC of the de-attention mask against the suppressed classes on the test images "
            "(1: every suppressed cell masked below every static one; 0.5: a mask that learned nothing), mean ± std."
        )
    mixed = [row for row in rows if row.split == "mixed"]
    for row in mixed:
        lines.append(f"`{row.label}` mixes splits {', '.join(row.splits)}: its numbers are not comparable.")
    extra = [f"- missing: {m}" for m in missing] + [f"- {note}" for note in notes]
    if extra:
        lines += ["", *extra]
    return "\n".join(lines) + "\n"


def _duplicate_seed_notes(rows: Sequence[Row]) -> list[str]:
    notes = []
    for row in rows:
        seen = [s for s in row.seeds if s is not None]
        dupes = sorted({s for s in seen if seen.count(s) > 1})
        if dupes:
            notes.append(
                f"{row.label}: seed(s) {', '.join(map(str, dupes))} appear more than once; "
                "check that the runs' `variant` settings are right."
            )
    return notes


# ------------------------------------------------------------------------------------------------ plotting


def _curves_title(rows: Sequence[Row], test_set: str | None = None, own_of_several: bool = False) -> str:
    splits = sorted({s for row in rows for s in row.splits})
    where = ", ".join(splits) + (" (mixed splits!)" if len(splits) > 1 else "")
    if test_set is not None:
        return f"Recall@N on test set {test_set} ({where})"
    return f"Recall@N on {where}" + (" (own test split)" if own_of_several else "")


def _draw_curves(ax, rows: Sequence[Row], title: str) -> None:
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    all_ns: set[int] = set()
    for row in rows:
        ns = sorted(row.count)
        all_ns.update(ns)
        mean = np.array([row.mean_pct[n] for n in ns])
        std = np.nan_to_num(np.array([row.std_pct[n] for n in ns]), nan=0.0)  # one run: no band
        label = row.label + (
            f", occlusion {row.occlusion}" if row.occlusion and len({r.occlusion for r in rows}) > 1 else ""
        )
        (line,) = ax.plot(ns, mean, marker="o", label=f"{label} (n={row.runs})")
        ax.fill_between(ns, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    if len(all_ns) > 1:
        ax.set_xscale("log")
    ax.set_xticks(sorted(all_ns))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("N")
    ax.set_ylabel("Recall@N (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title)


def plot_recall_curves(
    rows_or_runs: Sequence[Row] | Sequence[Run], path: str | os.PathLike, title: str | None = None
) -> Path:
    """Recall@N curves (mean, shaded ± std) per variant, log-scaled N, written atomically as PNG to ``path``."""
    from matplotlib.figure import Figure

    from vpr.viz.retrievals import save_figure_atomic

    items = list(rows_or_runs)
    if not items:
        raise ValueError("plot_recall_curves: nothing to plot; pass the rows of summarise() or the runs.")
    rows = summarise(items) if isinstance(items[0], Run) else items
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    _draw_curves(fig.subplots(), rows, title or _curves_title(rows))
    return save_figure_atomic(fig, path)


def plot_recall_curves_per_set(tables: Sequence[tuple[str | None, Sequence[Row]]], path: str | os.PathLike) -> Path:
    """The Recall@N curves of each table (test set label or None for the runs' own test split, its rows) in a panel
    of its own, titled with the set and its dataset/split, up to three panels a line; one PNG at ``path``."""
    from matplotlib.figure import Figure

    from vpr.viz.retrievals import save_figure_atomic

    tables = [(label, rows) for label, rows in tables if rows]
    if not tables:
        raise ValueError("plot_recall_curves_per_set: nothing to plot; pass (test set, summarise() rows) pairs.")
    cols = min(len(tables), 3)
    lines = math.ceil(len(tables) / cols)
    fig = Figure(figsize=(6.4 * cols, 4.4 * lines), layout="constrained")
    axes = list(fig.subplots(lines, cols, squeeze=False).ravel())
    for ax, (label, rows) in zip(axes, tables):
        _draw_curves(ax, rows, _curves_title(rows, label, own_of_several=len(tables) > 1))
    for ax in axes[len(tables) :]:
        fig.delaxes(ax)
    return save_figure_atomic(fig, path)


def plot_recall_vs_occlusion(rows: Sequence[Row], path: str | os.PathLike, n: int = 1) -> Path:
    """R@n (mean ± std over seeds) of each variant against the city's query occlusion level, as PNG."""
    from matplotlib.figure import Figure

    from vpr.viz.retrievals import save_figure_atomic

    levels = sorted({row.occlusion for row in rows if row.occlusion}, key=_occlusion_key)
    if len(levels) < 2:
        raise ValueError("plot_recall_vs_occlusion: the runs cover fewer than two occlusion levels")
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    for label in dict.fromkeys(row.label for row in rows):  # summarise()'s order: variants, then settings
        mine = {row.occlusion: row for row in rows if row.label == label and n in row.count}
        xs = [i for i, level in enumerate(levels) if level in mine]
        if not xs:
            continue
        ys = [mine[levels[i]].mean_pct[n] for i in xs]
        err = [np.nan_to_num(mine[levels[i]].std_pct[n]) for i in xs]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label)
    ax.set_xticks(range(len(levels)), levels)
    ax.set_xlabel("query occlusion (people and vehicles in the query views)")
    ax.set_ylabel(f"Recall@{n} (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"Recall@{n} against occlusion, mean ± std over seeds")
    return save_figure_atomic(fig, path)


# --------------------------------------------------------------------------------------------------- CLI


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root)) or "."
    except ValueError:
        return str(path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m vpr.report",
        description="Results table (mean ± std of Recall@N per model over seeds) and Recall@N plot of a Hydra multirun "
        "folder.",
    )
    p.add_argument("dir", type=Path, help="multirun folder (searched recursively for results.json)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="markdown file (default DIR/results.md; DIR/report.md in a run's own folder)",
    )
    p.add_argument("--plot", type=Path, default=None, help="PNG of the Recall@N curves (default DIR/recall_curves.png)")
    p.add_argument("--no-plot", action="store_true", help="skip the plot")
    p.add_argument(
        "--metric-split",
        nargs="+",
        default=None,
        metavar="SPLIT",
        help="keep only runs evaluated on these splits (e.g. test); others are listed as skipped",
    )
    p.add_argument("--untrained", action="store_true", help="add a table of results_untrained.json (before training)")
    return p


def default_table_path(root: Path) -> Path:
    """Where the table goes without ``--out``: ``DIR/results.md``, or ``DIR/report.md`` when DIR is itself a run's
    folder (it holds the run's results.json), whose ``results.md`` is the run's own table and is kept."""
    return root / ("report.md" if (root / "results.json").is_file() else "results.md")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root: Path = args.dir
    try:
        found = scan(root)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    runs = found.runs
    notes = [f"unreadable: {_relative(p, root)} ({reason})" for p, reason in found.unreadable]
    if args.metric_split:
        wanted = set(args.metric_split)
        notes += [
            f"skipped (split {r.split}, not {'/'.join(sorted(wanted))}): {_relative(r.path, root)}"
            + (f" (test set {r.test_set})" if r.test_set is not None else "")
            for r in runs
            if r.split not in wanted
        ]
        runs = [r for r in runs if r.split in wanted]
    if not runs:
        print(
            f"error: vpr.report: no usable run under {root}:\n  " + "\n  ".join(notes or ["(none)"]) + "\n"
            "Fix or rerun those jobs, or change --metric-split.",
            file=sys.stderr,
        )
        return 2

    by_set: dict[str | None, list[Run]] = {}
    for run in runs:
        by_set.setdefault(run.test_set, []).append(run)
    text, tables = "", []  # tables: (test set or None, rows), the own test split's first
    for i, (label, group) in enumerate(sorted(by_set.items(), key=lambda kv: (kv[0] is not None, kv[0] or ""))):
        set_rows = summarise(group)
        tables.append((label, set_rows))
        text += ("\n" if i else "") + format_markdown(
            set_rows,
            title=f"Results: {root.resolve().name}"
            + (f" (test set {label})" if label is not None else " (own test split)" if len(by_set) > 1 else ""),
            missing=[
                _relative(m, root) + (f" (failed: {found.failed[m]})" if m in found.failed else "")
                for m in found.missing
            ]
            if i == 0
            else (),
            notes=(notes if i == 0 else []) + _duplicate_seed_notes(set_rows),
        )
    if args.untrained:
        before = [r.untrained for r in runs if r.untrained is not None]
        if before:
            text += "\n" + format_markdown(summarise(before), title="Before training (results_untrained.json)")
        else:
            text += (
                "\nBefore training: no job wrote results_untrained.json (train.py writes it with "
                "test_untrained=true).\n"
            )
    out = args.out or default_table_path(root)
    write_text_atomic(out, text)
    print(text, end="")
    print(f"\ntable: {out}")
    if not args.no_plot:
        plot_path = plot_recall_curves_per_set(tables, args.plot or root / "recall_curves.png")
        print(f"plot: {plot_path}")
        rows = tables[0][1]  # levels of the city: the first table (the own test split, when the runs have one)
        if len({row.occlusion for row in rows if row.occlusion}) > 1:
            print(f"plot: {plot_recall_vs_occlusion(rows, root / 'recall_vs_occlusion.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
