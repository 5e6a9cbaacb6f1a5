"""What eval.py writes beside results.json: per-query predictions (checked against the split file's coordinates
read with scipy, and against the recalls), the worst failures' picture, and a PCA fitted once, saved and reused."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import scipy.io as sio

from tests.conftest import run_script
from tests.test_checkpoint_compat import random_checkpoint
from tests.test_readme_commands import readme_results_example


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    random_checkpoint(path)
    return path


def evaluate(data_dir, ckpt, out, tmp, *extra, check=True):
    return run_script(
        "eval.py",
        "data.prepare.preset=tiny",
        f"paths.data_dir={data_dir}",
        f"ckpt_path={ckpt}",
        "data.num_workers=0",
        f"hydra.run.dir={out}",
        *extra,
        tmp=tmp,
        check=check,
    )


def test_predictions_file_agrees_with_coordinates_and_recalls(data_dir, checkpoint, tmp_path):
    out = tmp_path / "run"
    evaluate(data_dir, checkpoint, out, tmp_path)
    results = json.loads((out / "results.json").read_text())
    assert sorted(results) == sorted(readme_results_example())  # what README shows, no PCA or mask here
    spec = sio.loadmat(
        data_dir / "city_tiny_seed0" / "datasets" / "city_test.mat", squeeze_me=True, struct_as_record=False
    )["dbStruct"]
    db_utm = {name: xy for name, xy in zip(spec.dbImageFns, np.asarray(spec.utmDb).T)}
    q_utm = {name: xy for name, xy in zip(spec.qImageFns, np.asarray(spec.utmQ).T)}

    def utm(table, name):  # the file names images from the folder holding them all; the spec from its own folder
        (match,) = [xy for n, xy in table.items() if name == n or name.endswith("/" + n)]
        return match

    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    by_query: dict[str, list[dict]] = {}
    for r in rows:
        by_query.setdefault(r["query"], []).append(r)
    assert len(by_query) == len(spec.qImageFns) == results["num_queries"]
    for q, ranked in by_query.items():
        assert [int(r["rank"]) for r in ranked] == list(range(1, 21))  # the largest N of model.recall_at
        assert len({r["database"] for r in ranked}) == 20
        distances = [float(r["distance"]) for r in ranked]
        assert distances == sorted(distances)
        for r in ranked:
            within = np.hypot(*(utm(db_utm, r["database"]) - utm(q_utm, q))) <= float(spec.posDistThr)
            assert (r["correct"] == "True") == within, (q, r)
    for n in (1, 5, 10, 20):
        hit = np.mean([any(r["correct"] == "True" for r in ranked[:n]) for ranked in by_query.values()])
        assert results["recall_at"][str(n)] == pytest.approx(hit)
    assert json.loads((out / "predictions.json").read_text()).keys() == by_query.keys()
    if results["recall_at"]["1"] < 1.0:
        assert (out / "pictures" / "worst_failures.png").stat().st_size > 1000


def test_pca_fitted_saved_and_reused(data_dir, checkpoint, tmp_path):
    pca = tmp_path / "pca8.npz"
    evaluate(data_dir, checkpoint, tmp_path / "fit", tmp_path, "pca_dim=8", f"pca_file={pca}")
    fitted = json.loads((tmp_path / "fit" / "results.json").read_text())
    assert fitted["pca_dim"] == 8 and fitted["pca_fitted_on"] == "city" and pca.is_file()
    proc = evaluate(data_dir, checkpoint, tmp_path / "reuse", tmp_path, f"pca_file={pca}")
    assert "Recall (%) after PCA-whitening to 8 dimensions" in proc.stdout  # the table says what it measured
    reused = json.loads((tmp_path / "reuse" / "results.json").read_text())
    assert reused["recall_at"] == fitted["recall_at"] and reused["pca_dim"] == 8
    with open(tmp_path / "fit" / "predictions.csv") as a, open(tmp_path / "reuse" / "predictions.csv") as b:
        assert a.read() == b.read()
    # a second fit never overwrites the saved file
    before = pca.read_bytes()
    proc = evaluate(data_dir, checkpoint, tmp_path / "again", tmp_path, "pca_dim=4", f"pca_file={pca}", check=False)
    assert proc.returncode == 2 and f"pca_file={pca} exists" in proc.stderr + proc.stdout
    assert pca.read_bytes() == before


def test_eval_writes_what_train_writes(data_dir, checkpoint, tmp_path):
    """config.yaml (with the checkpoint's network and variant), results.md, the retrieval pictures; the checkpoint
    named by its absolute path wherever the command ran."""
    import os

    import yaml

    out = tmp_path / "run"
    evaluate(data_dir, os.path.relpath(checkpoint, tmp_path), out, tmp_path)  # relative to where it runs
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["attention"]["_target_"] == "vpr.models.attention.se.SE"  # the checkpoint's network
    assert cfg["variant"] == "baseline" and cfg["seed"] == 42  # its training run's, written by hand in the fixture
    results = json.loads((out / "results.json").read_text())
    md = (out / "results.md").read_text()
    assert f"{100 * results['recall_at']['1']:.1f}" in md and "R@1" in md
    assert (out / "pictures" / "test_retrievals.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert results["checkpoint"] == str(checkpoint)


def test_a_recall_n_beyond_the_database_is_said_once(data_dir, checkpoint, tmp_path):
    proc = evaluate(data_dir, checkpoint, tmp_path / "run", tmp_path, "model.recall_at=[1,5,40,100]")
    out = proc.stdout + proc.stderr
    assert out.count("model.recall_at [40, 100]: city/test") == 1 and "has only 40 database images" in out
    assert json.loads((tmp_path / "run" / "results.json").read_text())["recall_at"]["100"] == 1.0
