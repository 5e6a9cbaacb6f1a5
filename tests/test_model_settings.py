"""train.py's settings are checked before any data work (validate_config): the network's (the module and
NetVLAD check them when they are built, after the data is read and a synthetic city generated), and counts given null."""

from __future__ import annotations

import pytest

from vpr.api import compose_config
from vpr.errors import ConfigError

BASE = ["experiment=city_baseline", "trainer=cpu", "logger=none"]


def validate(*overrides: str) -> None:
    from vpr.run.train import validate_config

    validate_config(compose_config("train", [*BASE, *overrides]))


NETVLAD = r"^head \(vpr\.models\.heads\.netvlad\.NetVLAD\): "


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.num_clusters=0", NETVLAD + r"num_clusters=0 \(model\.num_clusters\): NetVLAD needs at least 2"),
        ("model.num_clusters=1", NETVLAD + r"num_clusters=1 \(model\.num_clusters\)"),
        ("model.num_clusters=x", NETVLAD + r"num_clusters='x' \(model\.num_clusters\)"),
        ("model.num_clusters=null", NETVLAD + r"num_clusters=None \(model\.num_clusters\)"),
        ("head.version=v3", NETVLAD + r"Unknown NetVLAD version='v3'; choose 'v1' or 'v2'"),
        ("model.channels_last=maybe", r"^model\.channels_last='maybe': choose auto, true or false$"),
        ("model.compile=yes", r"^model\.compile='yes': choose false, true or a torch\.compile mode"),
        ("model.lr_multipliers.backbone=-1", r"^model\.lr_multipliers\.backbone=-1: must be a number >= 0"),
        ("model.lr_multipliers.head=x", r"^model\.lr_multipliers\.head='x': must be a number >= 0"),
        ("+model.lr_multipliers.heads=2", r"^model\.lr_multipliers\.heads: no such component"),
        # read by nothing: the run went on without the setting, without a word
        (
            "+model.freeze_batchnrom=true",
            r"^model\.freeze_batchnrom: no such model setting; did you mean model\.freeze_",
        ),
        ("+model.bogus=1", r"^model\.bogus: no such model setting; the settings are recall_at, num_clusters, "),
    ],
)
def test_refused_network_settings_fail_before_any_data_work(override, message):
    with pytest.raises(ConfigError, match=message):
        validate(override)


@pytest.mark.parametrize(
    "override",
    ["model.num_clusters=2", "head.version=v2", "model.channels_last=true", "model.compile=max-autotune", "head=gem"],
)
def test_valid_network_settings_pass(override):
    validate(override)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # each stopped with a TypeError traceback (int(None), None < 1) once the data was read, or before
        ("seed=null", r"^seed=null: must be a whole number >= 0 \(the seed of weights"),
        ("mining.negatives_per_query=null", r"^mining\.negatives_per_query=null: must be a whole number >= 1"),
        ("data.batch_size=null", r"^data\.batch_size=null: must be a whole number >= 1"),
        ("data.eval_batch_size=null", r"^data\.eval_batch_size=null: must be a whole number >= 1"),
        ("data.num_workers=null", r"^data\.num_workers=null: must be a whole number >= 0"),
        ("trainer.max_epochs=null", r"^trainer\.max_epochs=null: must be a whole number >= 1"),
        ("cluster.images=null", r"^cluster\.images=null: must be a whole number >= 1"),
        ("cluster.seed=null", r"^cluster\.seed=null: must be a whole number >= 0"),
    ],
)
def test_null_where_a_count_is_needed_is_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        validate(override)


@pytest.mark.parametrize("override", ["mining.database_subset=null", "checkpoint_every_n_steps=null"])
def test_null_that_means_none_passes(override):
    validate(override)


def test_every_experiment_passes_the_network_checks():
    """Each experiment's model.* keys are settings the project reads (the paper_* ones train on a GPU: the checks
    of the network alone are asked)."""
    from vpr.api import CONFIG_DIR
    from vpr.build import check_model_settings

    names = sorted(f.stem for f in (CONFIG_DIR / "experiment").glob("*.yaml"))
    assert names
    for name in names:
        check_model_settings(compose_config("train", [f"experiment={name}", "logger=none"]))
