"""The suite runs in parallel processes (``make test``: pytest-xdist): the scripts a test starts do not take the
caller's distributed rendezvous, ranks or data and output folders from its shell, which would put tests running at
once on one port or in one folder."""

from __future__ import annotations

import re
import sys

from tests.conftest import ROOT, script_env

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = None


SHELL = {
    "MASTER_ADDR": "10.0.0.7",
    "MASTER_PORT": "29500",
    "STANDALONE_PORT": "29501",
    "WORLD_SIZE": "2",
    "RANK": "1",
    "LOCAL_RANK": "1",
    "NODE_RANK": "0",
    "GROUP_RANK": "0",
    "LOCAL_WORLD_SIZE": "2",
    "VPR_RESUMED_CHECKPOINT": "/runs/a/last.ckpt",
    "VPR_SWEEP_JOB": '{"overrides": [], "output_dir": "/s/0"}',
    "VPR_ROOT": "/shared",
    "VPR_DATA_DIR": "/shared/data",
    "VPR_LOG_DIR": "/shared/outputs",
    "VPR_PITTSBURGH_ROOT": "/datasets/pitts",
    "VPR_TOKYO247_ROOT": "/datasets/tokyo247",
    "VPR_TOKYOTM_ROOT": "/datasets/tokyotm",
}


def test_scripts_run_without_the_shells_rendezvous_ranks_and_folders(monkeypatch, tmp_path):
    for key, value in SHELL.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("VPR_SOMETHING_ELSE", "kept")
    env = script_env(tmp_path)
    assert sorted(key for key in SHELL if key in env) == []
    assert env["VPR_SOMETHING_ELSE"] == "kept" and env["PATH"]  # the rest of the shell's environment stays
    assert env["WANDB_MODE"] == "offline" and env["WANDB_DIR"] == str(tmp_path)


def test_make_test_runs_the_files_in_parallel_processes():
    """make test and make test-full pass -n and --dist loadfile (a file's module fixtures built once), and the dev
    extra that make setup installs brings pytest-xdist."""
    makefile = (ROOT / "Makefile").read_text()
    (xdist,) = re.findall(r"^XDIST = (.*)$", makefile, flags=re.M)
    assert xdist.split() == ["-n", "$(TEST_WORKERS)", "--dist", "loadfile"]
    for target in ("test", "test-full"):
        (recipe,) = re.findall(rf"^{target}: .*\n\t(.*)$", makefile, flags=re.M)
        assert "$(XDIST) $(ARGS)" in recipe, recipe  # ARGS last: ARGS=-n0 runs them in one process
    if tomllib is not None:
        dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
        assert any(re.match(r"pytest-xdist\b", requirement) for requirement in dev), dev
