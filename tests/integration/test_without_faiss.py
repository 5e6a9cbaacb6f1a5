"""Without faiss (a GPU machine whose CUDA has no faiss-gpu wheel, say) the pipeline runs: k-means and the exact
search in torch, one warning each, and the same recall as faiss's search of the same checkpoint."""

from __future__ import annotations

import json

from tests.conftest import run_script, run_script_hiding
from tests.integration.test_pipeline import common


def test_train_and_eval_without_faiss(data_dir, tmp_path):
    run = tmp_path / "run"
    proc = run_script_hiding(
        "faiss",
        "train.py",
        *common(data_dir, tmp_path),
        "logger=none",
        f"hydra.run.dir={run}",
        f"paths.centroids_dir={tmp_path}/centroids",
        tmp=tmp_path,
    )  # k-means runs here
    log = proc.stdout + proc.stderr
    assert "faiss is not installed (pip install -e '.[cpu]' for faiss): k-means in torch" in log
    assert "exact search in torch" in log
    trained = json.loads((run / "results.json").read_text())
    ckpt = trained["checkpoint"]
    base = [f"paths.data_dir={data_dir}", "data.prepare.preset=tiny", f"ckpt_path={ckpt}", "data.num_workers=0"]
    run_script_hiding("faiss", "eval.py", *base, f"hydra.run.dir={tmp_path / 'torch'}", tmp=tmp_path)
    run_script("eval.py", *base, f"hydra.run.dir={tmp_path / 'faiss'}", tmp=tmp_path)
    with_torch = json.loads((tmp_path / "torch" / "results.json").read_text())
    with_faiss = json.loads((tmp_path / "faiss" / "results.json").read_text())
    assert with_torch["recall_at"] == with_faiss["recall_at"] == trained["recall_at"]
