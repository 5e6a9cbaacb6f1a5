"""What reaches W&B from the logger settings, without a run: the arguments ``wandb.init`` receives (recorded by a
stand-in for it), for WANDB_MODE=disabled and the W&B settings of configs/logger/wandb.yaml."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from vpr.api import compose_config
from vpr.build import build_loggers


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


def test_wandb_mode_disabled_builds_no_wandb_logger_and_says_so(wandb_init, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    caplog.set_level(logging.INFO, logger="vpr.build")
    for overrides in ([], ["logger.wandb.offline=true"]):
        loggers = build_loggers(config(tmp_path, "experiment=city_baseline", *overrides))
        assert [type(lg).__name__ for lg in loggers] == [], overrides
    assert wandb_init == []
    said = [r.getMessage() for r in caplog.records if "W&B" in r.getMessage()]
    assert said == ["W&B is off (WANDB_MODE=disabled): this run logs nothing to W&B"] * 2, said
    assert not (tmp_path / "wandb").exists()
