"""Two CPU processes (DDP, gloo): training runs with the rank-split mined tuples, and the recall computed on
gathered descriptors equals the single-process evaluation of the same checkpoint."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_script
from tests.integration.test_pipeline import common


@pytest.mark.ddp
def test_ddp_recall_equals_single_process(data_dir, tmp_path):
    run = tmp_path / "ddp"
    proc = run_script(
        "train.py",
        *common(data_dir, tmp_path),
        "strategy=ddp",
        "trainer.devices=2",
        "logger=none",
        "test_untrained=false",
        f"hydra.run.dir={run}",
        tmp=tmp_path,
    )
    # one console: the second process logs to its own file; Lightning has no metric left to ask sync_dist for
    out = proc.stdout + proc.stderr
    assert out.count("epoch 0 round 1/") == 1 and "epoch 0 round 1/" in (run / "train_ddp_process_1.log").read_text()
    assert "sync_dist=True" not in out and "is deprecated" not in out
    ddp = json.loads((run / "results.json").read_text())
    out = tmp_path / "single"
    run_script(
        "eval.py",
        *common(data_dir, tmp_path)[:3],
        f"ckpt_path={ddp['checkpoint']}",
        f"hydra.run.dir={out}",
        tmp=tmp_path,
    )
    single = json.loads((out / "results.json").read_text())
    assert ddp["recall_at"] == single["recall_at"]
    assert ddp["num_queries"] == single["num_queries"]


@pytest.mark.ddp
def test_ddp_job_of_a_sweep_runs_once_in_its_own_folder(data_dir, tmp_path):
    """Lightning starts the other DDP process with the sweep's command line (-m and its lists): that process must
    run this one job in the job's folder, not the sweep again in a sweep folder of its own."""
    proc = run_script(
        "train.py",
        "-m",
        *common(data_dir, tmp_path),
        "strategy=ddp",
        "trainer.devices=2",
        "logger=none",
        "test_untrained=false",
        "seed=1",
        tmp=tmp_path,
    )
    sweeps = sorted((tmp_path / "outputs" / "train" / "multiruns").iterdir())
    assert len(sweeps) == 1, sweeps
    assert [p.name for p in sweeps[0].iterdir() if p.is_dir()] == ["0_baseline_seed1"]
    job = sweeps[0] / "0_baseline_seed1"
    assert json.loads((job / "results.json").read_text())["recall_at"]
    assert (job / "train_ddp_process_1.log").is_file()  # the second process logged in the job's folder
    assert proc.stdout.count("Launching 1 jobs locally") + proc.stderr.count("Launching 1 jobs locally") == 1


def test_sweep_job_command_line_for_the_ddp_processes():
    from vpr.errors import SWEEP_JOB_ENV, sweep_job_argv

    lightning_argv = [
        "-m",
        "experiment=city_baseline",
        "seed=1,2",
        'hydra.run.dir="outputs/train/runs/x"',
        "hydra.job.name=train_ddp_process_1",
        "hydra.output_subdir=null",
    ]
    job = json.dumps({"overrides": ["experiment=city_baseline", "seed=2"], "output_dir": "/s/1_baseline_seed2"})
    assert sweep_job_argv(lightning_argv, {SWEEP_JOB_ENV: job, "LOCAL_RANK": "1"}) == [
        "experiment=city_baseline",
        "seed=2",
        "hydra.run.dir=/s/1_baseline_seed2",
        "hydra.job.name=train_ddp_process_1",
        "hydra.output_subdir=null",
    ]
    # rank 0 (the sweep itself), a single run, or no job recorded: unchanged
    assert sweep_job_argv(lightning_argv, {SWEEP_JOB_ENV: job, "LOCAL_RANK": "0"}) == lightning_argv
    assert sweep_job_argv(lightning_argv[1:], {SWEEP_JOB_ENV: job, "LOCAL_RANK": "1"}) == lightning_argv[1:]
    assert sweep_job_argv(lightning_argv, {"LOCAL_RANK": "1"}) == lightning_argv


@pytest.mark.ddp
def test_ddp_guidance_targets_are_computed_in_shares_and_match_one_process(data_dir, tiny_city, tmp_path):
    """Each of the two processes computes half of the training images' guidance targets; the table they add up
    (written to the cache) equals the targets one process computes from the city's label maps."""
    import numpy as np

    from vpr.data.dataset import load_mat_split
    from vpr.data.guidance import GuidanceTargets, SyntheticLabels

    run, cache = tmp_path / "ddp", tmp_path / "guidance"
    args = [a for a in common(data_dir, tmp_path) if not a.startswith("experiment=")]
    proc = run_script(
        "train.py",
        "experiment=city_deattention",
        *args,
        "strategy=ddp",
        "trainer.devices=2",
        "logger=none",
        "test_untrained=false",
        "+trainer.limit_train_batches=1",
        f"guidance.cache_dir={cache}",
        f"hydra.run.dir={run}",
        tmp=tmp_path,
    )
    files = list(cache.glob("guidance_synthetic_*.npy"))
    assert len(files) == 1
    table = np.load(files[0])
    paths = load_mat_split(tiny_city, "city", "train").image_paths  # database images, then queries
    assert table.shape[0] == len(paths)
    single = GuidanceTargets(SyntheticLabels(tiny_city), ["person", "vehicle"], paths, table.shape[1:])
    np.testing.assert_allclose(table, single.table.numpy(), atol=1e-6)
    half = (len(paths) + 1) // 2, len(paths) // 2
    main_log = (run / "train.log").read_text()
    rank1_log = (run / "train_ddp_process_1.log").read_text()
    assert f"guidance targets: {len(paths)} images ({half[0]} computed by this process)" in main_log
    assert f"guidance targets: {len(paths)} images ({half[1]} computed by this process)" in rank1_log
    # the mask quality is measured by both processes alike and logged without Lightning's sync_dist warning
    assert "mask on the validation images: AUC" in main_log and "sync_dist=True" not in proc.stdout + proc.stderr
