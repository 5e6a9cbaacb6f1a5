"""Which device a process works on before Lightning places the network (k-means sampling, PCA fitting, the mining
cache's budget): this rank's GPU when CUDA is there and the trainer may use it, else the CPU."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
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


#: Host allocations up to this size are reused from the heap instead of being mapped and unmapped each time
#: (``reuse_freed_memory``); twice that of free memory is kept at the heap's top before it is given back.
REUSED_ALLOCATION_BYTES = 128 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def reuse_freed_memory(environ: Mapping[str, str] | None = None) -> bool:
    """On Linux with glibc: serve host allocations up to ``REUSED_ALLOCATION_BYTES`` (128 MiB) from memory freed
    before, instead of mapping fresh pages each time. glibc maps every allocation above its threshold (at most
    32 MiB) from the kernel and returns it on free, so each of a CPU step's large activations (conv1's output for
    28 images of 120x160 is 34 MiB, for an encoding batch of 32 39 MiB) was zero-filled by the kernel, page by
    page, at every step. The numbers are the same; only where the memory comes from changes. The process keeps up
    to 256 MiB of freed memory for reuse. Nothing is changed where the platform is another, or where the
    environment already tunes it (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``).
    Returns whether it changed the settings."""
    import ctypes
    import platform

    environ = os.environ if environ is None else environ
    if any(name in environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(
        mallopt(_M_MMAP_THRESHOLD, REUSED_ALLOCATION_BYTES) and mallopt(_M_TRIM_THRESHOLD, 2 * REUSED_ALLOCATION_BYTES)
    )


def loader_workers(requested: int) -> int:
    """DataLoader workers: ``data.num_workers``, at most one per CPU of this process (more only contend, and torch
    warns about each loader)."""
    return max(0, min(int(requested), cpu_count()))


def loader_worker_init() -> Callable[[int], None]:
    """A DataLoader ``worker_init_fn``, made in the process that creates the loader: its workers end on a SIGTERM
    from that process (the loader shutting them down) and ignore one from anyone else.

    A scheduler's time limit or ``scancel`` signals the whole process group: a worker that died of it would make
    the training process fail with "DataLoader worker ... killed by signal: Terminated" instead of stopping cleanly
    and saving where it was. Ignoring SIGTERM altogether would hang the process that owns the loader, whose shutdown
    (and Python's exit) ends workers with SIGTERM and then waits for them. So SIGTERM is blocked in the worker and a
    thread takes it with its sender: the owner's ends the worker at once, as the default action would. The owner is
    named here, not read in the worker, because under the forkserver and spawn start methods a worker's parent is
    another process. Where this cannot be done reliably, nothing changes: a platform that cannot tell the sender
    (``sigwaitinfo`` is missing, as on macOS), or a worker that already runs other threads when it starts (Linux's
    forkserver start method, Python 3.14's default), whose threads would still take the signal. Loaders start
    workers by fork on Linux up to Python 3.13."""
    return functools.partial(_init_worker, os.getpid())


def _init_worker(owner: int, worker_id: int) -> None:
    if not hasattr(signal, "sigwaitinfo") or not hasattr(signal, "pthread_sigmask"):
        return
    try:  # a mask covers only the thread that sets it (and those it starts): one thread, or nothing to do
        alone = len(os.listdir("/proc/self/task")) == 1
    except OSError:
        alone = False
    if not alone:  # e.g. a forkserver's worker, with a thread of its own already: left as it was
        return
    # Blocked in this thread before any other starts: threads inherit the mask, so only the watcher takes it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    senders = {owner, os.getppid()}
    threading.Thread(target=_take_sigterm, args=(senders,), name="vpr-sigterm", daemon=True).start()


def _take_sigterm(senders: set[int]) -> None:
    while True:
        info = signal.sigwaitinfo({signal.SIGTERM})
        if info.si_pid in senders:
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
