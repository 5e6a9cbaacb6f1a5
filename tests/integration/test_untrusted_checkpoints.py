"""A checkpoint cannot run code: every entry point that loads one refuses a pickled callable, and a stored config
may only build the project's own components. Nothing of the crafted file runs (the marker file stays absent)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests.conftest import run_script
from tests.integration.test_errors import assert_clean_failure

FIXTURE = Path(__file__).parent.parent / "fixtures" / "checkpoint_layout_v1.json"


class RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def crafted(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {"head.centroids": torch.zeros(2, 2)}, "epoch": 0, "payload": RunsCode(marker)}, path)
    return path


@pytest.mark.parametrize(
    ("script", "setting"),
    [("eval.py", "ckpt_path"), ("train.py", "ckpt_path"), ("train.py", "init_weights")],
)
def test_pickled_callable_is_refused(script, setting, data_dir, tmp_path):
    marker = tmp_path / "code_ran"
    ckpt = crafted(tmp_path / "evil.ckpt", marker)
    proc = run_script(
        script,
        "experiment=city_baseline",
        "data.prepare.preset=tiny",
        f"paths.data_dir={data_dir}",
        f"{setting}={ckpt}",
        "logger=none",
        f"hydra.run.dir={tmp_path}/r",
        tmp=tmp_path,
        check=False,
    )
    assert_clean_failure(proc, f"error: {setting}={ckpt}", "refusing to load it")
    assert not marker.exists(), "the crafted checkpoint ran code"


def test_stored_config_may_only_build_project_components(data_dir, tmp_path):
    spec = json.loads(FIXTURE.read_text())
    config = spec["vpr_config"]
    config["head"] = {"_target_": "os.system", "command": f"touch {tmp_path / 'code_ran'}"}
    torch.save({"state_dict": {}, "vpr_config": config}, tmp_path / "foreign.ckpt")
    proc = run_script(
        "eval.py",
        "data.prepare.preset=tiny",
        f"paths.data_dir={data_dir}",
        f"ckpt_path={tmp_path / 'foreign.ckpt'}",
        f"hydra.run.dir={tmp_path}/r",
        tmp=tmp_path,
        check=False,
    )
    assert_clean_failure(proc, "'os.system' (vpr_config.head._target_)", "refusing to build it")
    assert not (tmp_path / "code_ran").exists()
