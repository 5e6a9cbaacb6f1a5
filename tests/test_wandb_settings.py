"""What reaches W&B from the logger settings, without a run: the arguments ``wandb.init`` receives (recorded by a
stand-in for it), for WANDB_MODE=disabled, the W&B settings of configs/logger/wandb.yaml, a variant's tags and a
resumed run's group."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from vpr.api import compose_config
from vpr.build import build_loggers, resumed_wandb_group, run_folder_group
from vpr.errors import ConfigError


@pytest.fixture
def wandb_init(monkeypatch):
    """``wandb.init`` replaced by a recorder of its keyword arguments (no run, no files, no network)."""
    import wandb

    calls: list[dict] = []

    def init(**kwargs):
        calls.append(kwargs)
        return SimpleNamespace(id=kwargs.get("id") or "fake", name=kwargs.get("name"))

    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.setattr(wandb, "run", None)
    monkeypatch.setenv("WANDB_MODE", "offline")  # restored after the test (Lightning's logger rewrites it)
    monkeypatch.setenv("WANDB_SILENT", "true")
    return calls


def config(tmp_path: Path, *overrides: str):
    return compose_config("train", ["logger=wandb", f"paths.output_dir={tmp_path}", *overrides])


def init_kwargs(calls: list[dict], tmp_path: Path, *overrides: str, **build) -> dict:
    """The wandb.init arguments of the W&B logger build_loggers makes for these settings, its run started."""
    for lg in build_loggers(config(tmp_path, *overrides), **build):
        if type(lg).__name__ == "WandbLogger":
            _ = lg.experiment
    assert len(calls) == 1, calls
    return calls.pop()


def test_wandb_mode_disabled_builds_no_wandb_logger_and_says_so(wandb_init, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    caplog.set_level(logging.INFO, logger="vpr.build")
    for overrides in ([], ["logger.wandb.offline=true"], ["logger.wandb.mode=online"]):
        loggers = build_loggers(config(tmp_path, "experiment=city_baseline", *overrides))
        assert [type(lg).__name__ for lg in loggers] == [], overrides
    assert wandb_init == []
    said = [r.getMessage() for r in caplog.records if "W&B" in r.getMessage()]
    assert said == ["W&B is off (WANDB_MODE=disabled): this run logs nothing to W&B"] * 3, said
    assert not (tmp_path / "wandb").exists()
    # the W&B setting itself turns it off too
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert build_loggers(config(tmp_path, "logger.wandb.mode=disabled")) == []


def test_entity_notes_job_type_and_mode_reach_wandb_init(wandb_init, tmp_path):
    kwargs = init_kwargs(
        wandb_init,
        tmp_path,
        "experiment=city_baseline",
        "logger.wandb.entity=me",
        "logger.wandb.notes=first try",
        "logger.wandb.mode=dryrun",
    )
    assert kwargs["entity"] == "me" and kwargs["notes"] == "first try"
    assert kwargs["job_type"] == "train"  # null: the script's task
    assert kwargs["mode"] == "offline"  # W&B's old name for it
    assert kwargs["project"] == "vpr" and kwargs["name"] == "baseline-seed42"
    kwargs = init_kwargs(wandb_init, tmp_path, "logger.wandb.job_type=sweep-check", "logger.wandb.mode=null")
    assert kwargs["job_type"] == "sweep-check" and kwargs.get("mode") is None and kwargs.get("entity") is None


def test_contradicting_or_unknown_modes_are_refused(wandb_init, tmp_path):
    with pytest.raises(ConfigError, match="logger.wandb.mode=online and logger.wandb.offline=True contradict"):
        build_loggers(config(tmp_path, "logger.wandb.mode=online", "logger.wandb.offline=true"))
    with pytest.raises(ConfigError, match="logger.wandb.mode=silent: choose online, offline or disabled"):
        build_loggers(config(tmp_path, "logger.wandb.mode=silent"))
    from vpr.run.train import validate_config

    with pytest.raises(ConfigError, match="logger.wandb.mode=silent"):  # train.py: before any data work
        validate_config(config(tmp_path, "experiment=city_baseline", "logger.wandb.mode=silent"))


@pytest.mark.parametrize(
    ("overrides", "tags"),
    [
        (["experiment=city_baseline"], ["city", "baseline"]),
        (["experiment=city_baseline", "attention=se"], ["city", "baseline+se"]),
        (["experiment=city_baseline", "attention=se", "loss=stml"], ["city", "baseline+se+stml"]),
        (["experiment=city_main", "attention=se"], ["city", "main", "baseline+se"]),
        (["experiment=city_se"], ["city", "se"]),
        (["experiment=city_se", "tags=[mine]"], ["mine", "se"]),
    ],
)
def test_tags_name_the_variant_the_run_trains(wandb_init, tmp_path, overrides, tags):
    assert init_kwargs(wandb_init, tmp_path, *overrides)["tags"] == tags


def test_a_resumed_run_keeps_the_group_it_started_in(wandb_init, tmp_path, monkeypatch):
    import vpr.build

    monkeypatch.setattr(vpr.build, "sweep_identity", lambda: ("2026-01-02_sweepB", "job0"))  # a new sweep
    assert init_kwargs(wandb_init, tmp_path)["group"] == "2026-01-02_sweepB"  # a new run: the sweep's group
    resumed = init_kwargs(wandb_init, tmp_path, wandb_id="abc123", wandb_group="2026-01-01_sweepA")
    assert resumed["id"] == "abc123" and resumed["group"] == "2026-01-01_sweepA"
    assert init_kwargs(wandb_init, tmp_path, wandb_id="abc123", wandb_group=None)["group"] is None  # had none
    given = init_kwargs(wandb_init, tmp_path, "logger.wandb.group=mine", wandb_id="abc123", wandb_group="x")
    assert given["group"] == "mine"  # a group named on the command line wins


def test_a_resumed_run_keeps_the_entity_it_started_with(wandb_init, tmp_path):
    """A run started with logger.wandb.entity=team, resumed by a command without it: W&B continues the run id under
    the entity it is given, the default one (a new run of the same id elsewhere) unless the checkpoint's is."""
    resumed = init_kwargs(wandb_init, tmp_path, wandb_id="abc123", wandb_entity="team")
    assert resumed["id"] == "abc123" and resumed["entity"] == "team"
    assert init_kwargs(wandb_init, tmp_path, wandb_id="abc123", wandb_entity=None).get("entity") is None
    given = init_kwargs(wandb_init, tmp_path, "logger.wandb.entity=me", wandb_id="abc123", wandb_entity="team")
    assert given["entity"] == "me"  # an entity named on the command line wins
    assert init_kwargs(wandb_init, tmp_path, wandb_entity="team").get("entity") is None  # a new run: the settings'


HYDRA_YAML = """\
hydra:
  run:
    dir: ${{paths.log_dir}}/${{task_name}}/runs/${{now:%Y-%m-%d_%H-%M-%S-%f}}
  sweep:
    dir: {sweep_dir}
    subdir: ${{hydra.job.num}}_x
  mode: {mode}
  runtime:
    output_dir: {output_dir}
"""


def run_folder(tmp_path: Path, mode: str, sweep_dir: str, output_dir: str) -> Path:
    """A run folder as Hydra leaves it (its .hydra/hydra.yaml, written here by hand) with a checkpoints folder."""
    folder = tmp_path / "run"
    (folder / ".hydra").mkdir(parents=True)
    (folder / "checkpoints").mkdir()
    (folder / ".hydra" / "hydra.yaml").write_text(
        HYDRA_YAML.format(mode=mode, sweep_dir=sweep_dir, output_dir=output_dir)
    )
    return folder


def test_the_group_of_an_older_checkpoint_comes_from_its_run_folder(tmp_path):
    unresolved = "${paths.log_dir}/${task_name}/multiruns/${now:%Y-%m-%d_%H-%M-%S-%f}"
    folder = run_folder(tmp_path / "a", "MULTIRUN", unresolved, "/logs/train/multiruns/2026-01-01_sweepA/0_baseline")
    assert run_folder_group(folder) == "2026-01-01_sweepA"
    assert resumed_wandb_group({}, folder / "checkpoints" / "last.ckpt") == "2026-01-01_sweepA"
    # a checkpoint that records its group is believed, even one of no group
    assert resumed_wandb_group({"wandb_run_group": "other"}, folder / "checkpoints" / "last.ckpt") == "other"
    assert resumed_wandb_group({"wandb_run_group": None}, folder / "checkpoints" / "last.ckpt") is None
    named = run_folder(tmp_path / "b", "MULTIRUN", "/sweeps/my_sweep", "/sweeps/my_sweep/3_x")
    assert run_folder_group(named) == "my_sweep"
    single = run_folder(tmp_path / "c", "RUN", unresolved, "/logs/train/runs/2026-01-01_10-00-00-000000")
    assert resumed_wandb_group({}, single / "checkpoints" / "last.ckpt") is None
    assert resumed_wandb_group({}, tmp_path / "elsewhere" / "last.ckpt") is None


def test_checkpoints_record_the_wandb_group_and_entity(monkeypatch, tmp_path):
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    from vpr.build import resumed_wandb_entity
    from vpr.callbacks import RecordRunIds

    monkeypatch.setenv("WANDB_MODE", "offline")
    for group, entity in (("2026-01-01_sweepA", "team"), (None, None)):
        checkpoint: dict = {}
        made = WandbLogger(id="abc123", group=group, entity=entity, save_dir=tmp_path, offline=True)
        RecordRunIds().on_save_checkpoint(SimpleNamespace(loggers=[CSVLogger(tmp_path), made]), None, checkpoint)
        assert checkpoint == {
            "wandb_run_id": "abc123",
            "wandb_run_group": group,
            "wandb_run_entity": entity,
            "wandb_run_name": None,  # none given, no run started
        }
        assert resumed_wandb_entity(checkpoint) == entity
    assert resumed_wandb_entity({"wandb_run_id": "abc123"}) is None  # written before entities were recorded


def test_checkpoints_record_the_entity_an_online_run_lives_under(monkeypatch, tmp_path):
    """A run started without logger.wandb.entity lives under the account's default entity, which only the started
    run knows (W&B answers with it): that one is recorded, so a resume by another account or machine continues the
    run there. An offline run has none (nothing but the settings' entity to record)."""
    from lightning.pytorch.loggers import WandbLogger

    from vpr.callbacks import RecordRunIds

    monkeypatch.setenv("WANDB_MODE", "offline")

    def saved(run: SimpleNamespace, **settings) -> dict:
        logger = WandbLogger(id="abc123", save_dir=tmp_path, **settings)
        logger._experiment = run  # a started run, as wandb.init returns it (no network)
        checkpoint: dict = {}
        RecordRunIds().on_save_checkpoint(SimpleNamespace(loggers=[logger]), None, checkpoint)
        return checkpoint

    online = SimpleNamespace(id="abc123", entity="alice-default", offline=False, disabled=False)
    assert saved(online)["wandb_run_entity"] == "alice-default"
    assert saved(online, entity="alice-default")["wandb_run_entity"] == "alice-default"
    offline = SimpleNamespace(id="abc123", entity="", offline=True, disabled=False)
    assert saved(offline)["wandb_run_entity"] is None
    assert saved(offline, entity="team")["wandb_run_entity"] == "team"  # the settings' entity, as before
    disabled = SimpleNamespace(id="abc123", entity="someone", offline=False, disabled=True)
    assert saved(disabled)["wandb_run_entity"] is None


def test_a_resumed_run_keeps_its_name(wandb_init, tmp_path, monkeypatch):
    """Job 0 of a sweep is baseline-seed1-job0; resumed as a single run (or as job 3 of another sweep) it keeps that
    name: W&B renames a run continued under another name."""
    import vpr.build

    recipe = ("experiment=city_baseline", "seed=1")
    assert init_kwargs(wandb_init, tmp_path, *recipe)["name"] == "baseline-seed1"  # a new single run
    resumed = init_kwargs(wandb_init, tmp_path, *recipe, wandb_id="abc123", wandb_name="baseline-seed1-job0")
    assert resumed["id"] == "abc123" and resumed["name"] == "baseline-seed1-job0"
    monkeypatch.setattr(vpr.build, "sweep_identity", lambda: ("2026-01-02_sweepB", "job3"))
    assert init_kwargs(wandb_init, tmp_path, *recipe)["name"] == "baseline-seed1-job3"  # a new job of a sweep
    resumed = init_kwargs(wandb_init, tmp_path, *recipe, wandb_id="abc123", wandb_name="baseline-seed1")
    assert resumed["name"] == "baseline-seed1"
    given = init_kwargs(wandb_init, tmp_path, *recipe, "logger.wandb.name=mine", wandb_id="abc123", wandb_name="x")
    assert given["name"] == "mine"  # a name given on the command line wins
    assert init_kwargs(wandb_init, tmp_path, *recipe, wandb_name="x")["name"] == "baseline-seed1-job3"  # not resumed


def test_checkpoints_record_the_run_name_and_older_ones_take_it_from_their_folder(monkeypatch, tmp_path):
    from lightning.pytorch.loggers import WandbLogger

    from vpr.build import resumed_wandb_name
    from vpr.callbacks import RecordRunIds

    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = WandbLogger(id="abc123", name="baseline-seed1-job0", save_dir=tmp_path)
    checkpoint: dict = {}
    RecordRunIds().on_save_checkpoint(SimpleNamespace(loggers=[logger]), None, checkpoint)
    assert checkpoint["wandb_run_name"] == "baseline-seed1-job0"
    logger._experiment = SimpleNamespace(id="abc123", name="renamed-in-the-run", offline=True, disabled=False)
    RecordRunIds().on_save_checkpoint(SimpleNamespace(loggers=[logger]), None, checkpoint)
    assert checkpoint["wandb_run_name"] == "renamed-in-the-run"  # the live run's name

    cfg = config(tmp_path, "experiment=city_baseline", "seed=2")
    assert resumed_wandb_name({"wandb_run_name": "kept"}, tmp_path / "x" / "last.ckpt", cfg) == "kept"
    # a checkpoint written before names were recorded: job 4 of a sweep, as its folder's .hydra/hydra.yaml says
    job = tmp_path / "sweep" / "4_baseline_seed2"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "hydra.yaml").write_text("hydra:\n  mode: MULTIRUN\n  job:\n    num: 4\n")
    assert resumed_wandb_name({}, job / "checkpoints" / "last.ckpt", cfg) == "baseline-seed2-job4"
    single = tmp_path / "runs" / "2026-01-01_10-00-00"
    (single / ".hydra").mkdir(parents=True)
    (single / ".hydra" / "hydra.yaml").write_text("hydra:\n  mode: RUN\n  job:\n    num: 0\n")
    assert resumed_wandb_name({}, single / "checkpoints" / "last.ckpt", cfg) == "baseline-seed2"
