"""The suite runs in parallel processes (``make test``: pytest-xdist): the scripts a test starts do not take the
caller's distributed rendezvous, ranks or data and output folders from its shell, which would put tests running at
once on one port or in one folder."""

from __future__ import annotations

from tests.conftest import script_env

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
