"""A sweep started again in the folder of an earlier one (the same ``hydra.sweep.dir``), or a run given the folder
of an earlier run: the earlier results are set aside when the job starts, so a job that then fails is listed as
missing by the sweep table, not counted with the earlier numbers under the settings Hydra wrote for it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_script
from vpr.report import main as report


def earlier_job(folder: Path, seed: int, r1: float) -> bytes:
    """A finished job of an earlier sweep, as train.py leaves it: its settings and its results (README's layout)."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(f"- experiment=city_baseline\n- seed={seed}\n")
    (folder / "config.yaml").write_text(f"variant: baseline\nseed: {seed}\ntask_name: train\ndata:\n  name: city\n")
    results = {"dataset": "city", "split": "test", "recall_at": {"1": r1, "5": 0.9, "10": 1.0, "20": 1.0}}
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "results.md").write_text("| Recall | trained |\n")
    (folder / "predictions.csv").write_text("query,rank,database\n")
    (folder / "pictures").mkdir()
    (folder / "pictures" / "test_retrievals.png").write_bytes(b"\x89PNG earlier")
    return (folder / "results.json").read_bytes()


def test_a_failed_job_of_a_sweep_run_again_in_its_folder_is_missing_not_the_earlier_result(data_dir, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    earlier = earlier_job(sweep / "0_baseline_seed1", 1, 0.5)
    earlier_job(sweep / "1_baseline_seed2", 2, 0.7)
    proc = run_script(
        "train.py",
        "-m",
        "experiment=city_baseline",
        "data.prepare.preset=tiny",
        f"paths.data_dir={data_dir}",
        "logger=none",
        "seed=1",
        "monitor=train/loss",  # refused before any work: the job fails
        f"hydra.sweep.dir={sweep}",
        tmp=tmp_path,
        check=False,
    )
    assert proc.returncode == 2 and "error: monitor=train/loss" in proc.stderr, proc.stderr[-3000:]
    job = sweep / "0_baseline_seed1"
    assert not [p.name for p in job.iterdir() if p.name.startswith(("results", "predictions", "pictures"))]
    (kept,) = (job / ".earlier").iterdir()  # nothing lost: the earlier run's files, byte for byte
    assert (kept / "results.json").read_bytes() == earlier
    assert sorted(p.name for p in kept.iterdir()) == ["pictures", "predictions.csv", "results.json", "results.md"]
    assert (kept / "pictures" / "test_retrievals.png").read_bytes() == b"\x89PNG earlier"
    assert "held the results of an earlier run" in (job / "train.log").read_text()

    capsys.readouterr()
    assert report([str(sweep), "--no-plot"]) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("| baseline"))
    # job 1 alone (R@1 0.7 of the other seed): one run, no std; the failed job 0 is listed, not averaged in
    assert row.split(" | ")[1:3] == ["70.0 ± –", "90.0 ± –"] and "| 1 | city/test |" in row, row
    assert "- missing: 0_baseline_seed1" in table


@pytest.mark.parametrize("script", ["train.py", "eval.py"])
def test_a_run_given_the_folder_of_an_earlier_run_sets_its_results_aside(data_dir, tmp_path, script):
    run = tmp_path / "run"
    earlier = earlier_job(run, 1, 0.5)
    proc = run_script(
        script,
        "experiment=city_baseline",
        "data.prepare.preset=tiny",
        f"paths.data_dir={data_dir}",
        "logger=none",
        "model.recall_at=[0]",  # refused before any work by both scripts
        f"hydra.run.dir={run}",
        tmp=tmp_path,
        check=False,
    )
    assert proc.returncode == 2 and "error: model.recall_at=[0]" in proc.stderr, proc.stderr[-3000:]
    assert not (run / "results.json").exists()
    assert [(p / "results.json").read_bytes() for p in (run / ".earlier").iterdir()] == [earlier]


def test_a_resumed_run_keeps_the_untrained_results_of_its_start(tmp_path):
    """A sweep continued with ckpt_path=last in its own folders: the untrained network is not tested again, so its
    results stay; the trained results are set aside as for any run."""
    from tests.conftest import compose_script
    from vpr.run.train import _run_training

    run = tmp_path / "run"
    earlier_job(run, 1, 0.5)
    (run / "results_untrained.json").write_text('{"untrained": true}')
    cfg = compose_script("train", "experiment=city_baseline", f"paths.output_dir={run}", "ckpt_path=last")
    cfg.model.recall_at = [0]  # refused after the set-aside, before any work
    with pytest.raises(Exception, match="recall_at"):
        _run_training(cfg)
    assert (run / "results_untrained.json").read_text() == '{"untrained": true}'
    assert not (run / "results.json").exists()
    (kept,) = (run / ".earlier").iterdir()
    assert "results_untrained.json" not in [p.name for p in kept.iterdir()]

    cfg.ckpt_path = None  # a new run in the folder: the earlier start's untrained results go too
    with pytest.raises(Exception, match="recall_at"):
        _run_training(cfg)
    assert not (run / "results_untrained.json").exists()


def test_a_new_run_in_the_folder_of_an_earlier_run_sets_its_checkpoints_aside(tmp_path, monkeypatch):
    """A run given an earlier run's hydra.run.dir (not resumed) writes its config.yaml beside the earlier run's
    checkpoints: left there, ckpt_path=last of the new run's settings would resume the earlier network (also when
    the new run ended before its first checkpoint). They go to .earlier/<time>/checkpoints/, byte for byte; a resumed
    run keeps them (its checkpoints continue there), and so does a new run whose init_weights names one of them,
    which copies them there."""
    import torch

    import vpr.run.train
    from tests.conftest import compose_script
    from vpr.checkpoints import NothingToResume, resolve_ckpt_path

    logs = tmp_path / "logs"
    run = logs / "train" / "runs" / "r"
    earlier_job(run, 1, 0.5)
    (run / "checkpoints").mkdir()
    for name in ("last.ckpt", "epoch001.ckpt"):  # what Lightning saves: a torch.save'd dict
        torch.save(
            {"epoch": 1, "state_dict": {}, "vpr_config": {"optimizer": {"lr": 0.001}}}, run / "checkpoints" / name
        )
    earlier = {name: (run / "checkpoints" / name).read_bytes() for name in ("last.ckpt", "epoch001.ckpt")}
    seen = []
    monkeypatch.setattr(vpr.run.train, "_train_in", lambda cfg, out, ckpt, state: seen.append(ckpt) or {})

    cfg = compose_script(
        "train", "experiment=city_baseline", f"paths.log_dir={logs}", f"paths.output_dir={run}", "optimizer.lr=0.01"
    )
    vpr.run.train._run_training(cfg)
    assert seen == [None]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [".train.lock"]
    (kept,) = (run / ".earlier").iterdir()  # the same folder as the earlier run's results
    assert {p.name: p.read_bytes() for p in (kept / "checkpoints").iterdir()} == earlier
    assert (kept / "results.json").is_file()
    # the earlier run's checkpoint is no longer taken for one of the new run's settings (lr 0.01, in config.yaml)
    with pytest.raises(NothingToResume):
        resolve_ckpt_path("last", str(logs), "train", same_run_as=cfg)
    with pytest.raises(NothingToResume):  # nor by eval.py's ckpt_path=last: set aside is not a run's
        resolve_ckpt_path("last", str(logs), "train")

    # a resumed run in its own folder keeps its checkpoints
    for name, data in earlier.items():
        (run / "checkpoints" / name).write_bytes(data)
    cfg.ckpt_path = str(run / "checkpoints" / "last.ckpt")
    vpr.run.train._run_training(cfg)
    assert seen[-1] == str(run / "checkpoints" / "last.ckpt")
    assert {p.name for p in (run / "checkpoints").iterdir()} == {".train.lock", "last.ckpt", "epoch001.ckpt"}

    # and so does a new run that starts from one of them (init_weights=<this folder>/checkpoints/...), its DDP
    # processes reading the file again; copies of them go to .earlier/<time>/checkpoints/, for the new run's
    # last.ckpt replaces the one in place
    cfg.ckpt_path, cfg.init_weights = None, str(run / "checkpoints" / "epoch001.ckpt")
    vpr.run.train._run_training(cfg)
    assert seen[-1] is None
    assert {p.name for p in (run / "checkpoints").iterdir()} == {".train.lock", "last.ckpt", "epoch001.ckpt"}
    copies = [f / "checkpoints" for f in (run / ".earlier").iterdir() if f != kept]
    assert [{p.name: p.read_bytes() for p in c.iterdir()} for c in copies] == [earlier]
