"""Sweeps through hydra-submitit-launcher: the SLURM launcher config composes, and a 2-job sweep runs with the
local submitit launcher (jobs in parallel processes) on a fresh data folder, both jobs generating the city at once."""

from __future__ import annotations

import json

import pytest

from tests.conftest import compose_script, run_script
from tests.test_checkpoint_compat import random_checkpoint

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the [slurm] extra is not installed")


def test_slurm_launcher_config_composes():
    cfg = compose_script(
        "train",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.gpus_per_node=4",
        "hydra.launcher.tasks_per_node=4",
        hydra=True,
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.tasks_per_node) == ("gpu", 4, 4)
    assert launcher.timeout_min > 60 and launcher.submitit_folder.endswith(".submitit/%j")


def test_two_job_sweep_with_the_local_submitit_launcher(tmp_path):
    random_checkpoint(tmp_path / "model.ckpt")
    sweep = tmp_path / "sweep"
    run_script(
        "eval.py",
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=5",
        "seed=1,2",
        f"ckpt_path={tmp_path / 'model.ckpt'}",
        "data.prepare.preset=tiny",
        f"paths.data_dir={tmp_path / 'data'}",
        "data.num_workers=0",
        f"hydra.sweep.dir={sweep}",
        tmp=tmp_path,
    )
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in jobs] == ["0_eval_seed1", "1_eval_seed2"]  # no variant: named by the task
    results = [json.loads((p / "results.json").read_text()) for p in jobs]
    assert results[0]["recall_at"] == results[1]["recall_at"]  # same checkpoint, same network
    assert len([p for p in (sweep / ".submitit").iterdir() if p.name != "%j"]) == 2  # two submitit jobs
    assert (tmp_path / "data" / "city_tiny_seed0" / "city.json").is_file()  # one complete city for both
