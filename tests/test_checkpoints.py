"""ckpt_path resolution: ``last`` picks the newest run of the same experiment settings and says so."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from vpr.checkpoints import resolve_ckpt_path
from vpr.errors import ConfigError


def run(log_dir: Path, name: str, variant: str, seed: int, mtime: int, tag: str = "city-tiny-seed0") -> Path:
    folder = log_dir / "train" / "runs" / name
    (folder / "checkpoints").mkdir(parents=True)
    OmegaConf.save(current(variant, seed, tag), folder / "config.yaml")
    ckpt = folder / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "epoch": 0}, ckpt)
    os.utime(ckpt, (mtime, mtime))
    return ckpt


def current(variant: str, seed: int = 1, tag: str = "city-tiny-seed0"):
    return OmegaConf.create(
        {
            "variant": variant,
            "seed": seed,
            "backbone": {"name": "resnet18"},
            "attention": {},
            "head": {"k": 8},
            "loss": {},
            "data": {"name": "city", "tag": tag, "image_size": [48, 64]},
        }
    )


def test_last_picks_the_newest_run_of_the_same_settings(tmp_path):
    old_se = run(tmp_path, "a", "se", 1, 1000)
    run(tmp_path, "b", "baseline", 1, 2000)
    newer_se = run(tmp_path, "c", "se", 1, 3000)
    run(tmp_path, "d", "se", 2, 4000)  # other seed: another run
    run(tmp_path, "e", "se", 1, 4500, tag="city-default-seed0")  # another city (same data.name): another run
    assert resolve_ckpt_path("last", str(tmp_path), "train", same_run_as=current("se")) == str(newer_se)
    os.utime(old_se, (5000, 5000))
    assert resolve_ckpt_path("last", str(tmp_path), "train", same_run_as=current("se")) == str(old_se)
    # without settings to match (eval.py): the newest of all
    assert resolve_ckpt_path("last", str(tmp_path), "train").endswith("a/checkpoints/last.ckpt")


def test_last_refuses_when_no_run_matches(tmp_path):
    run(tmp_path, "b", "baseline", 1, 2000)
    with pytest.raises(ConfigError, match=r"none of the 1 last.ckpt.*newest is .*b/checkpoints/last.ckpt"):
        resolve_ckpt_path("last", str(tmp_path), "train", same_run_as=current("crn"))
    with pytest.raises(ConfigError, match="no last.ckpt"):
        resolve_ckpt_path("last", str(tmp_path / "empty"), "train")


def set_aside(log_dir: Path, name: str, stamp: str, mtime: int) -> Path:
    """A last.ckpt where a new run in the folder of run ``name`` moved that earlier run's checkpoints."""
    folder = log_dir / "train" / "runs" / name / ".earlier" / stamp / "checkpoints"
    folder.mkdir(parents=True)
    ckpt = folder / "last.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "epoch": 3}, ckpt)
    os.utime(ckpt, (mtime, mtime))
    return ckpt


def test_the_error_of_last_names_the_checkpoints_set_aside_and_how_to_resume_them(tmp_path):
    older = set_aside(tmp_path, "r", "2026-01-01_10-00-00", 1000)
    newer = set_aside(tmp_path, "r", "2026-01-02_10-00-00", 2000)
    # Only set-aside checkpoints: none resumed by last, both named, the newest as the ckpt_path to give.
    with pytest.raises(ConfigError) as e:
        resolve_ckpt_path("last", str(tmp_path), "train", same_run_as=current("se"))
    text = str(e.value)
    assert text.startswith(f"ckpt_path=last: no last.ckpt under {tmp_path / 'train'}; train first or give a path")
    assert "; train first or give a path. Set aside in .earlier/ by a new run in their folder" in text
    assert text.index(str(newer)) < text.index(str(older))  # newest first
    assert f"ckpt_path={newer}" in text
    # A visible run of other settings: the set-aside ones are named too.
    run(tmp_path, "b", "baseline", 1, 3000)
    with pytest.raises(ConfigError, match=r"none of the 1 last.ckpt") as e:
        resolve_ckpt_path("last", str(tmp_path), "train", same_run_as=current("se"))
    assert f"ckpt_path={newer}" in str(e.value) and str(older) in str(e.value)
    # the path the error gives resumes it
    assert resolve_ckpt_path(f"{newer}", str(tmp_path), "train", same_run_as=current("se")) == str(newer)
    # without any set aside, the error is as it was
    with pytest.raises(ConfigError) as e:
        resolve_ckpt_path("last", str(tmp_path / "empty"), "train")
    assert ".earlier" not in str(e.value)


def test_last_skips_an_unreadable_checkpoint_for_the_newest_intact_one(tmp_path):
    ckpt = run(tmp_path, "a", "se", 1, 1000)
    best = ckpt.parent / "epoch003.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1)}, "epoch": 3}, best)
    os.utime(best, (900, 900))
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # a kill in the middle of a non-atomic write
    assert resolve_ckpt_path("last", str(tmp_path), "train", same_run_as=current("se")) == str(best)


def _stored(tmp_path: Path, **components) -> Path:
    config = {
        "backbone": {"_target_": "vpr.models.backbones.build_backbone"},
        "attention": {},
        "head": {},
        "loss": {},
        "model": {},
        "seed": 1,
        **components,
    }
    path = tmp_path / "run.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "vpr_config": config}, path)
    return path


def test_a_stored_component_of_another_package_is_built_only_when_trusted(tmp_path):
    from vpr.checkpoints import read_checkpoint

    path = _stored(tmp_path, attention={"_target_": "myvpr.gates.Gate", "hidden": 3})
    with pytest.raises(
        ConfigError,
        match=r"'myvpr\.gates\.Gate' \(vpr_config\.attention\._target_\).*"
        r"trusted_targets=\[myvpr\]",
    ):
        read_checkpoint(str(path))
    for trusted in (["myvpr"], ["myvpr."]):
        assert read_checkpoint(str(path), trusted=trusted)[1]["attention"]["hidden"] == 3
    with pytest.raises(ConfigError, match="myvprx"):  # a package, not a name prefix
        read_checkpoint(str(_stored(tmp_path, head={"_target_": "myvprx.Head"})), trusted=["myvpr"])
    with pytest.raises(ConfigError, match="trusted_targets=myvpr: a list"):
        read_checkpoint(str(path), trusted="myvpr")


def test_a_stored_loss_is_not_built_from_the_checkpoint_so_not_checked(tmp_path):
    from vpr.checkpoints import read_checkpoint

    assert read_checkpoint(str(_stored(tmp_path, loss={"_target_": "myvpr.losses.Contrastive"})))[1] is not None


def test_network_settings_on_the_command_line_of_a_stored_checkpoint_are_said_to_be_unused(tmp_path, caplog):
    import logging

    from tests.conftest import compose_script
    from vpr.checkpoints import network_from_checkpoint

    overrides = ["attention=se", "model.num_clusters=4", "model.recall_at=[1,5]", f"paths.output_dir={tmp_path}"]
    stored = OmegaConf.to_container(compose_script("eval", f"paths.output_dir={tmp_path}"), resolve=True)
    cfg = compose_script("eval", *overrides)
    with caplog.at_level(logging.WARNING, logger="vpr.checkpoints"):
        network = network_from_checkpoint(cfg, {}, stored, "run.ckpt", overrides)
    assert "run.ckpt stores its network: attention, model.num_clusters on the command line are not used" in caplog.text
    assert network.attention == stored["attention"] and network.model.num_clusters == stored["model"]["num_clusters"]
    assert list(network.model.recall_at) == [1, 5]  # how to evaluate stays the command line's


def test_settings_pick_among_the_runs_of_one_experiment(tmp_path, caplog):
    """Two runs of variant se, seed 1, with learning rates 0.1 (newer) and 0.001: the command line's lr picks its
    own; in a sweep's job (strict) a run must agree; otherwise the newest is taken with a warning naming its lr."""
    import logging

    from vpr.checkpoints import NothingToResume

    def with_lr(name, lr, mtime):
        ckpt = run(tmp_path, name, "se", 1, mtime)
        saved = OmegaConf.load(ckpt.parent.parent / "config.yaml")
        saved.optimizer = {"lr": lr, "momentum": 0.9}
        OmegaConf.save(saved, ckpt.parent.parent / "config.yaml")
        return ckpt

    slow, fast = with_lr("slow", 0.001, 1000), with_lr("fast", 0.1, 2000)

    def asking(lr):
        cfg = current("se")
        cfg.optimizer = {"lr": lr, "momentum": 0.9}
        return cfg

    def resolve(lr, strict):
        keys = {"require" if strict else "prefer": ["optimizer.lr"]}
        return resolve_ckpt_path("last", str(tmp_path), "train", same_run_as=asking(lr), **keys)

    assert resolve(0.001, strict=True) == resolve(0.001, strict=False) == str(slow)
    assert resolve(0.1, strict=True) == str(fast)
    with pytest.raises(NothingToResume, match=r"optimizer.lr=0.01 \(the sweep's other jobs own the rest\)"):
        resolve(0.01, strict=True)
    with caplog.at_level(logging.WARNING, logger="vpr.checkpoints"):
        assert resolve(0.01, strict=False) == str(fast)
    assert (
        "no run of these settings has optimizer.lr=0.01" in caplog.text and "which had optimizer.lr=0.1" in caplog.text
    )


def test_resume_settings_leave_out_the_experiment_and_what_a_resume_may_change():
    from vpr.checkpoints import resume_settings

    overrides = [
        "experiment=city_baseline",
        "optimizer.lr=0.001",
        "seed=1",
        "attention=se",
        "trainer.max_epochs=30",
        "paths.log_dir=/x",
        "hydra.run.dir=/y",
        "ckpt_path=last",
        "data.root=/data",
        "data.num_workers=8",
        "+mining.margin=0.2",
        "logger=wandb",
        "logger.wandb.project=p",
        "optimizer.lr=0.001",
        "data.image_size=[48,64]",
        "optimizer=adam",
    ]
    assert resume_settings(overrides) == ["optimizer.lr", "mining.margin", "optimizer"]


def _run_with(log_dir: Path, name: str, mtime: int, **values) -> Path:
    ckpt = run(log_dir, name, "se", 1, mtime)
    saved = OmegaConf.load(ckpt.parent.parent / "config.yaml")
    for key, value in values.items():
        OmegaConf.update(saved, key.replace("__", "."), value, force_add=True)
    OmegaConf.save(saved, ckpt.parent.parent / "config.yaml")
    return ckpt


def _asking(**values):
    cfg = current("se")
    for key, value in values.items():
        OmegaConf.update(cfg, key.replace("__", "."), value, force_add=True)
    cfg.ckpt_path = "last"
    return cfg


def test_a_sweep_job_resumes_by_what_the_sweep_varies_and_prefers_its_other_settings(tmp_path, monkeypatch):
    """A job of `-m trainer.gradient_clip_val=0.5,1.0 optimizer.lr=0.1 ckpt_path=last`: the swept trainer setting
    must agree (a resume may change trainer.* otherwise), the single-valued lr is preferred; a swept group (data)
    is compared without the settings a resume may change in it (data.root)."""
    import vpr.run.train as train

    clip05 = _run_with(tmp_path, "a", 1000, trainer__gradient_clip_val=0.5, optimizer__lr=0.1)
    _run_with(tmp_path, "b", 2000, trainer__gradient_clip_val=0.5, optimizer__lr=0.001)
    _run_with(tmp_path, "c", 3000, trainer__gradient_clip_val=1.0, optimizer__lr=0.1)
    monkeypatch.setattr(train, "sweep_job", lambda: (0, str(tmp_path / "job")))
    monkeypatch.setattr(train, "swept_settings", lambda: ["trainer.gradient_clip_val", "hydra.launcher.x"])
    monkeypatch.setattr(
        train, "command_line_overrides", lambda: ["trainer.gradient_clip_val=0.5", "optimizer.lr=0.1", "ckpt_path=last"]
    )
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setenv(train.RESUMED_ENV, "")  # checkpoint_to_resume sets it: put back after the test
    cfg = _asking(trainer__gradient_clip_val=0.5, optimizer__lr=0.1, paths__log_dir=str(tmp_path))
    cfg.task_name = "train"
    assert train.checkpoint_to_resume(cfg) == str(clip05)

    monkeypatch.setattr(train, "swept_settings", lambda: ["data"])
    monkeypatch.setattr(train, "command_line_overrides", lambda: ["data=x", "ckpt_path=last"])
    moved = _run_with(tmp_path, "d", 4000, data__root="/old/place", data__num_workers=4)
    cfg = _asking(data__root="/new/place", data__num_workers=8, paths__log_dir=str(tmp_path))
    cfg.task_name = "train"
    assert train.checkpoint_to_resume(cfg) == str(moved)


def test_the_ddp_processes_lightning_starts_take_the_first_ones_choice(tmp_path, monkeypatch):
    import vpr.run.train as train

    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv(train.RESUMED_ENV, str(tmp_path / "chosen.ckpt"))
    monkeypatch.setattr(train, "resolve_ckpt_path", lambda *a, **k: pytest.fail("searched again"))
    assert train.checkpoint_to_resume(_asking()) == str(tmp_path / "chosen.ckpt")
    monkeypatch.setenv(train.RESUMED_ENV, "")  # the first process resumes nothing: neither do the others
    assert train.checkpoint_to_resume(_asking()) is None


def test_eval_of_a_checkpoint_trained_on_another_dataset_says_which_data_it_tests(caplog):
    """A checkpoint trained on Tokyo Time Machine, eval.py with no data on the command line: the default data
    (the synthetic city) is tested, with a warning naming both; none where the command line chooses the data."""
    import logging

    from vpr.checkpoints import with_checkpoint_city

    cfg = OmegaConf.create({"data": {"name": "city", "prepare": {"preset": "default", "seed": 0}}})
    stored = {"data": {"name": "tokyoTM", "root": "/data/tokyo", "prepare": None}}
    with caplog.at_level(logging.WARNING, logger="vpr.checkpoints"):
        assert with_checkpoint_city(cfg, stored, ["ckpt_path=/runs/a/last.ckpt"]).data.name == "city"
    assert "trained on tokyoTM, but the command line chooses no data: evaluating on city" in caplog.text
    for chosen in (["data=tokyotm"], ["test_sets=[tokyo247]"], ["data.name=tokyoTM"], ["experiment=city_main"]):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="vpr.checkpoints"):
            with_checkpoint_city(cfg, stored, ["ckpt_path=/runs/a/last.ckpt", *chosen])
        assert "chooses no data" not in caplog.text, chosen
    caplog.clear()  # trained on a city: tested on that city, no warning
    with caplog.at_level(logging.WARNING, logger="vpr.checkpoints"):
        city = with_checkpoint_city(cfg, {"data": {"name": "city", "prepare": {"preset": "tiny", "seed": 3}}}, [])
    assert (city.data.prepare.preset, city.data.prepare.seed) == ("tiny", 3)
    assert "chooses no data" not in caplog.text


def _trained_checkpoint(tmp_path: Path, *overrides: str, root: str) -> Path:
    """A train.py-style checkpoint (torch.save of the weights and the run's resolved config under vpr_config) of
    a small random network trained, as its config says, on the data of ``overrides`` found at ``root``."""
    from vpr.api import compose_config
    from vpr.build import build_module

    cfg = compose_config(
        "train", ["experiment=city_baseline", "model.num_clusters=8", "data.image_size=[48,64]", *overrides]
    )
    module = build_module(cfg, with_training=False)
    stored = OmegaConf.to_container(cfg, resolve=True)
    stored["data"]["root"] = root  # where the training machine had it
    if stored["data"].get("prepare"):
        stored["data"]["prepare"]["out_dir"] = root
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": module.state_dict(), "vpr_config": stored, "epoch": 0}, path)
    return path


def test_load_model_returns_the_data_the_checkpoint_was_trained_on(tmp_path, monkeypatch):
    """Not the default city of the composed eval config: a Pittsburgh checkpoint's config names pitts30k at its
    training root (data.root= on the overrides moves it), a tiny city's names the tiny city of this machine's
    data folder (configs/data/synthetic.yaml: <paths.data_dir>/city_<preset>_seed<seed>); data chosen by the
    overrides wins, and the image size is the one trained at."""
    from vpr.api import load_model

    monkeypatch.setenv("VPR_DATA_DIR", str(tmp_path / "data"))
    pitts = _trained_checkpoint(tmp_path, "data=pitts30k", root="/trained/on/pitts")
    _, cfg = load_model(pitts, device="cpu")
    assert (cfg.data.name, cfg.data.root, list(cfg.data.image_size)) == ("pitts30k", "/trained/on/pitts", [48, 64])
    _, cfg = load_model(pitts, ["data.root=/here/pitts"], device="cpu")
    assert (cfg.data.name, cfg.data.root) == ("pitts30k", "/here/pitts")
    _, cfg = load_model(pitts, ["data=tokyo247", "data.root=/here/tokyo"], device="cpu")
    assert (cfg.data.name, cfg.data.root) == ("tokyo247", "/here/tokyo")

    city = _trained_checkpoint(tmp_path, "data.prepare.preset=tiny", root="/trained/on/city_tiny_seed0")
    _, cfg = load_model(city, device="cpu")
    assert (cfg.data.name, cfg.data.prepare.preset, cfg.data.prepare.seed) == ("city", "tiny", 0)
    assert cfg.data.root == str(tmp_path / "data" / "city_tiny_seed0") and list(cfg.data.image_size) == [48, 64]
    _, cfg = load_model(city, ["data.prepare.preset=default"], device="cpu")
    assert cfg.data.root == str(tmp_path / "data" / "city_default_seed0")


def test_a_checkpoint_resumed_with_another_loss_or_seed_is_said_with_the_differences(caplog):
    """A checkpoint path given by hand resumes whatever its settings (ckpt_path=last takes only runs of the same
    ones): another loss, seed or image size trains on silently into the checkpoint's folder, whose config.yaml
    then no longer describes its checkpoints. The resume says so once, naming each difference."""
    import logging

    from vpr.checkpoints import identity_differences
    from vpr.run.train import warn_resumed_settings

    stored = OmegaConf.to_container(current("baseline", seed=1))
    stored["loss"] = {"_target_": "vpr.losses.TripletMarginLoss", "margin": 0.1}
    here = current("baseline+stml", seed=2)
    here.loss = {"_target_": "vpr.losses.SharpenedTripletMarginLoss", "margin": 0.1, "margin_pn": 1.4}
    assert identity_differences(stored, here) == [
        "variant (baseline in the checkpoint, baseline+stml here)",
        "seed (1 in the checkpoint, 2 here)",
        "loss._target_ (vpr.losses.TripletMarginLoss in the checkpoint, vpr.losses.SharpenedTripletMarginLoss here)",
        "loss.margin_pn (unset in the checkpoint, 1.4 here)",
    ]
    same = OmegaConf.to_container(here)
    same["data"] = {**same["data"], "root": "/elsewhere", "num_workers": 8}  # what a resume may change
    assert identity_differences(same, here) == []
    assert identity_differences(None, here) == []  # a checkpoint without a stored config: nothing to compare

    with caplog.at_level(logging.WARNING, logger="vpr.run.train"):
        warn_resumed_settings({"vpr_config": same}, "/runs/a/checkpoints/last.ckpt", here)
        assert caplog.records == []
        warn_resumed_settings({"vpr_config": stored}, "/runs/a/checkpoints/last.ckpt", here)
    (record,) = caplog.records
    assert "ckpt_path=/runs/a/checkpoints/last.ckpt was trained with other settings: variant (baseline" in (
        record.getMessage()
    )
    assert "seed (1 in the checkpoint, 2 here)" in record.getMessage()
    assert "init_weights=/runs/a/checkpoints/last.ckpt starts a new run" in record.getMessage()
