"""What users get wrong, through the real scripts: every case ends with exit status 2, exactly one ``error:`` line
that names the file or setting, no traceback, and not one byte of the user's files changed.

The user's files (a Pittsburgh-layout dataset, a Tokyo-layout one, checkpoints, a centroid file, a folder of their
own) are written once per module from the formats' descriptions; each case may derive a broken copy of one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from tests.conftest import run_script
from tests.data.spec_files import pittsburgh_like, tokyo247_like, write_v5

FIXTURE = Path(__file__).parent.parent / "fixtures" / "checkpoint_layout_v1.json"
NET = ["backbone=resnet18", "backbone.pretrained=false", "data.num_workers=0", "data.image_size=[48,64]"]


@dataclass
class Case:
    script: str
    args: Callable[[dict], list[str]]  # from the user's files (and the case's own folder) to the command line
    expect: Callable[[dict], list[str]]  # fragments the error line must hold
    prepare: Callable[[dict], None] | None = None  # breaks a copy of a file for this case


def _checkpoint_from_layout(path: Path, mutate: Callable[[dict], None] | None = None) -> Path:
    spec = json.loads(FIXTURE.read_text())
    g = torch.Generator().manual_seed(0)
    state = {}
    for name, shape in spec["state_dict_shapes"].items():
        dtype = getattr(torch, spec["state_dict_dtypes"][name])
        t = (
            torch.randn(shape, generator=g, dtype=dtype) * 0.05
            if dtype.is_floating_point
            else torch.zeros(shape, dtype=dtype)
        )
        state[name] = t.abs() + 0.5 if name.endswith("running_var") else t
    ckpt = {"epoch": 0, "state_dict": state, "vpr_config": spec["vpr_config"]}
    if mutate:
        mutate(ckpt)
    torch.save(ckpt, path)
    return path


def _broken_spec(u: dict, change: dict | None = None, drop: str | None = None) -> None:
    """A copy of the Pittsburgh-layout dataset whose test spec has ``change`` applied / ``drop`` removed."""
    root = u["case"] / "pitts"
    shutil.copytree(u["pitts"], root)
    mat = root / "datasets" / "pitts30k_test.mat"
    record = scipy.io.loadmat(str(mat))["dbStruct"][0, 0]
    fields = {f: record[f] for f in record.dtype.names if f != drop}
    write_v5(mat, {**fields, **(change or {})})
    u["broken"] = root


class RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("touch code_ran",))


@pytest.fixture(scope="module")
def user(tmp_path_factory, data_dir) -> dict:
    base = tmp_path_factory.mktemp("user")
    u = {"base": base, "data_dir": data_dir}
    u["pitts"] = pittsburgh_like(base / "pitts30k", num_places=3).root
    u["tokyo"] = tokyo247_like(base / "tokyo", num_places=2).root
    (base / "notes.txt").write_text("not a checkpoint\n")
    u["ckpt"] = _checkpoint_from_layout(base / "good.ckpt")
    u["ckpt_other_arch"] = _checkpoint_from_layout(
        base / "other_arch.ckpt",
        lambda c: c["vpr_config"].update(attention={"_target_": "vpr.models.attention.base.Identity"}),
    )
    u["ckpt_no_head"] = _checkpoint_from_layout(
        base / "no_head.ckpt",
        lambda c: c.update(state_dict={k: v for k, v in c["state_dict"].items() if not k.startswith("head.")}),
    )
    torch.save({"epoch": 3, "weights": torch.zeros(2)}, base / "no_state_dict.ckpt")
    (base / "truncated.ckpt").write_bytes(u["ckpt"].read_bytes()[:4096])
    torch.save({"state_dict": {}, "payload": RunsCode()}, base / "runs_code.ckpt")
    (base / "centroids").mkdir()
    (base / "centroids" / "broken.hdf5").write_text("not hdf5")
    own = base / "my_folder"
    own.mkdir()
    (own / "thesis.tex").write_text("\\documentclass{article}")
    u["own"] = own
    return u


def city(u: dict) -> list[str]:
    return [
        "experiment=city_baseline",
        "data.prepare.preset=tiny",
        f"paths.data_dir={u['data_dir']}",
        "data.image_size=[48,64]",
        "data.num_workers=0",
        "logger=none",
    ]


def pitts(u: dict, root: Path | None = None) -> list[str]:
    return ["data=pitts30k", f"data.root={root or u['pitts']}", *NET, "head=gem"]


CASES = {
    # ---- datasets and their files
    "root does not exist": Case(
        "eval.py", lambda u: pitts(u, u["base"] / "nowhere"), lambda u: ["nowhere", "does not exist", "data.root"]
    ),
    "root not set": Case("eval.py", lambda u: ["data=pitts30k", *NET], lambda u: ["data.root", "VPR_PITTSBURGH_ROOT"]),
    "name misspelt": Case(
        "eval.py",
        lambda u: [*pitts(u), "data.name=pitts31k"],
        lambda u: ["pitts31k_test.mat", "not found", "pitts30k_test.mat"],
    ),
    "split file missing a field": Case(
        "eval.py",
        lambda u: pitts(u, u["broken"]),
        lambda u: ["pitts30k_test.mat", "`utmQ`"],
        lambda u: _broken_spec(u, drop="utmQ"),
    ),
    "NaN coordinates": Case(
        "eval.py",
        lambda u: pitts(u, u["broken"]),
        lambda u: ["pitts30k_test.mat", "utmDb", "finite"],
        lambda u: _broken_spec(u, change={"utmDb": _nan_utm(u)}),
    ),
    "counts disagree": Case(
        "eval.py",
        lambda u: pitts(u, u["broken"]),
        lambda u: ["pitts30k_test.mat", "numQueries = 9 but qImageFns lists 3"],
        lambda u: _broken_spec(u, change={"numQueries": [[9.0]]}),
    ),
    "coordinates of the wrong shape": Case(
        "eval.py",
        lambda u: pitts(u, u["broken"]),
        lambda u: ["pitts30k_test.mat", "utmQ has shape (2, 2)"],
        lambda u: _broken_spec(u, change={"utmQ": [[0.0, 1.0], [2.0, 3.0]]}),
    ),
    "split without queries": Case(
        "eval.py",
        lambda u: pitts(u, u["broken"]),
        lambda u: ["pitts30k_test.mat", "0 queries"],
        lambda u: _broken_spec(
            u, change={"qImageFns": np.empty((0, 1), dtype=object), "utmQ": np.zeros((2, 0)), "numQueries": [[0.0]]}
        ),
    ),
    "split file is text": Case(
        "eval.py",
        lambda u: pitts(u, u["broken"]),
        lambda u: ["pitts30k_test.mat", "not a readable MATLAB"],
        lambda u: _text_spec(u),
    ),
    "image missing": Case(
        "eval.py",
        lambda u: pitts(u, u["broken"]),
        lambda u: ["1 of the", "are missing", "incomplete", "data.db_dir"],
        lambda u: _missing_image(u),
    ),
    "corrupt image read in a worker": Case(
        "eval.py",
        lambda u: [
            "data=pitts30k",
            f"data.root={u['broken']}",
            "backbone=resnet18",
            "backbone.pretrained=false",
            "head=gem",
            "data.num_workers=2",
            "data.image_size=[48,64]",
        ],
        lambda u: ["is corrupt or not an image", "000000_pitch1_yaw2.jpg"],
        lambda u: _corrupt_image(u),
    ),
    "queries unpacked elsewhere": Case(
        "eval.py", lambda u: [*pitts(u), "data.query_dir=queries"], lambda u: ["queries", "data.query_dir"]
    ),
    "evaluation-only set has no val": Case(
        "eval.py",
        lambda u: ["data=tokyo247", f"data.root={u['tokyo']}", *NET, "head=gem", "split=val"],
        lambda u: ["split=val", "tokyo247 has no val split"],
    ),
    "training on an evaluation-only set": Case(
        "train.py",
        lambda u: ["data=tokyo247", f"data.root={u['tokyo']}", *NET, "head=gem", "logger=none"],
        lambda u: ["tokyo247 has no train split", "evaluation-only"],
    ),
    "unknown layout": Case("eval.py", lambda u: [*pitts(u), "data.layout=zip"], lambda u: ["data.layout='zip'"]),
    "bad split_file pattern": Case(
        "eval.py", lambda u: [*pitts(u), "data.split_file='{nme}_{split}.mat'"], lambda u: ["data.split_file", "{name}"]
    ),
    "image size too small": Case(
        "eval.py", lambda u: [*pitts(u), "data.image_size=[8,8]"], lambda u: ["data", "image_size"]
    ),
    "city into a user's folder": Case(
        "train.py",
        lambda u: [*city(u), "data=synthetic", f"data.root={u['own']}"],
        lambda u: ["refusing to write the synthetic city", "my_folder"],
    ),
    "unknown test set": Case("eval.py", lambda u: ["test_sets=[tokio247]"], lambda u: ["tokio247", "tokyo247"]),
    "test set setting misspelt": Case(
        "eval.py",
        lambda u: ["test_sets=[{data:tokyo247,rot:/x}]"],
        lambda u: ["['rot'] are not settings of data=tokyo247"],
    ),
    "test set without its root": Case(
        "eval.py",
        lambda u: ["test_sets=[tokyo247]", *NET, "head=gem"],
        lambda u: ["test set 'tokyo247'", "VPR_TOKYO247_ROOT"],
    ),
    # ---- numbers and choices
    "batch size not a number": Case(
        "train.py", lambda u: [*city(u), "data.batch_size=abc"], lambda u: ["data.batch_size='abc'", "whole number"]
    ),
    "batch size zero": Case("train.py", lambda u: [*city(u), "data.batch_size=0"], lambda u: ["data.batch_size=0"]),
    "mining every 0 queries": Case(
        "train.py", lambda u: [*city(u), "mining.refresh_every_queries=0"], lambda u: ["mining.refresh_every_queries=0"]
    ),
    "negative negatives": Case(
        "train.py", lambda u: [*city(u), "mining.negatives_per_query=-1"], lambda u: ["mining.negatives_per_query=-1"]
    ),
    "negative workers": Case(
        "train.py", lambda u: [*city(u), "data.num_workers=-1"], lambda u: ["data.num_workers=-1"]
    ),
    "zero epochs": Case("train.py", lambda u: [*city(u), "trainer.max_epochs=0"], lambda u: ["trainer.max_epochs=0"]),
    # mined inside Lightning's loop: without the check, Lightning skipped validation and failed on the monitor
    "an epoch without a tuple": Case(
        "train.py",
        lambda u: [*city(u), "head=gem", "+mining.negative_radius_m=1e6"],
        lambda u: ["epoch 0: no batch to train", "farther than 1e+06 m"],
    ),
    "unknown city preset": Case(
        "train.py",
        lambda u: [*city(u), "data.prepare.preset=default-occlusion-hi"],
        lambda u: ["data.prepare.preset='default-occlusion-hi'", "default-occlusion-high"],
    ),
    "negative city seed": Case(
        "train.py",
        lambda u: [*city(u), "data.prepare.seed=-3"],
        lambda u: ["data.prepare.seed=-3", "whole number >= 0"],
    ),
    "cluster.file of another K": Case(
        "cluster.py",
        lambda u: [*city(u), f"cluster.file={u['case']}/k4.hdf5"],
        lambda u: ["holds centroids of shape (4, 256)", "num_clusters=32", "overwrite=true"],
        lambda u: _centroid_file(u["case"] / "k4.hdf5", k=4, dim=256),
    ),
    "label-map folder not given": Case(
        "train.py",
        lambda u: [*city(u), "attention=deattention", "guidance=mask_dir"],
        lambda u: ["guidance.mask_dir must be set", "guidance=deeplab_cityscapes"],
    ),
    # the mining cache pass starts inside the training loader: Lightning's cleanup error must not hide the cause
    "corrupt training image, loader workers": Case(
        "train.py",
        lambda u: [*city(u), f"paths.data_dir={u['case']}/data", "data.num_workers=2", "head=gem"],
        lambda u: ["is corrupt or not an image", "000000_pitch1_yaw1.jpg"],
        lambda u: _corrupt_city_image(u),
    ),
    "a generated city missing an image": Case(
        "train.py",
        lambda u: [*city(u), f"paths.data_dir={u['case']}/data", "head=gem"],
        lambda u: ["1 of the", "are missing", "is a generated synthetic city: delete the folder"],
        lambda u: _deleted_city_image(u),
    ),
    "monitor a training metric": Case(
        "train.py", lambda u: [*city(u), "monitor=train/loss"], lambda u: ["monitor=train/loss", "validation metric"]
    ),
    "monitor an N not computed": Case(
        "train.py", lambda u: [*city(u), "monitor=val/R@3"], lambda u: ["monitor=val/R@3", "recall_at"]
    ),
    "NetVLAD version": Case(
        "eval.py",
        lambda u: [*pitts(u), "head=netvlad", "head.version=v9"],
        lambda u: ["head (vpr.models.heads.netvlad.NetVLAD)", "v9"],
    ),
    "misspelt head setting": Case("eval.py", lambda u: [*pitts(u), "+head.pp=2"], lambda u: ["head (", "'pp'"]),
    "ResNet cut": Case("eval.py", lambda u: [*pitts(u), "backbone.cut_at=layer9"], lambda u: ["backbone (", "layer9"]),
    "BAM combination": Case(
        "eval.py", lambda u: [*pitts(u), "attention=bam", "attention.combine=xor"], lambda u: ["attention (", "xor"]
    ),
    "sTML version": Case(
        "eval.py", lambda u: [*pitts(u), "loss=stml", "loss.version=3"], lambda u: ["loss (", "version=3"]
    ),
    "evaluation split": Case("eval.py", lambda u: [*pitts(u), "split=testing"], lambda u: ["split=testing"]),
    "PCA larger than the database": Case(
        "eval.py", lambda u: [*city(u), *NET, "head=gem", "pca_dim=100000"], lambda u: ["pca_dim=100000"]
    ),
    # ---- checkpoints
    "checkpoint path wrong": Case(
        "eval.py",
        lambda u: [f"ckpt_path={u['base']}/gone.ckpt"],
        lambda u: ["ckpt_path=", "gone.ckpt", "no such checkpoint file"],
    ),
    "checkpoint is a text file": Case(
        "eval.py",
        lambda u: [f"ckpt_path={u['base']}/notes.txt"],
        lambda u: ["notes.txt", "not a readable checkpoint: not a file saved by torch"],
    ),
    "checkpoint truncated": Case(
        "eval.py",
        lambda u: [f"ckpt_path={u['base']}/truncated.ckpt"],
        lambda u: ["truncated.ckpt", "not a readable checkpoint: truncated"],
    ),
    "checkpoint path is a folder": Case(
        "eval.py", lambda u: [f"ckpt_path={u['base']}"], lambda u: ["is a folder", "last.ckpt"]
    ),
    "checkpoint without weights": Case(
        "eval.py",
        lambda u: [f"ckpt_path={u['base']}/no_state_dict.ckpt"],
        lambda u: ["no_state_dict.ckpt", "has no state_dict"],
    ),
    "checkpoint that runs code": Case(
        "eval.py",
        lambda u: [f"ckpt_path={u['base']}/runs_code.ckpt"],
        lambda u: ["runs_code.ckpt", "refusing to load it"],
    ),
    "checkpoint of another architecture": Case(
        "eval.py",
        lambda u: [*city(u), f"ckpt_path={u['ckpt_other_arch']}"],
        lambda u: ["other_arch.ckpt", "do not fit", "attention."],
    ),
    "init_weights path wrong": Case(
        "train.py",
        lambda u: [*city(u), f"init_weights={u['base']}/gone.ckpt"],
        lambda u: ["init_weights=", "gone.ckpt"],
    ),
    "init_weights without head weights": Case(
        "train.py",
        lambda u: [*city(u), f"init_weights={u['ckpt_no_head']}"],
        lambda u: ["no_head.ckpt", "no weights for this head"],
    ),
    "resume with nothing to resume": Case(
        "train.py",
        lambda u: [*city(u), "ckpt_path=last", f"paths.log_dir={u['case']}/logs"],
        lambda u: ["ckpt_path=last", "no last.ckpt"],
    ),
    # ---- centroids and writable folders
    "centroid file missing": Case(
        "train.py",
        lambda u: [*city(u), f"paths.centroids_dir={u['case']}/c", "cluster.auto=false"],
        lambda u: ["centroid file", "python cluster.py"],
    ),
    "centroid file corrupt": Case(
        "train.py",
        lambda u: [*city(u), f"cluster.file={u['base']}/centroids/broken.hdf5"],
        lambda u: ["broken.hdf5", "not a readable HDF5"],
    ),
    "too few descriptors for K": Case(
        "cluster.py",
        lambda u: [
            *city(u),
            f"paths.centroids_dir={u['case']}/c",
            "cluster.images=1",
            "cluster.descriptors_per_image=2",
        ],
        lambda u: ["only 2 descriptors", "cluster.images"],
    ),
    "checkpoint folder not writable": Case(
        "train.py",
        lambda u: [*city(u), f"callbacks.checkpoint.dirpath={u['base']}/notes.txt/ckpts"],
        lambda u: ["notes.txt/ckpts", "not writable"],
    ),
    "city folder under a file": Case(
        "train.py",
        lambda u: [*city(u), f"data.root={u['base']}/notes.txt/city"],
        lambda u: ["data.root=", "notes.txt/city", "Not a directory", "a folder you can write"],
    ),
}


def _nan_utm(u: dict):
    record = scipy.io.loadmat(str(u["pitts"] / "datasets" / "pitts30k_test.mat"))["dbStruct"][0, 0]
    utm = record["utmDb"].copy()
    utm[1, 4] = float("nan")
    return utm


def _text_spec(u: dict) -> None:
    root = u["case"] / "pitts"
    shutil.copytree(u["pitts"], root)
    (root / "datasets" / "pitts30k_test.mat").write_text("this is not MATLAB\n" * 20)
    u["broken"] = root


def _corrupt_image(u: dict) -> None:
    root = u["case"] / "pitts"
    shutil.copytree(u["pitts"], root)
    image = root / "000" / "000000_pitch1_yaw2.jpg"
    image.write_bytes(image.read_bytes()[:200])  # a truncated download
    u["broken"] = root


def _deleted_city_image(u: dict) -> None:
    shutil.copytree(u["data_dir"] / "city_tiny_seed0", u["case"] / "data" / "city_tiny_seed0")
    (u["case"] / "data" / "city_tiny_seed0" / "000" / "000001_pitch1_yaw1.jpg").unlink()


def _corrupt_city_image(u: dict) -> None:
    shutil.copytree(u["data_dir"] / "city_tiny_seed0", u["case"] / "data" / "city_tiny_seed0")
    image = u["case"] / "data" / "city_tiny_seed0" / "000" / "000000_pitch1_yaw1.jpg"  # a training database image
    image.write_bytes(image.read_bytes()[:200])


def _centroid_file(path: Path, k: int, dim: int) -> None:
    """A centroid file as its format says: datasets ``centroids`` (K, D) and ``descriptors`` (N, D)."""
    import h5py

    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.create_dataset("centroids", data=rng.standard_normal((k, dim)).astype(np.float32))
        f.create_dataset("descriptors", data=rng.standard_normal((10 * k, dim)).astype(np.float32))


def _missing_image(u: dict) -> None:
    root = u["case"] / "pitts"
    shutil.copytree(u["pitts"], root)
    next(p for p in sorted(root.glob("000/*.jpg"))).unlink()
    u["broken"] = root


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_the_table_is_long_enough():
    assert len(CASES) >= 40
    assert {c.script for c in CASES.values()} == {"train.py", "eval.py", "cluster.py"}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_ends_in_one_error_line(name, user, tmp_path):
    case = CASES[name]
    u = {**user, "case": tmp_path}
    if case.prepare:
        case.prepare(u)
    before = _digest(user["base"])
    proc = run_script(case.script, *case.args(u), f"hydra.run.dir={tmp_path}/run", tmp=tmp_path, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}:\n{out[-3000:]}"
    assert "Traceback" not in out, out[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    message = proc.stderr[proc.stderr.index("error:") :]
    for fragment in case.expect(u):
        assert str(fragment) in message, f"{fragment!r} not in: {message[:1500]}"
    assert _digest(user["base"]) == before, "a file of the user's changed"
    assert not (tmp_path / "code_ran").exists()
