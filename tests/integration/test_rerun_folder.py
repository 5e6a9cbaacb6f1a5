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
