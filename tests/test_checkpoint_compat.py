"""A checkpoint written before the wiring layer was restructured still evaluates.

tests/fixtures/checkpoint_layout_v1.json records such a checkpoint's stored run config and the name, shape and
dtype of every state_dict tensor (written by train.py experiment=city_baseline attention=se at 48 x 64, K=8).
The test rebuilds the file with random tensors of those shapes and evaluates it with eval.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from tests.conftest import run_script

FIXTURE = Path(__file__).parent / "fixtures" / "checkpoint_layout_v1.json"


def old_layout_checkpoint(path: Path) -> dict:
    spec = json.loads(FIXTURE.read_text())
    g = torch.Generator().manual_seed(0)
    state = {}
    for name, shape in spec["state_dict_shapes"].items():
        dtype = getattr(torch, spec["state_dict_dtypes"][name])
        if dtype.is_floating_point:
            t = torch.randn(shape, generator=g, dtype=dtype) * 0.05
            state[name] = t.abs() + 0.5 if name.endswith("running_var") else t
        else:
            state[name] = torch.zeros(shape, dtype=dtype)
    torch.save({"epoch": 0, "global_step": 10, "state_dict": state, "vpr_config": spec["vpr_config"]}, path)
    return spec


def random_checkpoint(path):
    """A checkpoint of the recorded layout (ResNet-18 + SE + NetVLAD K=8, 48x64) with He-initialised convolutions
    and identity BatchNorm: random, but with descriptors far enough apart for rankings to mean something."""
    spec = json.loads(FIXTURE.read_text())
    g = torch.Generator().manual_seed(0)
    state = {}
    for name, shape in spec["state_dict_shapes"].items():
        dtype = getattr(torch, spec["state_dict_dtypes"][name])
        if not dtype.is_floating_point:
            t = torch.zeros(shape)
        elif len(shape) == 4:
            t = torch.randn(shape, generator=g) * math.sqrt(2.0 / (shape[1] * shape[2] * shape[3]))
        elif name.endswith("running_var") or (name.endswith(".weight") and len(shape) == 1):
            t = torch.ones(shape)
        elif name.endswith(("running_mean", "bias")):
            t = torch.zeros(shape)
        else:
            t = torch.randn(shape, generator=g)
        state[name] = t.to(dtype)
    torch.save({"epoch": 0, "global_step": 1, "state_dict": state, "vpr_config": spec["vpr_config"]}, path)


def test_checkpoint_of_the_previous_layout_evaluates(data_dir, tmp_path):
    spec = old_layout_checkpoint(tmp_path / "old.ckpt")
    out = tmp_path / "run"
    run_script(
        "eval.py",
        "data.prepare.preset=tiny",
        f"paths.data_dir={data_dir}",
        f"ckpt_path={tmp_path / 'old.ckpt'}",
        "data.num_workers=0",
        f"hydra.run.dir={out}",
        tmp=tmp_path,
    )
    res = json.loads((out / "results.json").read_text())
    assert res["dataset"] == "city" and res["num_database"] == 40
    assert all(0.0 <= r <= 1.0 for r in res["recall_at"].values())
    # the network was rebuilt from the stored config (SE attention, K=8), every tensor loaded strictly
    assert spec["vpr_config"]["attention"]["_target_"].endswith("SE")


def test_eval_without_data_settings_uses_the_checkpoints_city(data_dir, tmp_path):
    """The checkpoint was trained on the tiny city: eval.py with no data setting tests there (40 database images),
    not on the default city; a data setting on the command line wins."""
    random_checkpoint(tmp_path / "model.ckpt")
    out = tmp_path / "run"
    proc = run_script(
        "eval.py",
        f"paths.data_dir={data_dir}",
        f"ckpt_path={tmp_path / 'model.ckpt'}",
        "data.num_workers=0",
        f"hydra.run.dir={out}",
        tmp=tmp_path,
    )
    assert json.loads((out / "results.json").read_text())["num_database"] == 40
    assert "trained on the tiny city (seed 0): evaluating there" in proc.stdout + proc.stderr
    assert not (data_dir / "city_default_seed0").exists()


def test_eval_with_only_data_root_reads_the_checkpoints_city_there(data_dir, tmp_path):
    """data.root at a copy of the tiny city (where it is on this machine): the checkpoint's preset and seed still
    apply, so that city is read as it is; it was replaced by the default city before."""
    import hashlib
    import shutil

    random_checkpoint(tmp_path / "model.ckpt")
    shutil.copytree(data_dir / "city_tiny_seed0", tmp_path / "copied_city")
    manifest = hashlib.sha256((tmp_path / "copied_city" / "city.json").read_bytes()).hexdigest()
    out = tmp_path / "run"
    run_script(
        "eval.py",
        f"data.root={tmp_path / 'copied_city'}",
        f"ckpt_path={tmp_path / 'model.ckpt'}",
        "data.num_workers=0",
        f"hydra.run.dir={out}",
        tmp=tmp_path,
    )
    assert json.loads((out / "results.json").read_text())["num_database"] == 40
    assert hashlib.sha256((tmp_path / "copied_city" / "city.json").read_bytes()).hexdigest() == manifest
