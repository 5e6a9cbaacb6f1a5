"""Atomic file writes: write to a temporary file in the target folder, then rename it into place.

Readers never see half a file, and an interrupted run leaves the previous version intact. Also the one reader of
torch files users bring (checkpoints, released weights): weights only, never code; and the lock that keeps two
processes from writing one folder at once.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vpr.errors import ConfigError


@contextmanager
def exclusive_lock(path: str | os.PathLike, busy: Callable[[], None]) -> Iterator[None]:
    """Hold an exclusive lock (POSIX ``flock``) on ``path`` (created) for the block; it ends with the process, also
    a killed one. When another process holds it, ``busy()`` runs first: it raises to refuse, or returns to wait
    for the lock. Where the platform has no ``flock`` (Windows) there is no lock."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            busy()
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def path_under(path: str | os.PathLike, root: str | os.PathLike) -> Path | None:
    """``path`` relative to ``root`` (None: not under it). Both are made absolute without following links first, so a
    file linked into ``root`` keeps its path there; resolved only when that is not enough (``root`` reached through
    a link, the file named by its real path)."""
    path, root = Path(os.path.abspath(Path(path).expanduser())), Path(os.path.abspath(Path(root).expanduser()))
    for p, r in ((path, root), (path.resolve(), root.resolve())):
        try:
            return p.relative_to(r)
        except ValueError:
            pass
    return None


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed.

    ``suffix`` matters to writers that choose the format from the file name (``.npy``, ``.png``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
    try:
        yield Path(tmp)
        _sync(tmp)  # the contents on disk before the name points at them: a crash leaves old or new, whole
        os.replace(tmp, path)
        _sync(path.parent)  # and the rename itself
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


#: Where a run folder keeps what an earlier run of that folder left (its results, its checkpoints under
#: ``<time>/checkpoints/``): hidden, so the sweep table never reads it as a run and ``ckpt_path=last`` never resumes it.
EARLIER_RUNS_DIR = ".earlier"

#: The name :func:`atomic_path` gives its temporary file: ``.<target's name>.<mkstemp's 8 characters><suffix>``.
_PARTIAL_WRITE = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}(?P<suffix>\.[^.]+)")


def remove_partial_writes(folder: str | os.PathLike, target_suffix: str, suffix: str = ".tmp") -> list[Path]:
    """Delete the temporary files that writes of :func:`atomic_path` (with ``suffix``) to targets named ``*<target_
    suffix>`` left in ``folder`` when a kill (SIGKILL, a scheduler's grace period running out during a save) stopped
    them: nothing reads them and each is as large as its target. Only for a folder no other process writes in (its
    lock held): another writer's file in progress looks the same. Returns the files removed."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:  # no folder yet
        return removed
    for f in entries:
        found = _PARTIAL_WRITE.fullmatch(f.name)
        if found and found["suffix"] == suffix and found["target"].endswith(target_suffix) and f.is_file():
            try:
                f.unlink()
            except OSError:
                continue
            removed.append(f)
    return removed


def _sync(path: str | os.PathLike) -> None:
    """fsync a file or folder; where the platform cannot (a folder on Windows, some network filesystems), skip."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask. Read from /proc on Linux: setting and restoring it (the only portable way) would give
    files that another thread creates meanwhile no umask at all."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """``data`` as indented JSON at ``path``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def _numpy_scalar_globals() -> list[Any]:
    """numpy scalars and dtypes: the public NetVLAD codes save their recalls and best score as numpy float64.
    Rebuilding them runs no code of the file's choosing. Files saved under numpy < 2 (the released ones) name the
    scalar's module ``numpy.core.multiarray``, numpy 2 ``numpy._core.multiarray``: both names are allowed."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType") and n[0].isupper()]
    scalar = core.multiarray.scalar
    names = [(scalar, f"{module}.multiarray.scalar") for module in ("numpy.core", "numpy._core")]
    return [*names, np.dtype, *dtypes]


def _archive(path: str | Path) -> str | None:
    """What kind of archive ``path`` is when it packs files rather than being a torch file (the released weights
    come as ``.tar.gz`` archives of ``.pth`` / ``.pth.tar`` files): "gzip", "tar", "zip" or None. torch's own files
    are zip archives holding a ``data.pkl`` (or, before torch 1.6, a pickle stream); a tar of torch's oldest
    format holds a ``pickle`` member."""
    import tarfile
    import zipfile

    try:
        with open(path, "rb") as f:
            if f.read(2) == b"\x1f\x8b":
                return "gzip"
        if tarfile.is_tarfile(path):  # before zip: a tar holding a torch file ends in that file's zip directory
            with tarfile.open(path) as t:
                names = t.getnames()
            # no member: a file of zero bytes (a download cut short after reserving its size) reads as an empty tar
            return None if not names or "pickle" in names else "tar"
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                return None if any(n == "data.pkl" or n.endswith("/data.pkl") for n in z.namelist()) else "zip"
    except (OSError, tarfile.TarError, zipfile.BadZipFile):
        return None
    return None


def read_weights_only(path: str | Path, where: str, what: str = "checkpoint", advice: str = "") -> Any:
    """``torch.load(path, weights_only=True)`` with numpy scalars allowed; whatever goes wrong is one ConfigError
    that starts with ``where`` (the setting and file). A file holding Python objects other than tensors, numbers and
    containers is refused before any of it runs (``advice`` ends that message)."""
    import torch

    archive = _archive(path)
    if archive is not None:
        unpack = {"gzip": "tar xzf, or gunzip for a lone .gz", "tar": "tar xf", "zip": "unzip"}[archive]
        raise ConfigError(
            f"{where} is a {archive} archive, not a {what}: unpack it ({unpack}) and give the file inside (the "
            "released weights are .pth or .pth.tar files in their archives)"
        )
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()), warnings.catch_warnings():
            # torch's note on a raw pickle ("Detected pickle protocol ...") precedes this function's own message
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found is None:  # not a pickle at all (text, another format): torch's weights-only reader stopped at once
            raise ConfigError(f"{where} is not a readable {what}: not a file saved by torch") from None
        raise ConfigError(
            f"{where} holds Python objects other than tensors and numbers (it refers to {found.group(1)}): refusing "
            f"to load it, since unpickling such a file can run code.{advice}"
        ) from None
    except Exception as e:  # truncated, empty, not a torch file
        reason = (str(e).strip().splitlines() or [""])[0]
        reason = reason if len(reason) <= 120 else reason[:117] + "..."
        raise ConfigError(
            f"{where} is not a readable {what}: truncated (an interrupted copy or download?) or not "
            f"saved by torch ({type(e).__name__}{': ' + reason if reason else ''})"
        ) from None
