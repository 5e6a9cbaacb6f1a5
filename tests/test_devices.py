"""The device a process works on before Lightning places the network: its own GPU under DDP, the CPU when the
trainer is told so."""

from __future__ import annotations

import pytest
import torch

from vpr.devices import local_rank, work_device


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for name in ("LOCAL_RANK", "SLURM_LOCALID"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, 0),
        ({"LOCAL_RANK": "1"}, 1),
        ({"SLURM_LOCALID": "3"}, 3),
        ({"LOCAL_RANK": "2", "SLURM_LOCALID": "0"}, 2),
    ],
)
def test_local_rank_from_the_launchers_variables(monkeypatch, env, expected):
    for name in ("LOCAL_RANK", "SLURM_LOCALID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert local_rank() == expected


@pytest.mark.parametrize(
    ("accelerator", "rank", "expected"),
    [
        ("auto", None, "cuda:0"),
        ("gpu", "1", "cuda:1"),
        ("cuda", "1", "cuda:1"),
        ("cpu", "1", "cpu"),
    ],
)
def test_each_rank_works_on_its_own_gpu(two_gpus, monkeypatch, accelerator, rank, expected):
    if rank is not None:
        monkeypatch.setenv("LOCAL_RANK", rank)
    assert work_device({"accelerator": accelerator}) == torch.device(expected)


def test_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert work_device({"accelerator": "gpu"}) == torch.device("cpu")
    assert work_device(None) == torch.device("cpu")


def test_loader_workers_at_most_one_per_cpu(monkeypatch):
    import vpr.devices as devices
    from vpr.data.datamodule import PlaceDataModule

    monkeypatch.setattr(devices, "cpu_count", lambda: 2)
    assert [devices.loader_workers(n) for n in (0, 1, 2, 8)] == [0, 1, 2, 2]
    assert PlaceDataModule(None, "city", num_workers=8).num_workers == 2  # data=pitts30k's 8 on a 2-CPU machine
    monkeypatch.setattr(devices, "cpu_count", lambda: 16)
    assert PlaceDataModule(None, "city", num_workers=8).num_workers == 8


class _WorkerPid(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 10**6

    def __getitem__(self, index: int) -> int:
        import os

        return os.getpid()


def _alive_after(worker, seconds: float) -> bool:
    worker.join(timeout=seconds)
    return worker.is_alive()


@pytest.mark.skipif(not hasattr(__import__("signal"), "sigwaitinfo"), reason="the platform cannot tell a sender")
@pytest.mark.parametrize("start", ["fork", "forkserver"])  # forkserver: a worker's parent is not the loader's owner
def test_loader_workers_ignore_a_strangers_sigterm_and_end_on_their_owners(start):
    """A process-group SIGTERM (a scheduler's time limit) must not kill the workers before the training process
    has stopped and saved; the loader's own SIGTERM (its shutdown, Python's exit) must still end them, or the
    parent waits for them for ever."""
    import os
    import signal
    import subprocess

    from vpr.devices import loader_worker_init

    loader = torch.utils.data.DataLoader(
        _WorkerPid(),
        batch_size=1,
        num_workers=1,
        worker_init_fn=loader_worker_init(),
        persistent_workers=True,
        multiprocessing_context=start,
    )
    it = iter(loader)
    pid = int(next(it)[0])
    (worker,) = it._workers
    assert worker.pid == pid
    if start == "fork":  # a forkserver's worker starts with a thread of its own: it is left as it was
        subprocess.run(["kill", "-TERM", str(pid)], check=True)  # sent by another process
        assert _alive_after(worker, 1.0), "a SIGTERM from a stranger ended the worker"
        assert int(next(it)[0]) == pid  # and it still serves batches
    os.kill(pid, signal.SIGTERM)  # from the loader's owner, as its shutdown sends it
    assert not _alive_after(worker, 5.0), "the owner's SIGTERM did not end the worker"
    it._shutdown_workers()


@pytest.mark.parametrize("overrides, warned", [([], False), (["strategy=ddp"], True), (["trainer.devices=2"], True)])
def test_evaluation_says_it_runs_in_one_process(overrides, warned, caplog, tmp_path):
    """eval.py builds a one-device Trainer: DDP settings on its command line are said to be ignored, not dropped
    silently."""
    import logging

    from tests.conftest import compose_script
    from vpr.build import build_trainer

    cfg = compose_script("eval", "trainer.accelerator=cpu", f"paths.output_dir={tmp_path}", *overrides)
    with caplog.at_level(logging.WARNING, logger="vpr.build"):
        trainer = build_trainer(cfg, training=False)
    assert trainer.world_size == 1
    assert ("evaluation runs in one process on one device" in caplog.text) is warned
