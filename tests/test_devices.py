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


# -- host memory: large allocations reused, not mapped afresh at every step -----------------------------------------
_WHERE_A_LARGE_BUFFER_LIVES = """
import ctypes, sys
import torch
from vpr.devices import reuse_freed_memory

class Mallinfo2(ctypes.Structure):  # glibc's struct mallinfo2 (malloc.h)
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]

info = ctypes.CDLL(None).mallinfo2
info.restype = Mallinfo2
if sys.argv[1] == "reuse":
    assert reuse_freed_memory(environ={})
mapped = info().hblkhd
x = torch.empty(40 << 20, dtype=torch.uint8)  # a 40 MiB activation, as conv1's for 28 images of 120x160 (34 MiB)
x.fill_(1)
mapped_for_it = info().hblkhd - mapped
del x
print(mapped_for_it, info().fordblks)
"""


def _large_buffer(mode: str) -> tuple[int, int]:
    """(bytes mapped apart from the heap for a 40 MiB tensor, bytes free in the heap once it is freed)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    env["PYTHONPATH"] = str(root)
    out = subprocess.run(
        [sys.executable, "-c", _WHERE_A_LARGE_BUFFER_LIVES, mode], env=env, capture_output=True, text=True, check=True
    )
    mapped, free = out.stdout.split()
    return int(mapped), int(free)


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="glibc's allocator settings (Linux)")
def test_large_buffers_come_from_freed_memory_not_fresh_pages():
    size = 40 << 20
    # glibc's default: above its threshold (32 MiB at most) a buffer is mapped on its own and unmapped when freed,
    # so the next one is zero-filled by the kernel, page by page
    mapped, free = _large_buffer("default")
    assert mapped >= size and free < size
    # after reuse_freed_memory: it comes from the heap and stays there, free, for the next one
    mapped, free = _large_buffer("reuse")
    assert mapped == 0 and free >= size


def test_allocator_settings_of_the_environment_are_left_alone():
    from vpr.devices import reuse_freed_memory

    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        assert reuse_freed_memory(environ={name: "1"}) is False


@pytest.mark.parametrize(
    ("module", "function"),
    [
        ("vpr.run.train", "run_training"),
        ("vpr.run.evaluate", "run_evaluation"),
        ("vpr.run.cluster", "run_clustering"),
        ("vpr.run.retrieve", "run_retrieval"),
    ],
)
def test_every_script_reuses_freed_memory_before_its_work(monkeypatch, module, function):
    import importlib

    class Called(Exception):
        pass

    def called() -> bool:
        raise Called

    mod = importlib.import_module(module)
    monkeypatch.setattr(mod, "reuse_freed_memory", called)
    with pytest.raises(Called):
        getattr(mod, function)(None)  # before the config is read
