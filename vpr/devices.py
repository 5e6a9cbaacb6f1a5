"""Which device a process works on before Lightning places the network (k-means sampling, PCA fitting, the mining
cache's budget): this rank's GPU when CUDA is there and the trainer may use it, else the CPU."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import torch

#: trainer.accelerator values that may put the network on a CUDA GPU.
CUDA_ACCELERATORS = ("gpu", "cuda", "auto")


def local_rank() -> int:
    """This process's index on its node: torchrun's and Lightning's LOCAL_RANK, SLURM's SLURM_LOCALID, else 0."""
    for name in ("LOCAL_RANK", "SLURM_LOCALID"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def work_device(trainer_cfg: Mapping[str, Any] | None = None) -> torch.device:
    """``cuda:<local rank>`` when CUDA is available and ``trainer.accelerator`` allows a GPU, else ``cpu``. Under
    DDP each rank thus uses its own GPU (not every rank GPU 0)."""
    accelerator = str((trainer_cfg or {}).get("accelerator", "auto"))
    if accelerator in CUDA_ACCELERATORS and torch.cuda.is_available():
        return torch.device("cuda", local_rank() % torch.cuda.device_count())
    return torch.device("cpu")


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def loader_workers(requested: int) -> int:
    """DataLoader workers: ``data.num_workers``, at most one per CPU of this process (more only contend, and torch
    warns about each loader)."""
    return max(0, min(int(requested), cpu_count()))


def loader_worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn`` of every loader: the worker ends on a SIGTERM from its own parent (the loader
    shutting it down) and ignores one from anyone else.

    A scheduler's time limit or ``scancel`` signals the whole process group: a worker that died of it first made
    the training process fail with "DataLoader worker ... killed by signal: Terminated" instead of stopping cleanly
    and saving where it was. Ignoring SIGTERM altogether would hang the parent, whose loader (and Python's exit)
    ends workers with SIGTERM and then waits for them. So SIGTERM is blocked in the worker and a thread takes it
    with its sender: the parent's ends the worker at once, as before. Where the platform cannot tell the sender
    (``sigwaitinfo`` is missing, as on macOS), nothing changes."""
    if not hasattr(signal, "sigwaitinfo") or not hasattr(signal, "pthread_sigmask"):
        return
    parent = os.getppid()
    # Blocked in this thread before any other starts: threads inherit the mask, so only the watcher takes it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    threading.Thread(target=_take_sigterm, args=(parent,), name="vpr-sigterm", daemon=True).start()


def _take_sigterm(parent: int) -> None:
    while True:
        info = signal.sigwaitinfo({signal.SIGTERM})
        if info.si_pid == parent:
            os._exit(0)  # at once, as the signal would have ended it (a thread cannot restore its default action)


@contextlib.contextmanager
def float32_matmul_precision(precision: str) -> Iterator[None]:
    """torch's float32 matmul precision set inside (``high``: TF32 on GPUs that have it), the previous one restored
    after, also when the block fails."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def full_float32_matmul() -> contextlib.AbstractContextManager[None]:
    """float32 products without TF32 inside (exact search, k-means, PCA, mining distances: training turns TF32
    on), restored after."""
    return float32_matmul_precision("highest")
