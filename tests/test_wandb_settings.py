"""What reaches W&B from the logger settings, without a run: the arguments ``wandb.init`` receives (recorded by a
stand-in for it), for WANDB_MODE=disabled, the W&B settings of configs/logger/wandb.yaml and a variant's tags."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from vpr.api import compose_config
from vpr.build import build_loggers
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
