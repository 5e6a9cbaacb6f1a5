"""eval.py on datasets in the real files' layout (written from the format, not by vpr): every reading path
(MATLAB v5 and v7.3 with the real field names, the older names, Tokyo 24/7's .jpg-listed .png files and its
spatial NMS) gives the Recall@N of a brute-force computation on the same descriptors, and several test sets
come out of one command as one table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import compose_script, run_script
from tests.data.spec_files import SpecDataset, pittsburgh_like, tokyo247_like

NETWORK = [
    "backbone=resnet18",
    "backbone.pretrained=false",
    "head=gem",
    "data.image_size=[48,64]",
    "data.num_workers=0",
    "data.eval_batch_size=7",
    "trainer.accelerator=cpu",
]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, SpecDataset]:
    base = tmp_path_factory.mktemp("spec")
    return {
        "v5": pittsburgh_like(base / "pitts_v5", fmt="v5", seed=0),
        "v73": pittsburgh_like(base / "pitts_v73", fmt="v73", seed=1),
        "old": pittsburgh_like(base / "pitts_old", fmt="old", seed=2),
        "tokyo247": tokyo247_like(base / "tokyo", seed=3),
    }


@pytest.fixture(scope="module")
def network():
    """The network eval.py builds from NETWORK (same seed, so the same random weights), built here in-process."""
    from vpr.build import build_module

    cfg = compose_script("eval", *NETWORK, "paths.output_dir=unused")
    module = build_module(cfg, with_training=False).eval()
    return module


def descriptors(module, paths: list[Path]) -> np.ndarray:
    from vpr.data.transforms import eval_transform

    t = eval_transform((48, 64))
    with torch.no_grad():
        return np.concatenate([module(t(Image.open(p).convert("RGB"))[None]).numpy() for p in paths])


def brute_force_recall(ds: SpecDataset, module, ns=(1, 5, 10, 20), group_size: int | None = None) -> dict[str, float]:
    """Loops: every query's distances to every database image, sorted; the first N (places, with NMS) checked
    against the database images within 25 m."""
    suffix = ds.db_suffix_on_disk
    db_paths = [(ds.db_dir / n).with_suffix(suffix) if suffix else ds.db_dir / n for n in ds.db_names]
    db = descriptors(module, db_paths)
    qs = descriptors(module, [ds.q_dir / n for n in ds.q_names])
    hits = {n: 0 for n in ns}
    for qi, q in enumerate(qs):
        order = sorted(range(len(db)), key=lambda i: float(((db[i] - q) ** 2).sum()))
        if group_size:
            seen, kept = set(), []
            for i in order:
                if i // group_size not in seen:
                    seen.add(i // group_size)
                    kept.append(i)
            order = kept
        true = {i for i in range(len(db)) if np.hypot(*(ds.utm_db[i] - ds.utm_q[qi])) <= 25.0}
        for n in ns:
            hits[n] += any(i in true for i in order[:n])
    return {str(n): hits[n] / len(qs) for n in ns}


def test_eval_single_set_real_field_names(datasets, network, tmp_path):
    out = tmp_path / "run"
    run_script(
        "eval.py", "data=pitts30k", f"data.root={datasets['v5'].root}", *NETWORK, f"hydra.run.dir={out}", tmp=tmp_path
    )
    res = json.loads((out / "results.json").read_text())
    assert res["dataset"] == "pitts30k" and res["split"] == "test" and res["spatial_nms"] is False
    assert res["num_database"] == 24 and res["num_queries"] == 8
    assert res["recall_at"] == pytest.approx(brute_force_recall(datasets["v5"], network))


def test_eval_several_sets_in_one_command(datasets, network, tmp_path):
    out = tmp_path / "run"
    sets = ",".join(
        [
            f"{{data:pitts30k,root:'{datasets['v5'].root}',label:v5}}",
            f"{{data:pitts30k,root:'{datasets['v73'].root}',label:v73}}",
            f"{{data:pitts30k,root:'{datasets['old'].root}',label:old_names}}",
            f"{{data:tokyo247,root:'{datasets['tokyo247'].root}'}}",
        ]
    )
    proc = run_script("eval.py", f"test_sets=[{sets}]", *NETWORK, f"hydra.run.dir={out}", tmp=tmp_path)
    summary = json.loads((out / "results_sets.json").read_text())
    assert list(summary) == ["v5", "v73", "old_names", "tokyo247"]
    for label, key in (("v5", "v5"), ("v73", "v73"), ("old_names", "old")):
        per_set = json.loads((out / f"results_{label}.json").read_text())
        assert per_set == summary[label]
        assert per_set["spatial_nms"] is False and per_set["num_database"] == 24
        assert per_set["recall_at"] == pytest.approx(brute_force_recall(datasets[key], network)), label
    tokyo = summary["tokyo247"]
    assert tokyo["dataset"] == "tokyo247" and tokyo["spatial_nms"] is True and tokyo["num_database"] == 60
    assert tokyo["recall_at"] == pytest.approx(brute_force_recall(datasets["tokyo247"], network, group_size=12))
    # One table: a column per set, a row per N.
    header = next(line for line in proc.stdout.splitlines() if line.startswith("| Recall"))
    assert header.split("|")[2:6] == [" v5 ", " v73 ", " old_names ", " tokyo247 "]
    assert "| R@20 |" in proc.stdout and "| spatial NMS | no | no | no | yes |" in proc.stdout
    assert (out / "results_sets.md").read_text().count("| R@") == 4


def test_untrained_netvlad_on_an_evaluation_only_dataset(datasets, tmp_path):
    """Tokyo 24/7 has only a test split: the untrained NetVLAD network is evaluated on it with centroids from
    elsewhere (cluster.file), and without them the message says how to get them, instead of asking for a training
    split that the evaluation does not need."""
    import h5py

    rng = np.random.default_rng(0)
    centroids = tmp_path / "centroids.hdf5"  # the centroid file's datasets, written by hand: (K, D) and (N, D)
    with h5py.File(centroids, "w") as f:
        f.create_dataset("centroids", data=rng.standard_normal((8, 256)).astype(np.float32))
        f.create_dataset("descriptors", data=rng.standard_normal((400, 256)).astype(np.float32))
    netvlad = [s for s in NETWORK if s != "head=gem"] + ["head=netvlad", "model.num_clusters=8"]
    root = datasets["tokyo247"].root
    out = tmp_path / "run"
    proc = run_script(
        "eval.py",
        "data=tokyo247",
        f"data.root={root}",
        *netvlad,
        f"cluster.file={centroids}",
        f"hydra.run.dir={out}",
        tmp=tmp_path,
    )
    assert f"NetVLAD initialised from {centroids}" in proc.stdout + proc.stderr
    assert json.loads((out / "results.json").read_text())["num_database"] == 60

    proc = run_script(
        "eval.py",
        "data=tokyo247",
        f"data.root={root}",
        *netvlad,
        "cluster.auto=true",
        f"cluster.file={tmp_path / 'none.hdf5'}",
        f"hydra.run.dir={tmp_path / 'r2'}",
        tmp=tmp_path,
        check=False,
    )
    err = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in err
    assert "needs a training split, and dataset tokyo247 has none" in err and "cluster.file=<path>" in err
