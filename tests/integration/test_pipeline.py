"""End to end on the tiny synthetic city, through the real scripts and configs: cluster -> train -> eval -> resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import compose_script, run_script


def common(data_dir: Path, tmp: Path) -> list[str]:
    return [
        "experiment=city_baseline",
        "data.prepare.preset=tiny",
        f"paths.data_dir={data_dir}",
        f"paths.log_dir={tmp}/outputs",
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
        "trainer.max_epochs=1",
    ]


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """One training run (cluster.auto) shared by the tests of this module."""
    from tests.data.spec_files import tokyo247_like

    tmp = tmp_path_factory.mktemp("train")
    tokyo = tokyo247_like(tmp / "tokyo", num_places=3).root
    run = tmp / "outputs" / "train" / "runs" / "run1"  # where ckpt_path=last looks
    proc = run_script(
        "train.py",
        *common(data_dir, tmp),
        "logger=csv",
        "test_untrained=true",
        f"test_sets=[{{data:tokyo247,root:'{tokyo}'}}]",
        f"hydra.run.dir={run}",
        tmp=tmp,
    )
    return tmp, run, proc


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_train_writes_results_and_checkpoints(trained, data_dir):
    tmp, run, proc = trained
    res = read(run / "results.json")
    assert res["dataset"] == "city" and res["split"] == "test"
    assert set(res["recall_at"]) == {"1", "5", "10", "20"}
    r = [res["recall_at"][k] for k in ("1", "5", "10", "20")]
    assert all(0.0 <= x <= 1.0 for x in r) and r == sorted(r)
    assert res["num_queries"] > 0 and res["num_database"] > 0
    assert read(run / "results_untrained.json")["split"] == "test"
    # the loggers: test/R@N is the trained network's, the untrained one's has a name of its own
    import csv

    (metrics,) = run.rglob("metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    logged = {key: float(row[key]) for row in rows for key in ("test/R@1", "test_untrained/R@1") if row.get(key)}
    assert logged["test/R@1"] == pytest.approx(res["recall_at"]["1"])
    assert logged["test_untrained/R@1"] == pytest.approx(read(run / "results_untrained.json")["recall_at"]["1"])
    assert sum(1 for row in rows if row.get("test/R@1")) == 1
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "pictures" / "test_retrievals.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "untrained" in proc.stdout and "trained" in proc.stdout  # the side-by-side table
    centroids = list((data_dir / "centroids").glob("resnet18-layer3-random42_city-tiny-seed0_8_48x64_desc_cen.hdf5"))
    assert centroids, "cluster.auto wrote the centroid file under the name encoding backbone, city, K, size"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert "vpr_config" in ckpt
    remembered = ckpt["PlaceDataModule"]["miner"]["remembered"]
    assert (remembered >= 0).any(), "the remembered negatives are saved in the checkpoint"
    assert ckpt["optimizer_states"] and ckpt["lr_schedulers"]


def test_eval_reproduces_training_test_recall(trained, data_dir):
    tmp, run, _ = trained
    out = tmp / "eval1"
    ckpt = read(run / "results.json")["checkpoint"]
    run_script("eval.py", *common(data_dir, tmp)[:3], f"ckpt_path={ckpt}", f"hydra.run.dir={out}", tmp=tmp)
    assert read(out / "results.json")["recall_at"] == read(run / "results.json")["recall_at"]


def test_train_tests_on_the_test_sets_too(trained, data_dir):
    tmp, run, proc = trained
    res = read(run / "results_tokyo247.json")
    assert res["dataset"] == "tokyo247" and res["spatial_nms"] is True and res["num_database"] == 36
    assert res["checkpoint"] == read(run / "results.json")["checkpoint"]  # the best checkpoint, as the own test
    assert read(run / "results_sets.json") == {"tokyo247": res}
    assert (run / "pictures" / "test_retrievals_tokyo247.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| spatial NMS | yes |" in proc.stdout
    # eval.py on the same checkpoint and set reproduces it
    out = tmp / "eval_sets"
    tokyo = tmp / "tokyo"
    run_script(
        "eval.py",
        f"ckpt_path={res['checkpoint']}",
        f"test_sets=[{{data:tokyo247,root:'{tokyo}'}}]",
        "data.num_workers=0",
        f"hydra.run.dir={out}",
        tmp=tmp,
    )  # the trained size: 48 x 64
    assert read(out / "results_tokyo247.json")["recall_at"] == res["recall_at"]


def test_eval_with_pca_whitening(trained, data_dir):
    tmp, run, _ = trained
    out = tmp / "eval_pca"
    proc = run_script(
        "eval.py",
        *common(data_dir, tmp)[:3],
        f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
        "pca_dim=16",
        f"hydra.run.dir={out}",
        tmp=tmp,
    )
    assert "PCA-whitening 2048 -> 16" in proc.stdout + proc.stderr
    res = read(out / "results.json")
    assert res["pca_dim"] == 16
    r = [res["recall_at"][k] for k in ("1", "5", "10", "20")]
    assert r == sorted(r) and 0 < r[-1] <= 1


def test_eval_through_pittsburgh_reader_matches_synthetic(trained, data_dir, tiny_city):
    tmp, run, _ = trained
    ckpt = run / "checkpoints" / "last.ckpt"
    a, b = tmp / "eval_syn", tmp / "eval_pitt"
    base = [f"paths.data_dir={data_dir}", f"ckpt_path={ckpt}"]
    run_script("eval.py", "data=synthetic", "data.prepare.preset=tiny", *base, f"hydra.run.dir={a}", tmp=tmp)
    run_script(
        "eval.py", "data=pittsburgh", f"data.root={tiny_city}", "data.name=city", *base, f"hydra.run.dir={b}", tmp=tmp
    )
    ra, rb = read(a / "results.json"), read(b / "results.json")
    assert ra["recall_at"] == rb["recall_at"] and ra["num_queries"] == rb["num_queries"]


def test_resume_from_last_continues_with_state(trained, data_dir):
    import shutil

    tmp, run, _ = trained
    logs = tmp / "resume_logs"  # a copy: the resumed run writes its checkpoints into the resumed run's folder
    shutil.copytree(run, logs / "train" / "runs" / "run1")
    out = tmp / "resumed"
    run_script(
        "train.py",
        *(o for o in common(data_dir, tmp) if not o.startswith("paths.log_dir")),
        f"paths.log_dir={logs}",
        "trainer.max_epochs=2",
        "ckpt_path=last",
        "logger=none",
        "test_untrained=false",
        f"hydra.run.dir={out}",
        tmp=tmp,
    )
    ckpt = torch.load(
        logs / "train" / "runs" / "run1" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    assert ckpt["epoch"] == 1  # started from epoch 0's checkpoint, trained one more epoch
    assert ckpt["lr_schedulers"][0]["last_epoch"] == 2


def cluster_args(data_dir: Path, tmp_path: Path) -> list[str]:
    """cluster.py on the tiny city, K=4 from 10 images x 5 descriptors, its file under ``tmp_path/c``."""
    return [
        "experiment=city_baseline",
        "data.prepare.preset=tiny",
        f"paths.data_dir={data_dir}",
        f"paths.centroids_dir={tmp_path}/c",
        "model.num_clusters=4",
        "cluster.images=10",
        "cluster.descriptors_per_image=5",
        "data.image_size=[48,64]",
        f"hydra.run.dir={tmp_path}/run",
    ]


def test_cluster_script_writes_file_named_by_backbone_dataset_k(data_dir, tmp_path):
    run_script("cluster.py", *cluster_args(data_dir, tmp_path), tmp=tmp_path)
    import h5py

    (path,) = (tmp_path / "c").glob("*.hdf5")
    assert path.name == "resnet18-layer3-random42_city-tiny-seed0_4_48x64_desc_cen.hdf5"
    with h5py.File(path) as f:
        assert f["centroids"].shape == (4, 256) and f["descriptors"].shape == (50, 256)
        assert (f.attrs["images"], f.attrs["descriptors_per_image"], f.attrs["iterations"]) == (10, 5, 100)


def test_a_centroid_file_of_other_clustering_settings_is_used_with_a_warning(caplog, tmp_path):
    """Its name carries no cluster.* setting, so a run of other counts finds it: the run says what differs."""
    from omegaconf import OmegaConf

    from vpr.centroids import check_clustering_settings

    cfg = OmegaConf.create({"seed": 3, "cluster": {"images": 500, "descriptors_per_image": 100, "iterations": 100}})
    random_weights = torch.nn.Conv2d(3, 4, 1)  # not pretrained: the run's seed clusters
    path = tmp_path / "c.hdf5"
    with caplog.at_level("WARNING"):
        check_clustering_settings(
            path, {"images": 500, "descriptors_per_image": 100, "iterations": 100, "seed": 3}, cfg, random_weights
        )
        assert not caplog.records
        check_clustering_settings(
            path, {"images": 20, "descriptors_per_image": 100, "iterations": 100, "seed": 3}, cfg, random_weights
        )
        check_clustering_settings(
            path, {"images": 500, "descriptors_per_image": 100, "iterations": 5, "seed": 1}, cfg, random_weights
        )
        check_clustering_settings(path, {"num_clusters": 8}, cfg, random_weights)  # a file without the records
    first, second = [r.getMessage() for r in caplog.records]
    assert "images 20 (this run: 500)" in first and "iterations" not in first
    assert "iterations 5 (this run: 100)" in second and "seed 1 (this run: 3)" in second


def test_a_pretrained_backbones_centroid_file_is_the_same_whichever_run_seed_makes_it(data_dir, tmp_path):
    """Its name carries no seed, so runs of every seed share it: its content must not depend on the seed of the run
    that happened to make it (a seed sweep would otherwise train from other centroids than its jobs run alone)."""
    import h5py
    import numpy as np
    import torchvision

    weights = tmp_path / "resnet18.pth"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        torch.save(torchvision.models.resnet18().state_dict(), weights)
    made = []
    for seed in (1, 2):
        out = tmp_path / f"seed{seed}"
        out.mkdir()
        pretrained = ["backbone.pretrained=true", f"backbone.weights_path={weights}", f"seed={seed}"]
        run_script("cluster.py", *cluster_args(data_dir, out), *pretrained, tmp=out)
        (path,) = (out / "c").glob("*.hdf5")
        assert path.name == "resnet18-layer3_city-tiny-seed0_4_48x64_desc_cen.hdf5"
        with h5py.File(path) as f:
            made.append((f["descriptors"][:], f["centroids"][:]))
    np.testing.assert_array_equal(made[0][0], made[1][0])
    np.testing.assert_array_equal(made[0][1], made[1][1])


def test_centroid_files_of_other_recipes_and_cities_have_other_names(tmp_path):
    """city_baseline (96x128) and city_main (120x160), or the tiny and default cities, never share a file."""
    from vpr.build import build_network
    from vpr.centroids import centroid_path

    def name(*overrides):
        cfg = compose_script("train", *overrides, "logger=none", f"paths.data_dir={tmp_path}")
        backbone, _, head = build_network(cfg)
        return centroid_path(cfg, backbone, head).name

    baseline, main = name("experiment=city_baseline"), name("experiment=city_main")
    tiny = name("experiment=city_baseline", "data.prepare.preset=tiny")
    assert len({baseline, main, tiny}) == 3
    assert baseline == "resnet18-layer3-random42_city-default-seed0_32_96x128_desc_cen.hdf5"
    assert (
        name("experiment=paper_baseline", "data=pitts30k", "data.root=/x", "backbone.pretrained=false")
        == "vgg16-random42_pitts30k_64_480x640_desc_cen.hdf5"
    )


def test_an_unreadable_centroid_file_is_computed_again(data_dir, tmp_path):
    args = cluster_args(data_dir, tmp_path)
    path = tmp_path / "c" / "resnet18-layer3-random42_city-tiny-seed0_4_48x64_desc_cen.hdf5"
    path.parent.mkdir()
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)  # the signature of a write killed at its start
    proc = run_script("cluster.py", *args, tmp=tmp_path)
    assert "unreadable" in proc.stdout
    import h5py

    with h5py.File(path) as f:
        assert f["centroids"].shape == (4, 256)


def test_a_centroid_file_of_another_database_under_the_same_name_is_refused(data_dir, tmp_path, capsys):
    """Two cities read with data=pittsburgh under one data.name give one file name: the second city's run does
    not take the first city's centroids; the same city at another root does, and data.tag names a file apart."""
    import shutil

    from vpr.data.dataset import load_mat_split
    from vpr.data.synthetic import generate_city
    from vpr.errors import ConfigError
    from vpr.run.cluster import run_clustering

    first, moved, second = data_dir / "city_tiny_seed0", tmp_path / "moved", tmp_path / "second"
    shutil.copytree(first, moved)
    generate_city(second, "tiny", seed=1, progress=False)
    a, b = (load_mat_split(root, "city", "train") for root in (first, second))
    assert len(a.db_paths) == len(b.db_paths) and np.abs(a.db_utm - b.db_utm).max() > 1.0  # other places

    def cluster(root, *more):
        args = [o for o in cluster_args(data_dir, tmp_path) if not o.startswith(("data.", "hydra."))]
        data = ["data=pittsburgh", f"data.root={root}", "data.name=city", "data.image_size=[48,64]"]
        out = f"paths.output_dir={tmp_path}/run"
        return run_clustering(compose_script("cluster", *args, *data, "data.num_workers=0", out, *more))

    path = cluster(first)
    assert path.name == "resnet18-layer3-random42_city_4_48x64_desc_cen.hdf5"
    assert cluster(moved) == path and "exists" in capsys.readouterr().out  # the same database elsewhere
    with pytest.raises(ConfigError, match="sampled from another training database .*data.tag=<name>"):
        cluster(second)
    assert cluster(second, "data.tag=second").name == "resnet18-layer3-random42_second_4_48x64_desc_cen.hdf5"
