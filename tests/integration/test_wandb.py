"""W&B (offline): every job of a Hydra multirun is its own run with its own config and metrics, and a resumed
training continues its run's id, in its own sweep's group; test sets log under names of their own; eval.py logs
its recalls; WANDB_MODE=disabled writes nothing. The runs are read from W&B's own files (``run-<id>.wandb``)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import run_script
from tests.integration.test_resume import SETTINGS


def offline_runs(folder: Path) -> dict[str, Path]:
    """run id -> the newest offline run folder of that id (``offline-run-<date>_<time>-<id>``)."""
    runs = {}
    for d in sorted(folder.rglob("offline-run-*")):
        if d.is_dir():
            runs.setdefault(re.sub(r"^offline-run-\d{8}_\d{6}-", "", d.name), []).append(d)
    return {k: v[-1] for k, v in runs.items()}


def records(run: Path):
    """The protobuf records of an offline run's ``run-<id>.wandb`` file: a 7-byte header, then LevelDB log
    framing (32 KiB blocks; per chunk a 4-byte checksum, 2-byte length, 1-byte type: full/first/middle/last)."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run.glob("run-*.wandb")
    data, pos, block, pending = path.read_bytes(), 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 2):
            pending = chunk
        elif kind in (3, 4):
            pending += chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def config_and_metrics(run: Path) -> tuple[dict, set[str]]:
    config, metrics = {}, set()
    for r in records(run):
        kind = r.WhichOneof("record_type")
        items = r.run.config.update if kind == "run" else r.config.update if kind == "config" else []
        config.update({i.key: json.loads(i.value_json) for i in items})
        if kind == "history":
            metrics |= {i.key or "/".join(i.nested_key) for i in r.history.item}
    return config, metrics


def run_record(run: Path):
    """The run's own record (id, group, tags, entity, job type, notes)."""
    return next(r.run for r in records(run) if r.WhichOneof("record_type") == "run")


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def history(run: Path) -> list[dict]:
    """The logged rows, in order, as {metric: value}."""
    return [
        {_key(i): json.loads(i.value_json) for i in r.history.item}
        for r in records(run)
        if r.WhichOneof("record_type") == "history"
    ]


def summary(run: Path) -> dict:
    """The run's summary (what W&B's runs table shows): its summary updates, the last value of each key."""
    out = {}
    for r in records(run):
        if r.WhichOneof("record_type") == "summary":
            out.update({_key(i): json.loads(i.value_json) for i in r.summary.update})
    return out


def config_value(run: Path, key: str):
    value = config_and_metrics(run)[0][key]
    return value["value"] if isinstance(value, dict) and "value" in value else value


def base(data_dir: Path) -> list[str]:
    return [o for o in SETTINGS if not o.startswith(("logger", "trainer.max_epochs"))] + [
        f"paths.data_dir={data_dir}",
        "logger=wandb",
        "trainer.max_epochs=1",
    ]


def test_each_sweep_job_is_its_own_run(data_dir, tmp_path):
    run_script("train.py", "-m", *base(data_dir), "seed=1,2", f"hydra.sweep.dir={tmp_path}/sweep", tmp=tmp_path)
    runs = offline_runs(tmp_path / "sweep")
    assert len(runs) == 2, sorted(runs)
    assert sorted(config_value(r, "seed") for r in runs.values()) == [1, 2]
    for run in runs.values():
        _, metrics = config_and_metrics(run)
        assert {"val/R@1", "test/R@1", "train/loss_epoch"} <= metrics, sorted(metrics)
        job = next(p for p in (tmp_path / "sweep").iterdir() if p.is_dir() and run.is_relative_to(p))
        assert config_value(run, "seed") == yaml.safe_load((job / "config.yaml").read_text())["seed"]


def test_resumed_training_continues_its_run(data_dir, tmp_path):
    first, second = tmp_path / "logs" / "train" / "runs" / "first", tmp_path / "logs" / "train" / "runs" / "second"
    proc = run_script(
        "train.py", *base(data_dir), f"paths.log_dir={tmp_path}/logs", f"hydra.run.dir={first}", tmp=tmp_path
    )
    assert f"upload it with: wandb sync {first / 'wandb' / 'offline-run-*'}" in proc.stdout + proc.stderr
    assert "anonymous setting" not in proc.stdout + proc.stderr  # no library warning about Lightning's arguments
    saved = torch.load(first / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    (run_id,) = offline_runs(first)
    assert saved["wandb_run_id"] == run_id
    run_script(
        "train.py",
        *[o for o in base(data_dir) if o != "trainer.max_epochs=1"],
        "trainer.max_epochs=2",
        f"paths.log_dir={tmp_path}/logs",
        "ckpt_path=last",
        f"hydra.run.dir={second}",
        tmp=tmp_path,
    )
    assert list(offline_runs(second)) == [run_id]


# --------------------------------------------------------------------------------------------------------------
# One job of a sweep (sweep A): experiment=city_baseline with attention=se, another test set, W&B and CSV
# loggers; then resumed from another sweep (sweep B), and evaluated by eval.py.
# --------------------------------------------------------------------------------------------------------------

HIGH = "test_sets=[{data:synthetic,label:high,prepare:{preset:tiny-occlusion-high}}]"


@pytest.fixture(scope="module")
def sweep_a(data_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wandb_sweeps")
    overrides = [
        *[o for o in base(data_dir) if o != "logger=wandb"],
        f"paths.log_dir={tmp}/logs",
        "attention=se",
        "logger=[wandb,csv]",
        "logger.wandb.entity=me",
        "logger.wandb.notes=SE on the tiny city",
    ]
    sweep = tmp / "logs" / "train" / "multiruns" / "2026-01-01_10-00-00-sweepA"
    run_script("train.py", "-m", *overrides, HIGH, f"hydra.sweep.dir={sweep}", tmp=tmp)
    (job,) = [p for p in sweep.iterdir() if p.is_dir()]
    (run,) = offline_runs(job).values()
    return tmp, overrides, sweep, job, run


def recall(path: Path, n: int) -> float:
    return json.loads(path.read_text())["recall_at"][str(n)]


def test_each_test_set_logs_its_recalls_under_its_own_name(sweep_a):
    """test/R@N is the run's own test split's (results.json), test_high/R@N the other set's (results_high.json),
    in W&B's history and summary and in the CSV logger's metrics.csv alike."""
    _, _, _, job, run = sweep_a
    rows = history(run)
    own, high = [r for r in rows if "test/R@5" in r], [r for r in rows if "test_high/R@5" in r]
    assert len(own) == 1, f"test/R@5 logged {len(own)} times: another set logged over the run's own test"
    assert len(high) == 1, f"test_high/R@5 logged {len(high)} times"
    own, high = own[0], high[0]
    final = summary(run)
    (metrics,) = job.glob("csv/version_*/metrics.csv")
    table = list(csv.DictReader(metrics.open()))
    for n in (1, 5, 10, 20):
        mine, other = recall(job / "results.json", n), recall(job / "results_high.json", n)
        assert own[f"test/R@{n}"] == pytest.approx(mine) and final[f"test/R@{n}"] == pytest.approx(mine)
        assert high[f"test_high/R@{n}"] == pytest.approx(other) and final[f"test_high/R@{n}"] == pytest.approx(other)
        assert [float(r[f"test/R@{n}"]) for r in table if r[f"test/R@{n}"]] == [pytest.approx(mine)]
        assert [float(r[f"test_high/R@{n}"]) for r in table if r[f"test_high/R@{n}"]] == [pytest.approx(other)]


def test_a_run_names_its_variant_sweep_and_settings(sweep_a):
    _, _, sweep, _, run = sweep_a
    record = run_record(run)
    assert list(record.tags) == ["city", "baseline+se"]  # the experiment's "baseline" tag is not this network
    assert record.run_group == sweep.name and record.job_type == "train"
    assert record.entity == "me" and record.notes == "SE on the tiny city"
    assert record.display_name == "baseline+se-seed42-job0"


def test_a_run_resumed_from_another_sweep_stays_in_its_group_and_entity(sweep_a):
    """Sweep B resumes sweep A's job without naming the entity: the run continues where it was started."""
    tmp, overrides, sweep, job, run = sweep_a
    saved = torch.load(job / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["wandb_run_group"] == sweep.name and saved["wandb_run_entity"] == "me"
    sweep_b = sweep.parent / "2026-01-02_10-00-00-sweepB"
    resuming = [o for o in overrides if o != "logger.wandb.entity=me"]
    run_script("train.py", "-m", *resuming, "ckpt_path=last", f"hydra.sweep.dir={sweep_b}", tmp=tmp)
    (resumed,) = offline_runs(sweep_b).values()
    record = run_record(resumed)
    assert record.run_id == run_record(run).run_id  # the same W&B run, continued
    assert record.run_group == sweep.name  # not sweep B's
    assert record.entity == "me"  # not the default entity


def test_a_sweep_job_resumed_as_a_single_run_keeps_its_name(sweep_a):
    tmp, overrides, sweep, job, run = sweep_a
    saved = torch.load(job / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["wandb_run_name"] == "baseline+se-seed42-job0"
    single = tmp / "logs" / "train" / "runs" / "resumed-alone"
    run_script(
        "train.py", *overrides, f"ckpt_path={job / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={single}", tmp=tmp
    )
    (resumed,) = offline_runs(single).values()
    record = run_record(resumed)
    assert record.run_id == run_record(run).run_id and record.run_group == sweep.name
    assert record.display_name == "baseline+se-seed42-job0"  # not baseline+se-seed42


def test_eval_logs_its_recalls_as_a_run_of_its_own(sweep_a, data_dir):
    tmp, _, _, job, run = sweep_a
    out = tmp / "eval_run"
    checkpoint = job / "checkpoints" / "last.ckpt"
    run_script(
        "eval.py",
        f"ckpt_path='{checkpoint}'",
        f"paths.data_dir={data_dir}",
        "data.num_workers=0",
        "trainer.accelerator=cpu",
        "logger=wandb",
        f"hydra.run.dir={out}",
        tmp=tmp,
    )
    (evaluated,) = offline_runs(out).values()
    record = run_record(evaluated)
    assert record.job_type == "eval" and record.run_id != run_record(run).run_id
    (row,) = [r for r in history(evaluated) if "test/R@1" in r]
    for n in (1, 5, 10, 20):
        assert row[f"test/R@{n}"] == pytest.approx(recall(out / "results.json", n))
    assert summary(evaluated)["test/recall_table/_type"] == "table-file"  # the table, as train.py logs it


def test_wandb_mode_disabled_writes_no_wandb_run(data_dir, tmp_path):
    run = tmp_path / "run"
    proc = run_script("train.py", *base(data_dir), f"hydra.run.dir={run}", tmp=tmp_path, env={"WANDB_MODE": "disabled"})
    said = proc.stdout + proc.stderr
    assert said.count("W&B is off (WANDB_MODE=disabled): this run logs nothing to W&B") == 1
    assert "W&B runs offline" not in said
    assert (run / "results.json").is_file()
    assert not list(tmp_path.rglob("*wandb*")) and not list(tmp_path.rglob("run-*.wandb"))
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert "wandb_run_id" not in saved
