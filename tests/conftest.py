"""Shared fixtures: the tiny synthetic city (generated once per session), a script's composed config and the
script runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A data folder holding the tiny city exactly where data=synthetic data.prepare.preset=tiny expects it."""
    from vpr.data.synthetic import generate_city

    d = tmp_path_factory.mktemp("data")
    generate_city(d / "city_tiny_seed0", "tiny", seed=0, progress=False)
    return d


@pytest.fixture(scope="session")
def tiny_city(data_dir) -> Path:
    return data_dir / "city_tiny_seed0"


@pytest.fixture
def no_faiss(monkeypatch):
    """As if faiss were not installed: ``import faiss`` raises ImportError in this test."""
    import builtins

    real_import = builtins.__import__

    def importer(name, *args, **kwargs):
        if name == "faiss":
            raise ModuleNotFoundError("No module named 'faiss'", name="faiss")  # what Python raises
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", importer)


def compose_script(config_name: str, *overrides: str, hydra: bool = False) -> DictConfig:
    """A script's config (``train``, ``eval``, ``cluster``) composed from the project's configs with command-line
    style ``overrides``, unresolved; ``hydra``: with Hydra's own ``hydra.*`` settings. Inside a Hydra app its
    search path is used, as vpr.api.compose_config does."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from vpr.api import CONFIG_DIR

    if GlobalHydra.instance().is_initialized():
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra)
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra)


# Variables of the caller's shell that would make a script's run depend on it rather than on its command line: the
# rendezvous of a distributed launch (a MASTER_PORT set there would put every DDP test on one port, and two tests
# running at once, under pytest -n, on each other's), the ranks, the project's own notes to the processes Lightning
# starts, and the folders the configs read from the environment (runs would share one outputs/ or data/ folder).
SCRIPT_ENV_DROPPED = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "STANDALONE_PORT",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "NODE_RANK",
    "GROUP_RANK",
    "LOCAL_WORLD_SIZE",
    "VPR_RESUMED_CHECKPOINT",
    "VPR_SWEEP_JOB",
    "VPR_ROOT",
    "VPR_DATA_DIR",
    "VPR_LOG_DIR",
    "VPR_PITTSBURGH_ROOT",
    "VPR_TOKYO247_ROOT",
    "VPR_TOKYOTM_ROOT",
)


def script_env(tmp: Path) -> dict[str, str]:
    """The environment of a script run by a test: the caller's, without :data:`SCRIPT_ENV_DROPPED`, W&B offline
    with its files under ``tmp``."""
    env = {key: value for key, value in os.environ.items() if key not in SCRIPT_ENV_DROPPED}
    env.update(
        {
            "WANDB_MODE": "offline",
            "WANDB_SILENT": "true",
            "WANDB_DIR": str(tmp),
            "HYDRA_FULL_ERROR": "0",
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "2",
        }
    )
    return env


def run_script(
    script: str, *overrides: str, tmp: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run train.py / eval.py / cluster.py in a subprocess, as a user would (``env``: variables set on top)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / script), *overrides],
        cwd=tmp,
        env={**script_env(tmp), **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


HIDING_RUNNER = """
import importlib.abc, runpy, sys
hidden = sys.argv[1]
class Hide(importlib.abc.MetaPathFinder):  # as if the package were not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == hidden:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Hide())
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def the_error_line(proc: subprocess.CompletedProcess, status: int = 2) -> str:
    """The one ``error:`` line a script that refused its input ended with; asserts that there is exactly one, no
    traceback, and the exit status ``status``."""
    out = proc.stdout + proc.stderr
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert proc.returncode == status and len(errors) == 1 and "Traceback" not in out, out[-3000:]
    return errors[0]


def run_script_hiding(
    package: str, script: str, *overrides: str, tmp: Path, check: bool = True
) -> subprocess.CompletedProcess:
    """run_script with ``package`` (a top-level name: faiss, hydra_plugins) impossible to import."""
    proc = subprocess.run(
        [sys.executable, "-c", HIDING_RUNNER, package, str(ROOT / script), *overrides],
        cwd=tmp,
        env=script_env(tmp),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc
