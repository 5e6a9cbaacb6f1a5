"""train.py's trainer.* settings are checked before any work (validate_config): Lightning refuses most of them only
when the Trainer is made, after the data, the network and k-means, and takes some without a word."""

from __future__ import annotations

import os

import pytest
import torch

from vpr.api import compose_config
from vpr.errors import ConfigError

BASE = ["experiment=city_baseline", "trainer=cpu", "logger=none"]


def validate(*overrides: str) -> None:
    from vpr.run.train import validate_config

    validate_config(compose_config("train", [*BASE, *overrides]))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+trainer.max_steps=-5", r"^trainer \(lightning\.pytorch\.Trainer\): `max_steps` must be"),
        ("+trainer.gradient_clip_algorithm=bogus", r"^trainer \(lightning\.pytorch\.Trainer\): .*gradient_clip_algo"),
        ("+trainer.limit_train_batches=-1", r"^trainer \(lightning\.pytorch\.Trainer\): .*limit_train_batches"),
        ("trainer.strategy=bogus", r"^trainer \(lightning\.pytorch\.Trainer\): .*strategy='bogus'"),
        ("callbacks.checkpoint.mode=bogus", r"^callbacks\.checkpoint \(.*ModelCheckpoint\): `mode`"),
        # taken by Lightning, then a ZeroDivisionError at the first training step (0) or a silent run (-2)
        ("+trainer.accumulate_grad_batches=0", r"^trainer\.accumulate_grad_batches=0: must be a whole number >= 1"),
        ("+trainer.accumulate_grad_batches=-2", r"^trainer\.accumulate_grad_batches=-2: must be a whole number >= 1"),
        # taken by Lightning as "no switch": the run was not deterministic, without a word
        ("trainer.deterministic=ture", r"^trainer\.deterministic='ture': choose true .*warn"),
        ("trainer.deterministic=1", r"^trainer\.deterministic=1: choose true"),
        # taken by Lightning: -5 logs every 5th step, -1 and 0.5 every step (step % n == 0), text is refused as text
        ("trainer.log_every_n_steps=-1", r"^trainer\.log_every_n_steps=-1: must be a whole number >= 0"),
        ("trainer.log_every_n_steps=0.5", r"^trainer\.log_every_n_steps=0\.5: must be a whole number >= 0"),
        # taken by Lightning: below -1 (all batches) no sanity check runs, as with 0
        ("trainer.num_sanity_val_steps=-5", r"^trainer\.num_sanity_val_steps=-5: must be a whole number >= -1"),
        # taken by Lightning: a negative minimum is none; one above max_epochs (2 here) stops at max_epochs
        ("+trainer.min_epochs=-5", r"^trainer\.min_epochs=-5: must be a whole number >= 0"),
        ("+trainer.min_epochs=3", r"^trainer\.min_epochs=3 is more than trainer\.max_epochs=2"),
        ("+trainer.min_steps=-3", r"^trainer\.min_steps=-3: must be a whole number >= 0"),
        # taken by Lightning: a negative clip value clips nothing (clip_val <= 0 returns)
        ("+trainer.gradient_clip_val=-1", r"^trainer\.gradient_clip_val=-1: must be a number >= 0"),
    ],
)
def test_refused_trainer_settings_fail_before_any_work(override, message):
    with pytest.raises(ConfigError, match=message):
        validate(override)


@pytest.mark.parametrize(
    "override",
    [
        "+trainer.accumulate_grad_batches=2",
        "trainer.deterministic=true",
        "trainer.deterministic=false",
        "+trainer.max_steps=-1",
        "trainer.log_every_n_steps=0",
        "trainer.num_sanity_val_steps=-1",
        "+trainer.min_epochs=2",
        "+trainer.gradient_clip_val=0.5",
        "+trainer.gradient_clip_val=0",
        "+trainer.detect_anomaly=true",
    ],
)
def test_valid_trainer_settings_pass(override):
    validate(override)


def test_the_check_makes_no_wandb_logger_and_leaves_torch_switches_alone(monkeypatch):
    """The Trainer made for the check has no loggers (no W&B logger: its run would be set up before clustering,
    and its messages said twice), and torch's global switches that a Trainer sets are as they were."""
    from lightning.pytorch.loggers import WandbLogger

    def made(*args, **kwargs):
        raise AssertionError("a W&B logger made by the settings check")

    monkeypatch.setattr(WandbLogger, "__init__", made)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )
    try:
        from vpr.run.train import validate_config

        opposite = [f"trainer.deterministic={not before[0]}", f"+trainer.benchmark={not before[2]}"]  # to switch
        cfg = compose_config("train", ["experiment=city_baseline", "trainer=cpu", "logger=wandb", *opposite])
        validate_config(cfg)
        after = (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.benchmark,
        )
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark = before[2]
    assert after == before
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=-1", r"^optimizer \(torch\.optim\.SGD\): Invalid learning rate: -1"),
        ("optimizer.momentum=-0.5", r"^optimizer \(torch\.optim\.SGD\): Invalid momentum value: -0\.5"),
        ("+scheduler.last_epoch=5", r"^scheduler \(torch\.optim\.lr_scheduler\.StepLR\): .*initial_lr"),
    ],
)
def test_refused_optimizer_settings_fail_before_any_work(override, message):
    """Torch refuses them when Lightning's fit builds the optimizer and scheduler: validate_config, before the data
    is read, asks it on a probe parameter."""
    with pytest.raises(ConfigError, match=message):
        validate(override)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # Lightning's ModelCheckpoint refused these after the first epoch's validation (no such logged metric);
        # val/R@x ended with a ValueError traceback
        ("monitor=val/R@x", r"^monitor=val/R@x: the validation metrics are val/R@N, N one of model\.recall_at="),
        ("monitor=val/loss", r"^monitor=val/loss: the validation metrics are val/R@N"),
        ("monitor=val/R@05", r"^monitor=val/R@05: the validation metrics are val/R@N"),
        ("monitor=null", r"^monitor=None: choose a validation metric"),
    ],
)
def test_refused_monitor_fails_before_any_work(override, message):
    with pytest.raises(ConfigError, match=message):
        validate(override)


@pytest.mark.parametrize("override", ["monitor=val/R@5", "monitor=val/R@20"])
def test_valid_monitor_passes(override):
    validate(override)
