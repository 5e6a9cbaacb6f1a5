"""Several test sets in one command: ``test_sets=[pitts30k,tokyo247]`` on eval.py and train.py.

Each entry names a data config (``configs/data/<name>.yaml``), composed on its own: its root, split file,
image folders and evaluation protocol come from that config (roots from ``data.root`` there or from the
environment variable it names), never from the run's own ``data``. An entry may also be a mapping that names
the config under ``data`` and overrides some of its settings, e.g.
``test_sets=[pitts30k,{data:tokyo247,root:/datasets/tokyo}]``; ``label`` names its column (default: the
config name). ``data.image_size``, ``data.eval_batch_size`` and ``data.num_workers`` given on the command line
apply to every set. The image size is, in this order: the entry's ``image_size``, the command line's, the one the
network was trained at (train.py; eval.py with a checkpoint), the set's config.

Results: ``results_<label>.json`` per set (the shape of results.json), ``results_sets.json`` (all of them) and
``results_sets.md`` (the table, one column per set) in the run folder; the loggers get each set's recalls as
``test_<label>/R@N`` (the run's own test split keeps ``test/R@N``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vpr import CONFIG_DIR
from vpr.build import build_datamodule
from vpr.callbacks import stop_if_signalled
from vpr.checkpoints import overridden_keys
from vpr.errors import ConfigError, DataError
from vpr.eval.tables import format_sets_table
from vpr.io import write_json_atomic, write_text_atomic
from vpr.run import save_predictions
from vpr.viz.pictures import save_retrieval_pictures

log = logging.getLogger(__name__)

SHARED_DATA_SETTINGS = ("image_size", "eval_batch_size", "num_workers")
ENTRY_KEYS_NOT_DATA = ("data", "label")
#: Labels whose results_<label>.json is a file of the run itself (the untrained test, all sets together).
RESERVED_LABELS = ("untrained", "sets")


@dataclass(frozen=True)
class TestSet:
    """One test set: the column label, the data config it was composed from and that config, resolved."""

    label: str
    choice: str
    data: DictConfig


@contextmanager
def _hydra_config_dir() -> Iterator[None]:
    """Hydra's compose API: the running app's (train.py/eval.py) or, outside one, the project's configs."""
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        yield
        return
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        yield


def available_data_configs() -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / "data").glob("*.yaml"))


def compose_data_config(choice: str, cfg: DictConfig, *overlays: Mapping[str, Any], label: str = "") -> DictConfig:
    """``configs/data/<choice>.yaml`` composed alone, with ``overlays`` (a test_sets entry's settings) merged in
    before it is resolved with the run's paths: a setting that others derive from (a synthetic city's
    ``prepare.preset`` names its ``root`` and ``tag``) carries into them."""
    from hydra import compose
    from hydra.errors import HydraException

    if not (CONFIG_DIR / "data" / f"{choice}.yaml").is_file():
        raise ConfigError(
            f"test_sets: no data config '{choice}' (configs/data/{choice}.yaml); choose from {available_data_configs()}"
        )
    try:
        with _hydra_config_dir():
            composed = compose(config_name="base", overrides=[f"data={choice}"])
    except HydraException as e:
        raise ConfigError(f"test_sets: data config '{choice}' could not be composed: {e}") from None
    for overlay in overlays:
        unknown = sorted(set(overlay) - set(composed.data.keys()))
        if unknown:
            raise ConfigError(
                f"test_sets entry '{label or choice}': {unknown} are not settings of data={choice} "
                f"(settings: {sorted(composed.data.keys())})"
            )
    # Interpolations such as ${paths.data_dir} follow the run's own paths (e.g. paths.data_dir=... given).
    paths = {k: v for k, v in OmegaConf.to_container(cfg.paths, resolve=False).items() if k != "output_dir"}
    data = OmegaConf.merge(OmegaConf.to_container(composed.data, resolve=False), *(dict(o) for o in overlays))
    scratch = OmegaConf.create({"paths": paths, "data": OmegaConf.to_container(data, resolve=False)})
    return OmegaConf.create(OmegaConf.to_container(scratch, resolve=True)["data"])


def resolve_test_sets(cfg: DictConfig, shared_overrides: Mapping[str, Any] | None = None) -> list[TestSet]:
    """The ``test_sets`` entries of ``cfg`` as composed data configs, in order, with unique labels.

    ``shared_overrides``: data settings (of :data:`SHARED_DATA_SETTINGS`) the command line gave for every set.
    """
    entries = cfg.get("test_sets") or []
    if isinstance(entries, str):
        entries = [entries]
    out: list[TestSet] = []
    for entry in entries:
        entry = OmegaConf.to_container(entry, resolve=True) if OmegaConf.is_config(entry) else entry
        if isinstance(entry, str):
            choice, label, extra = entry, entry, {}
        elif isinstance(entry, Mapping) and isinstance(entry.get("data"), str):
            choice = entry["data"]
            label = str(entry.get("label") or choice)
            extra = {k: v for k, v in entry.items() if k not in ENTRY_KEYS_NOT_DATA}
        else:
            raise ConfigError(
                f"test_sets entry {entry!r}: give a data config name (test_sets=[pitts30k,tokyo247]) or a mapping "
                "naming one under 'data' (test_sets=[{data:tokyo247,root:/path/to/tokyo}])"
            )
        if safe_label(label) in RESERVED_LABELS:
            raise ConfigError(
                f"test_sets: the label '{label}' would write results_{safe_label(label)}.json, a file of the run "
                f"itself; give the entry another label ({{data:{choice},label:other_name}})"
            )
        data = compose_data_config(choice, cfg, dict(shared_overrides or {}), extra, label=label)
        if any(t.label == label for t in out):
            raise ConfigError(
                f"test_sets: the label '{label}' is used twice; give one entry a label "
                f"({{data:{choice},label:other_name}})"
            )
        out.append(TestSet(label=label, choice=choice, data=data))
    return out


def shared_data_overrides(cfg: DictConfig, command_line: list[str], trained_image_size=None) -> dict[str, Any]:
    """Data settings for every set: those of :data:`SHARED_DATA_SETTINGS` the command line set, and the image
    size the network was trained at (``trained_image_size``, when known) unless the command line set one."""
    given = overridden_keys(command_line)
    data = OmegaConf.to_container(cfg.data, resolve=True)
    out = {k: data[k] for k in SHARED_DATA_SETTINGS if f"data.{k}" in given and k in data}
    if trained_image_size is not None and "image_size" not in out:
        out["image_size"] = [int(x) for x in trained_image_size]
    return out


def safe_label(label: str) -> str:
    """The label as a file-name part."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def log_prefix(label: str) -> str:
    """What a test set's recalls are logged under (``test_<label>/R@N``, the label as in its results file's name)."""
    return f"test_{safe_label(label)}"


def prepare_test_sets(cfg: DictConfig, sets: list[TestSet], split: str = "test") -> list[tuple[TestSet, Any]]:
    """A data module per set with its ``split`` read and checked: a missing dataset fails before any work."""
    prepared = []
    for ts in sets:
        splits = dict(ts.data.get("splits") or {})
        if splits.get(split) is None:
            have = [k for k, v in splits.items() if v is not None]
            raise ConfigError(
                f"test_sets entry '{ts.label}': dataset {ts.data.name} has no {split} split "
                f"(it has {have}); choose split=test"
            )
        dm = build_datamodule(cfg, data_cfg=ts.data, with_training=False)
        dm.splits["test"] = splits[split]
        try:
            dm.prepare_data()
            dm.setup("test")
        except DataError as e:
            hint = ""
            if ts.data.get("root") in (None, ""):
                hint = (
                    f" The run's data.root does not apply to test sets: give this one its own, "
                    f"test_sets=[{{data:{ts.choice},root:/path/to/it}}], or set the environment variable "
                    f"configs/data/{ts.choice}.yaml names."
                )
            raise DataError(f"test set '{ts.label}': {e}{hint}") from None
        log.info("test set %s: %s", ts.label, dm.test_split.describe())
        prepared.append((ts, dm))
    return prepared


def run_test_sets(
    prepared: list[tuple[TestSet, Any]],
    module,
    trainer,
    out_dir: Path,
    *,
    ckpt_path: str | None = None,
    record: Mapping[str, Any] | None = None,
    title: str = "",
) -> dict[str, dict[str, Any]]:
    """Test ``module`` on every prepared set; rank zero writes the files and prints the table.

    ``ckpt_path`` is loaded by Lightning before each test (None: the module's weights as they are); ``record``
    is added to every set's results (e.g. the checkpoint the weights came from).
    """
    results: dict[str, dict[str, Any]] = {}
    own_prefix = module.test_log_prefix
    for ts, dm in prepared:
        module.test_log_prefix = log_prefix(ts.label)  # test/R@N stays the run's own test split's
        try:
            trainer.test(module, datamodule=dm, ckpt_path=ckpt_path, verbose=False, weights_only=True)
            stop_if_signalled(trainer)
        finally:
            module.test_log_prefix = own_prefix
        results[ts.label] = {
            **module.results["test"],
            "test_set": ts.label,
            "checkpoint": ckpt_path,
            **dict(record or {}),
        }
        if trainer.is_global_zero:
            save_predictions(module, dm, Path(out_dir), suffix=f"_{safe_label(ts.label)}")
            picture = Path(out_dir) / "pictures" / f"test_retrievals_{safe_label(ts.label)}.png"
            save_retrieval_pictures(module, dm, "test", picture)
    if trainer.is_global_zero and results:
        for label, res in results.items():
            write_json_atomic(Path(out_dir) / f"results_{safe_label(label)}.json", res)
        write_json_atomic(Path(out_dir) / "results_sets.json", results)
        table = format_sets_table(results, title)
        write_text_atomic(Path(out_dir) / "results_sets.md", table + "\n")
        print("\n" + table + f"\n\nresults: {Path(out_dir) / 'results_sets.json'}\n", flush=True)
    return results
