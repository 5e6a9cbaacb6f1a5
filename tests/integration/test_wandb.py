"""W&B (offline): every job of a Hydra multirun is its own run with its own config and metrics, and a resumed
training continues its run's id; WANDB_MODE=disabled writes nothing. The runs are read from W&B's own files
(``run-<id>.wandb``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from tests.conftest import ROOT, run_script, script_env
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


def test_wandb_mode_disabled_writes_no_wandb_run(data_dir, tmp_path):
    run = tmp_path / "run"
    env = {**script_env(tmp_path), "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *base(data_dir), f"hydra.run.dir={run}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = proc.stdout + proc.stderr
    assert said.count("W&B is off (WANDB_MODE=disabled): this run logs nothing to W&B") == 1
    assert "W&B runs offline" not in said
    assert (run / "results.json").is_file()
    assert not list(tmp_path.rglob("*wandb*")) and not list(tmp_path.rglob("run-*.wandb"))
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert "wandb_run_id" not in saved
