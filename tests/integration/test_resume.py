"""Kill and resume: a run killed with SIGKILL in the middle of an epoch and resumed with ``ckpt_path=last``
ends with exactly the test recall of the same run left alone (deterministic mode), having lost at most the
epoch it was in; the resumed run keeps writing checkpoints in the killed run's folder."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, run_script, script_env

SETTINGS = [
    "experiment=city_baseline",
    "data.prepare.preset=tiny",
    "data.image_size=[48,64]",
    "data.num_workers=0",
    "data.eval_batch_size=16",
    "model.num_clusters=8",
    "cluster.images=20",
    "cluster.descriptors_per_image=10",
    "mining.refresh_every_queries=8",
    "mining.candidate_negatives=20",
    "mining.negatives_per_query=2",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=2",
    "trainer.deterministic=true",
    "logger=none",
]


def stop_when(overrides: list[str], tmp: Path, log_file: Path, reached, sig: int, group: bool = False) -> int:
    """Run train.py with ``overrides``, its output in ``log_file``; send ``sig`` once ``reached()``; its exit status.
    ``group``: to its whole process group, loader workers included, as a scheduler's time limit or a terminal does."""
    with open(log_file, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), *overrides],
            cwd=tmp,
            env=script_env(tmp),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=group,
        )
        deadline = time.monotonic() + 300
        while not reached():
            assert proc.poll() is None, log_file.read_text()[-3000:]
            assert time.monotonic() < deadline, "the run never reached the moment to stop it"
            time.sleep(0.02)
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        return proc.wait(timeout=120)


def _step_of(ckpt: Path) -> int:
    """The global step of a checkpoint being rewritten by a running job (-1 while there is none)."""
    try:
        return int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])
    except Exception:  # not written yet (the rename is atomic: never half a file)
        return -1


@pytest.mark.parametrize(
    ("every_n_steps", "one_round"),
    [(None, False), (1, False), (1, True)],
    ids=["epoch-checkpoints", "step-checkpoints", "step-checkpoints-inside-a-round"],
)
def test_sigkill_mid_epoch_then_resume_equals_the_uninterrupted_run(data_dir, tmp_path, every_n_steps, one_round):
    """one_round: a single mining round per epoch, killed after its second step, so that the resumed run trains
    batches of the restored round before any cache pass (the BatchNorm layers' frozen mode was lost there)."""
    common = [*SETTINGS, f"paths.data_dir={data_dir}"]
    if every_n_steps:
        common.append(f"checkpoint_every_n_steps={every_n_steps}")
    if one_round:
        common.append("mining.refresh_every_queries=1000")
    run_script(
        "train.py", *common, f"paths.log_dir={tmp_path}/a", f"hydra.run.dir={tmp_path}/a/train/runs/r", tmp=tmp_path
    )
    uninterrupted = json.loads((tmp_path / "a" / "train" / "runs" / "r" / "results.json").read_text())

    first = tmp_path / "b" / "train" / "runs" / "first"
    log_file = tmp_path / "first.log"

    def reached() -> bool:
        if not one_round:
            return "epoch 1 round 2" in log_file.read_text()  # the middle of the second epoch
        trained = re.search(r"epoch 0 trained: global step (\d+)", log_file.read_text())
        return trained is not None and _step_of(first / "checkpoints" / "last.ckpt") >= int(trained.group(1)) + 2

    stop_when(
        [*common, f"paths.log_dir={tmp_path}/b", f"hydra.run.dir={first}"], tmp_path, log_file, reached, signal.SIGKILL
    )
    assert not (first / "results.json").exists(), "killed before the end"
    saved = torch.load(first / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    killed_log = log_file.read_text()
    steps_epoch0 = int(re.search(r"epoch 0 trained: global step (\d+)", killed_log).group(1))
    if every_n_steps is None:
        assert saved["epoch"] == 0, "last.ckpt is the end of the epoch before the kill: only the killed epoch is lost"
        assert saved["global_step"] == steps_epoch0
    else:
        # in the second round of epoch 1: past the first round's steps, and holding the round being trained
        assert saved["epoch"] == 1 and saved["global_step"] > steps_epoch0, saved["global_step"]
        assert saved["PlaceDataModule"]["round"]["epoch"] == 1
        if one_round:  # inside the round: some of its batches trained, some left
            assert 0 < int(saved["PlaceDataModule"]["round"]["offset"]), saved["PlaceDataModule"]["round"]["offset"]

    second = tmp_path / "b" / "train" / "runs" / "second"
    proc = run_script(
        "train.py", *common, f"paths.log_dir={tmp_path}/b", "ckpt_path=last", f"hydra.run.dir={second}", tmp=tmp_path
    )
    assert f"ckpt_path=last: {first / 'checkpoints' / 'last.ckpt'}" in proc.stdout + proc.stderr
    if every_n_steps:  # the resumed epoch's time is its rest, not measured from an unset start
        rest = re.search(
            r"epoch 1: its rest after the (\d+) batches trained before the resume took ([\d.]+) min",
            proc.stdout + proc.stderr,
        )
        assert rest and int(rest.group(1)) > 0 and float(rest.group(2)) < 5, (proc.stdout + proc.stderr)[-3000:]
    else:
        assert re.search(r"epoch 1 took [\d.]+ min", proc.stdout + proc.stderr)
    resumed = json.loads((second / "results.json").read_text())
    assert resumed["recall_at"] == uninterrupted["recall_at"]
    # more than the (coarse) recall: the final weights are the same numbers
    want = torch.load(
        tmp_path / "a" / "train" / "runs" / "r" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )["state_dict"]
    got = torch.load(first / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert want.keys() == got.keys()
    different = [k for k in want if not torch.equal(want[k], got[k])]
    assert not different, f"{len(different)} tensors differ from the uninterrupted run's, e.g. {different[:3]}"
    # checkpoints continued in the killed run's folder: its last.ckpt is now the final epoch, the best one is there
    assert torch.load(first / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["epoch"] == 1
    assert Path(resumed["checkpoint"]).parent == first / "checkpoints"
    assert not (second / "checkpoints").exists()


def test_sigterm_while_training_saves_where_it_stopped_and_the_resume_equals_the_uninterrupted_run(data_dir, tmp_path):
    """SIGTERM (a scheduler's preemption or time limit) between two steps: one error line, exit status 143, and a
    last.ckpt of that step (no step checkpoints asked for), from which ckpt_path=last ends as the run left alone."""
    common = [*SETTINGS, f"paths.data_dir={data_dir}", "mining.refresh_every_queries=1000"]
    run_script(
        "train.py", *common, f"paths.log_dir={tmp_path}/a", f"hydra.run.dir={tmp_path}/a/train/runs/r", tmp=tmp_path
    )
    first = tmp_path / "b" / "train" / "runs" / "first"
    log_file = tmp_path / "first.log"
    status = stop_when(
        [*common, f"paths.log_dir={tmp_path}/b", f"hydra.run.dir={first}"],
        tmp_path,
        log_file,
        lambda: "epoch 1 round 1/1" in log_file.read_text(),  # epoch 1's round mined: its steps begin
        signal.SIGTERM,
    )
    assert status == 143
    text = log_file.read_text()
    assert "error: stopped by SIGTERM; ckpt_path=last continues the run" in text
    saved = torch.load(first / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    steps_epoch0 = int(re.search(r"epoch 0 trained: global step (\d+)", text).group(1))
    assert saved["epoch"] == 1 and saved["global_step"] > steps_epoch0, "saved at the step it stopped, in epoch 1"
    assert re.search(rf"SIGTERM at epoch 1, step {saved['global_step']}: saved .*last\.ckpt", text)
    assert "[vpr][ERROR] stopped by SIGTERM; ckpt_path=last" in (first / "train.log").read_text()  # the log says why

    second = tmp_path / "b" / "train" / "runs" / "second"
    run_script(
        "train.py", *common, f"paths.log_dir={tmp_path}/b", "ckpt_path=last", f"hydra.run.dir={second}", tmp=tmp_path
    )
    want = torch.load(
        tmp_path / "a" / "train" / "runs" / "r" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )["state_dict"]
    got = torch.load(first / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert [k for k in want if not torch.equal(want[k], got[k])] == []


def test_sigterm_to_the_process_group_with_loader_workers_still_saves_where_it_stopped(data_dir, tmp_path):
    """A scheduler's time limit (scancel, timeout) signals the loader workers too: they must not die first and
    take the run down with "DataLoader worker ... killed by signal" before it saves."""
    run = tmp_path / "train" / "runs" / "r"
    log_file = tmp_path / "run.log"
    settings = [s for s in SETTINGS if s != "data.num_workers=0"]
    status = stop_when(
        [
            *settings,
            "data.num_workers=2",
            f"paths.data_dir={data_dir}",
            f"paths.log_dir={tmp_path}",
            f"hydra.run.dir={run}",
        ],
        tmp_path,
        log_file,
        lambda: "epoch 1 round 1/" in log_file.read_text(),
        signal.SIGTERM,
        group=True,
    )
    text = log_file.read_text()
    assert status == 143, text[-3000:]
    assert "killed by signal" not in text and "Traceback" not in text, text[-3000:]
    assert "error: stopped by SIGTERM; ckpt_path=last continues the run" in text
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["epoch"] == 1 and re.search(rf"SIGTERM at epoch 1, step {saved['global_step']}: saved", text)
    # Epoch 0's time line: every tuple its rounds mined was trained, and its cache passes are those rounds'.
    rounds = re.findall(
        r"epoch 0 round \d+/\d+ cache pass: \d+ images in ([\d.]+) s .*, mining ([\d.]+) s; (\d+)/", text
    )
    line = re.search(
        r"epoch 0 took [\d.]+ min \(training ([\d.]+) s \((\d+) tuples, [\d.]+/s\), cache passes ([\d.]+) s", text
    )
    assert rounds and line, text[-3000:]
    assert int(line.group(2)) == sum(int(mined) for _, _, mined in rounds) > 0
    cache = sum(float(encode) + float(mine) for encode, mine, _ in rounds)
    assert float(line.group(3)) == pytest.approx(cache, abs=0.06 * len(rounds) + 0.05)
    # The loader starts (and mines the epoch's first rounds) before the epoch's hooks run: the epoch's clock starts
    # with its first round, else the training steps were the epoch less cache passes that began before it (0 s).
    assert float(line.group(1)) > 0, line.group(0)


def test_resuming_into_another_network_or_a_folder_in_use_is_one_error(data_dir, tmp_path):
    from tests.integration.test_errors import assert_clean_failure
    from vpr.io import exclusive_lock

    common = [*SETTINGS, f"paths.data_dir={data_dir}", "trainer.max_epochs=1", "test_after_training=false"]
    run_script("train.py", *common, f"hydra.run.dir={tmp_path}/a", tmp=tmp_path)
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    other = run_script(
        "train.py",
        *common,
        "attention=se",
        f"ckpt_path={ckpt}",
        f"hydra.run.dir={tmp_path}/b",
        tmp=tmp_path,
        check=False,
    )
    assert_clean_failure(
        other,
        f"ckpt_path={ckpt} holds another network than this run's: attention (Identity in the checkpoint, SE here)",
        f"init_weights={ckpt}",
    )
    assert "loaded city" not in other.stdout + other.stderr  # refused before any data work
    # A difference the settings do not show (here K) is found weight by weight once the network is built.
    k = run_script(
        "train.py",
        *common,
        "model.num_clusters=4",
        f"ckpt_path={ckpt}",
        f"hydra.run.dir={tmp_path}/k",
        tmp=tmp_path,
        check=False,
    )
    assert_clean_failure(
        k, "holds another network than this run's: ", "weight(s) do not fit, e.g. head.", f"init_weights={ckpt}"
    )

    # Resuming a run that already trained its max_epochs says that nothing is left to train.
    done = run_script("train.py", *common, f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path}/d", tmp=tmp_path)
    assert "has already trained 1 epoch(s), trainer.max_epochs=1: nothing is left to train" in done.stdout + done.stderr

    # Another loss: the path given by hand resumes it, and the run says what differs from the checkpoint's settings.
    stml = run_script(
        "train.py", *common, "loss=stml", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path}/s", tmp=tmp_path
    )
    assert (
        f"ckpt_path={ckpt} was trained with other settings: variant (baseline in the checkpoint, baseline+stml here); "
        "loss._target_ (vpr.losses.TripletMarginLoss in the checkpoint, vpr.losses.SharpenedTripletMarginLoss here)"
    ) in stml.stdout + stml.stderr

    def busy():
        raise AssertionError("the test holds the lock alone")

    with exclusive_lock(ckpt.parent / ".train.lock", busy):  # as a first resume of this run would hold it
        second = run_script(
            "train.py", *common, f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path}/c", tmp=tmp_path, check=False
        )
    assert_clean_failure(second, f"another train.py is writing checkpoints in {ckpt.parent}")


def test_resuming_a_run_with_nothing_left_to_train_tests_without_mining(data_dir, tmp_path):
    """A run that early stopping ended, or that trained trainer.max_epochs, resumed with ckpt_path=last goes
    straight to the test: no cache pass (Lightning built and prefetched from the training loader first: one mining
    round), no further epoch, and the test recall of the run that ended."""
    common = [
        *SETTINGS,
        f"paths.data_dir={data_dir}",
        f"paths.log_dir={tmp_path}",
        # R@1 never exceeds 2: early stopping ends the training after its first epoch, whatever the recall
        "+callbacks.early_stopping.divergence_threshold=2.0",
    ]
    run_script("train.py", *common, f"hydra.run.dir={tmp_path}/train/runs/a", tmp=tmp_path)
    first_log = (tmp_path / "train" / "runs" / "a" / "train.log").read_text()
    assert "epoch 0 round 1/" in first_log and "epoch 1 round" not in first_log, "early stopping after epoch 0"
    ended = json.loads((tmp_path / "train" / "runs" / "a" / "results.json").read_text())
    last = tmp_path / "train" / "runs" / "a" / "checkpoints" / "last.ckpt"

    resumes = {
        "early-stopped": [],
        # without early stopping, the run's one epoch is all of trainer.max_epochs=1
        "max-epochs": ["trainer.max_epochs=1", "callbacks.early_stopping=null"],
    }
    for name, extra in resumes.items():
        proc = run_script(
            "train.py", *common, *extra, "ckpt_path=last", f"hydra.run.dir={tmp_path}/train/runs/{name}", tmp=tmp_path
        )
        text = proc.stdout + proc.stderr
        assert f"ckpt_path=last: {last}" in text, name
        assert re.findall(r"epoch \d+ round \d+/\d+", text) == [], f"{name}: a mining round ran\n{text[-3000:]}"
        assert "trained: global step" not in text, f"{name}: an epoch was trained"
        want = (
            "early stopping had ended its training after epoch 0: nothing is left to train"
            if name == "early-stopped"
            else "has already trained 1 epoch(s), trainer.max_epochs=1: nothing is left to train"
        )
        assert want in text, name
        assert json.loads((tmp_path / "train" / "runs" / name / "results.json").read_text()) == ended, name
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 0  # nothing rewrote it


def test_a_checkpoint_save_cut_short_leaves_no_partial_file_once_the_run_is_resumed(data_dir, tmp_path):
    """A SIGKILL during a save (a scheduler's grace period running out after its SIGTERM) leaves the checkpoint whole
    and a hidden partial file beside it, ``.last.ckpt.<8 characters>.tmp``, as large as a checkpoint: each kill left
    one more. The resumed run, holding the folder's lock, removes them; other files stay."""
    common = [*SETTINGS, f"paths.data_dir={data_dir}", "trainer.max_epochs=1", "test_after_training=false"]
    logs = f"paths.log_dir={tmp_path}/logs"
    run_script("train.py", *common, logs, f"hydra.run.dir={tmp_path}/logs/train/runs/a", tmp=tmp_path)
    folder = tmp_path / "logs" / "train" / "runs" / "a" / "checkpoints"
    whole = (folder / "last.ckpt").read_bytes()
    partial = [folder / ".last.ckpt.k1ll3d_x.tmp", folder / ".epoch000.ckpt.a0b1c2d3.tmp"]
    for f in partial:
        f.write_bytes(whole[: len(whole) // 3])  # what torch.save had written when the kill came
    kept = [folder / ".notes.tmp", folder / "notes.ckpt.a0b1c2d3.tmp", folder / ".last.ckpt.a0b1c2d3.hdf5"]
    for f in kept:
        f.write_text("not a partial checkpoint")

    resumed = run_script(
        "train.py", *common, logs, "ckpt_path=last", f"hydra.run.dir={tmp_path}/logs/train/runs/b", tmp=tmp_path
    )
    text = resumed.stdout + resumed.stderr
    assert f"ckpt_path=last: {folder / 'last.ckpt'}" in text
    assert [f.name for f in partial if f.exists()] == []
    assert "removed 2 partial checkpoint file(s) of a save that was killed" in text
    assert all(f.read_text() == "not a partial checkpoint" for f in kept)
    assert (folder / "last.ckpt").read_bytes() == whole  # nothing trained: the checkpoint is the one it was


def test_ctrl_c_while_training_saves_where_it_stopped_and_ends_with_one_line(data_dir, tmp_path):
    """A terminal's Ctrl-C (SIGINT to the process group) inside Lightning's loop: Lightning shuts down and exits
    with status 1, which read as a failed command; it is an interrupt (130) with one error line and a checkpoint."""
    run = tmp_path / "train" / "runs" / "r"
    log_file = tmp_path / "run.log"
    status = stop_when(
        [*SETTINGS, f"paths.data_dir={data_dir}", f"paths.log_dir={tmp_path}", f"hydra.run.dir={run}"],
        tmp_path,
        log_file,
        lambda: "epoch 1 round 1/" in log_file.read_text(),
        signal.SIGINT,
        group=True,
    )
    text = log_file.read_text()
    assert status == 130, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert "error: interrupted (Ctrl-C): nothing half-written is kept" in text
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["epoch"] == 1 and re.search(rf"Ctrl-C at epoch 1, step {saved['global_step']}: saved", text)


def test_resuming_a_sweep_starts_the_jobs_it_never_reached(data_dir, tmp_path):
    """A sweep cut short, run again with ckpt_path=last: a job with a last.ckpt of its settings resumes it, a job
    that never started has none and starts anew (it ended the sweep with "none ... comes from a run with these
    settings"). A single run with nothing to resume still stops with that error."""
    common = [
        *[s for s in SETTINGS if s != "trainer.max_epochs=2"],
        "trainer.max_epochs=1",
        f"paths.data_dir={data_dir}",
    ]
    logs = f"paths.log_dir={tmp_path}/logs"
    run_script("train.py", *common, logs, "seed=1", tmp=tmp_path)  # the job the first sweep finished
    proc = run_script(
        "train.py", "-m", *common, logs, "seed=1,2", "ckpt_path=last", f"hydra.sweep.dir={tmp_path}/s", tmp=tmp_path
    )
    text = proc.stdout + proc.stderr
    assert "nothing is left to train (only the test runs)" in text  # seed 1: resumed, already trained
    assert "this job of the sweep starts a new run" in text  # seed 2
    assert (tmp_path / "s" / "1_baseline_seed2" / "results.json").is_file()
    single = run_script("train.py", *common, logs, "seed=3", "ckpt_path=last", tmp=tmp_path, check=False)
    assert single.returncode == 2 and "comes from a run with these settings" in single.stderr


def test_a_sweep_over_a_setting_resumes_each_jobs_own_run(data_dir, tmp_path):
    """A learning-rate sweep resumed with ckpt_path=last: the job of lr 0.01 resumes the lr 0.01 run; the job of lr
    0.001, which has no run, starts anew (it resumed the lr 0.01 run, of the same variant and seed). A single run
    then resumes the run of its own learning rate among the two."""
    common = [
        *[s for s in SETTINGS if s != "trainer.max_epochs=2"],
        "trainer.max_epochs=1",
        "test_untrained=false",
        f"paths.data_dir={data_dir}",
        f"paths.log_dir={tmp_path}/logs",
        "seed=1",
    ]
    first = run_script(
        "train.py", *common, "optimizer.lr=0.01", f"hydra.run.dir={tmp_path}/logs/train/runs/lr0.01", tmp=tmp_path
    )
    assert first.returncode == 0
    proc = run_script(
        "train.py",
        "-m",
        *common,
        "optimizer.lr=0.001,0.01",
        "ckpt_path=last",
        f"hydra.sweep.dir={tmp_path}/logs/train/multiruns/s",
        tmp=tmp_path,
    )
    jobs = sorted((tmp_path / "logs/train/multiruns/s").glob("[0-9]_*"))
    assert len(jobs) == 2
    lr001, lr01 = (j / "train.log" for j in jobs)
    assert "this job of the sweep starts a new run" in lr001.read_text()
    assert "ckpt_path=last" not in lr001.read_text().replace("ckpt_path=last: no last.ckpt", "")
    assert f"ckpt_path=last: {tmp_path}/logs/train/runs/lr0.01/checkpoints/last.ckpt" in lr01.read_text() + proc.stderr
    single = run_script("train.py", *common, "optimizer.lr=0.001", "ckpt_path=last", tmp=tmp_path)
    assert f"ckpt_path=last: {jobs[0]}/checkpoints/last.ckpt" in single.stdout + single.stderr
