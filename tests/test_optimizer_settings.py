"""The optimizer and scheduler settings are checked before any work: built on a probe and stepped through the
run's epochs, so a setting that torch accepts at construction but fails on later is refused up front."""

import pytest
from omegaconf import OmegaConf

from vpr.build import check_optimizer_settings, instantiate_setting
from vpr.errors import ConfigError


def check(scheduler: dict | None, max_epochs: int = 30, **optimizer):
    cfg = OmegaConf.create(
        {
            "optimizer": {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 1e-3, "momentum": 0.9, **optimizer},
            "scheduler": scheduler,
            "trainer": {"max_epochs": max_epochs},
        }
    )
    make_scheduler = instantiate_setting("scheduler", cfg.scheduler) if scheduler else None
    check_optimizer_settings(cfg, instantiate_setting("optimizer", cfg.optimizer), make_scheduler)


def step_lr(**kwargs):
    return {"_target_": "torch.optim.lr_scheduler.StepLR", "_partial_": True, "step_size": 5, "gamma": 0.5, **kwargs}


def test_good_settings_pass():
    check(step_lr())
    check(None)


def test_text_where_a_number_belongs_is_named():
    # torch's StepLR stores gamma='abc' without looking at it; the first decay (epoch 5) would fail
    with pytest.raises(ConfigError, match=r"^scheduler\.gamma='abc': must be a number$"):
        check(step_lr(gamma="abc"))
    with pytest.raises(ConfigError, match=r"^optimizer\.momentum='fast': must be a number$"):
        check(None, momentum="fast")


def test_a_failure_at_a_later_epoch_is_found_by_stepping():
    # a list is not text, so only stepping finds it: at epoch 2, lr * [0.5] raises
    with pytest.raises(ConfigError, match=r"^scheduler \(torch\.optim\.lr_scheduler\.StepLR\): "):
        check(step_lr(step_size=2, gamma=[0.5]))
    # ... and only if the run reaches that epoch
    check(step_lr(step_size=2, gamma=[0.5]), max_epochs=1)


def test_a_zero_step_size_is_named_instead_of_a_division_by_zero():
    # StepLR takes step_size=0 and divides by it at its first step
    with pytest.raises(
        ConfigError, match=r"^scheduler \(torch\.optim\.lr_scheduler\.StepLR\): .*; scheduler\.step_size=0 cannot"
    ):
        check(step_lr(step_size=0))


def test_constructor_errors_name_the_target():
    with pytest.raises(ConfigError, match=r"^optimizer \(torch\.optim\.SGD\): Invalid learning rate: -1"):
        check(None, lr=-1)


def test_adam_from_the_configs_honours_the_learning_rate_multipliers(tmp_path):
    import torch

    from tests.conftest import compose_script
    from vpr.build import build_module

    cfg = compose_script(
        "train",
        "optimizer=adam",
        "optimizer.lr=2e-5",
        "attention=crn",
        "model.lr_multipliers={attention: 10.0}",
        "backbone=resnet18",
        "backbone.pretrained=false",
        "model.num_clusters=4",
        f"paths.output_dir={tmp_path}",
    )
    optimizer = build_module(cfg).configure_optimizers()["optimizer"]
    assert type(optimizer) is torch.optim.Adam
    rates = {group["name"]: group["lr"] for group in optimizer.param_groups}
    assert rates == pytest.approx({"backbone": 2e-5, "attention": 2e-4, "head": 2e-5})
    assert all(group["weight_decay"] == 0.0 for group in optimizer.param_groups)


def test_text_for_a_number_is_named_in_any_component():
    """The rule of instantiate_setting, for every group: a loss takes margin='abc' and would fail only in the first
    training step; a whole number and a flag say so."""
    from vpr.build import instantiate_setting

    with pytest.raises(ConfigError, match=r"^loss\.margin='abc': must be a number$"):
        instantiate_setting("loss", OmegaConf.create({"_target_": "vpr.losses.TripletMarginLoss", "margin": "abc"}))
    with pytest.raises(ConfigError, match=r"^scheduler\.step_size='five': must be a whole number$"):
        check(step_lr(step_size="five"))
    with pytest.raises(ConfigError, match=r"^optimizer\.nesterov='yes': must be true or false$"):
        check(None, nesterov="yes")
    instantiate_setting("loss", OmegaConf.create({"_target_": "vpr.losses.TripletMarginLoss", "margin": 0.2}))


def test_parameters_that_also_take_text_are_left_alone():
    """Lightning's Trainer takes deterministic: bool | Literal["warn"] | None; channels-last takes "auto"."""
    from vpr.build import _text_for_a_number

    conf = OmegaConf.create(
        {
            "_target_": "lightning.pytorch.Trainer",
            "deterministic": "warn",
            "precision": "bf16-mixed",
            "max_epochs": "abc",
        }
    )
    assert _text_for_a_number("trainer", conf) == "trainer.max_epochs='abc': must be a whole number"
    del conf["max_epochs"]
    assert _text_for_a_number("trainer", conf) is None


def test_no_shipped_config_trips_the_number_check():
    """Every option of every config group and every experiment, composed for train.py and eval.py: no value of the
    project's own configs is mistaken for text where a number belongs (trainer.sync_batchnorm='auto' is replaced by
    build_trainer before the Trainer sees it)."""
    from omegaconf import DictConfig

    from tests.conftest import compose_script
    from vpr.api import CONFIG_DIR
    from vpr.build import _text_for_a_number

    given = {"trainer": {"sync_batchnorm", "logger", "callbacks", "plugins"}}
    found = []

    def walk(node, path):
        if "_target_" in node and (message := _text_for_a_number(path, node, given.get(path, set()))):
            found.append(message)
        for key in node:
            value = node._get_node(key)
            if isinstance(value, DictConfig) and not value._is_missing():
                walk(value, f"{path}.{key}" if path else str(key))

    overrides = [[f"experiment={p.stem}"] for p in sorted((CONFIG_DIR / "experiment").glob("*.yaml"))]
    for group in sorted(d.name for d in CONFIG_DIR.iterdir() if d.is_dir()):
        if group not in ("hydra", "experiment", "paths"):
            overrides += [[f"{group}={p.stem}"] for p in sorted((CONFIG_DIR / group).glob("*.yaml"))]
    for chosen in overrides:
        for script in ("train", "eval"):
            walk(compose_script(script, *chosen, "paths.output_dir=unused"), "")
    assert found == []
    assert len(overrides) > 40


def test_a_mistyped_parameter_names_the_closest_one():
    from omegaconf import OmegaConf

    from vpr.build import instantiate_setting

    with pytest.raises(ConfigError, match=r"unexpected keyword argument 'margn'; did you mean loss\.margin\?"):
        instantiate_setting("loss", OmegaConf.create({"_target_": "vpr.losses.TripletMarginLoss", "margn": 0.1}))
    with pytest.raises(ConfigError, match=r"unexpected keyword argument 'zzz'; its parameters: margin"):
        instantiate_setting("loss", OmegaConf.create({"_target_": "vpr.losses.TripletMarginLoss", "zzz": 0.1}))


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("32-true", "32-true"),
        (32, "32-true"),
        ("32", "32-true"),
        ("bf16", "bf16-mixed"),
        (16, "16-mixed"),
        (None, "32-true"),
    ],
)
def test_lightnings_short_precisions_are_the_mixed_ones(setting, expected):
    from vpr.build import check_precision

    assert check_precision(setting) == expected


def test_whole_model_half_precision_is_refused_with_the_mixed_one_to_use():
    from vpr.build import check_precision

    with pytest.raises(ConfigError, match=r"^trainer\.precision=bf16-true: the whole model in one precision .* bf16"):
        check_precision("bf16-true")


def test_each_training_count_is_checked_in_one_place():
    """train.py's own whole-number settings are none of those every script checks (check_common_settings): a setting
    checked in two places gets two messages to keep in step."""
    from vpr.build import check_common_settings
    from vpr.run.train import WHOLE_NUMBERS

    for key in WHOLE_NUMBERS:
        cfg = OmegaConf.create({"seed": 0})
        OmegaConf.update(cfg, key, -5, force_add=True)
        check_common_settings(cfg, trainer=False)  # not one of the common settings: not refused there


@pytest.mark.parametrize("devices", ["0", "[]", "''"])
def test_no_training_device_is_refused_before_any_work(devices):
    """Lightning refuses trainer.devices=0 when the Trainer is made, which train.py does after reading the data,
    building the network and clustering its centroids."""
    from vpr.api import compose_config
    from vpr.errors import ConfigError
    from vpr.run.train import validate_config

    validate_config(compose_config("train", ["experiment=city_baseline", "trainer=cpu", "trainer.devices=1"]))
    cfg = compose_config("train", ["experiment=city_baseline", "trainer=cpu", f"trainer.devices={devices}"])
    with pytest.raises(ConfigError, match=r"^trainer\.devices=.*: no device to train on"):
        validate_config(cfg)
