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
    run_script(
        "train.py", *common(data_dir, tmp_path), "strategy=ddp", "trainer.devices=2", "logger=none",
        "test_untrained=false", f"hydra.run.dir={run}", tmp=tmp_path,
    )
    ddp = json.loads((run / "results.json").read_text())
    out = tmp_path / "single"
    run_script("eval.py", *common(data_dir, tmp_path)[:3], f"ckpt_path={ddp['checkpoint']}", f"hydra.run.dir={out}",
               tmp=tmp_path)
    single = json.loads((out / "results.json").read_text())
    assert ddp["recall_at"] == single["recall_at"]
    assert ddp["num_queries"] == single["num_queries"]
