"""Exact k-nearest-neighbour search of query descriptors in a database (faiss ``IndexFlatL2``, or torch).

Evaluation (docs/method.md section 1) uses exact L2 search; a GPU index is used when faiss was built with GPU
support and a GPU is visible. faiss is an optional dependency of the package (the ``[cpu]`` or ``[gpu]`` extra,
or conda's faiss-gpu): it is imported when first needed, and a GPU build that cannot use its GPU falls back to
the CPU index with one warning. Without faiss the same exact search runs in torch (on the GPU when there is one),
with one warning: the same neighbours, up to the order of exact ties.
"""

from __future__ import annotations

import warnings
from types import ModuleType

import numpy as np
import torch

from vpr.devices import full_float32_matmul
from vpr.errors import ConfigError


def import_faiss() -> ModuleType:
    """The faiss module, or a clear error saying how to install it."""
    try:
        import faiss
    except ImportError as e:
        raise ConfigError(
            f"faiss cannot be imported ({e}): install it with pip install -e '.[cpu]' (CPU), pip install -e '.[gpu]' "
            "(faiss-gpu-cu12, CUDA 12) or conda install -c pytorch faiss-gpu"
        ) from None
    return faiss


def faiss_or_none() -> ModuleType | None:
    """The faiss module, or None when it is not installed or cannot load (the torch search is used instead)."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def faiss_missing() -> str:
    """Why faiss is not used, for the warning: not installed, or installed but unable to load (a faiss-gpu built
    for another CUDA than the one present: its library error)."""
    try:
        import faiss  # noqa: F401
    except ModuleNotFoundError as e:
        if e.name == "faiss":
            return "faiss is not installed (pip install -e '.[cpu]' for faiss)"
        return f"faiss is installed but cannot load ({e})"
    except ImportError as e:
        return f"faiss is installed but cannot load ({e}; a faiss-gpu built for another CUDA than torch's?)"
    return "faiss is available"


def faiss_has_gpu() -> bool:
    """True when faiss is installed, has GPU support and sees at least one GPU."""
    faiss = faiss_or_none()
    if faiss is None:
        return False
    try:
        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # a GPU build whose CUDA runtime does not load
        return False


def _as_float32_matrix(x: np.ndarray, name: str) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x), dtype=np.float32)  # faiss takes C-contiguous float32 only
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows x D), got shape {x.shape}.")
    return x


def knn_search(
    db: np.ndarray,
    queries: np.ndarray,
    k: int,
    use_gpu: bool | str = "auto",
    squared: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact L2 k-NN of every query among the database descriptors.

    Args:
        db: (Nd, D) database descriptors.
        queries: (Nq, D) query descriptors.
        k: neighbours per query; clipped to Nd.
        use_gpu: ``"auto"`` (GPU when available), True (require a GPU faiss, or a GPU for the torch search) or
            False.
        squared: return squared L2 distances (faiss's native output) or, if False, plain L2 distances.

    Returns:
        distances (Nq, k') float32, ascending per row, and indices (Nq, k') int64 into ``db``, k' = min(k, Nd).
    """
    db = _as_float32_matrix(db, "db")
    queries = _as_float32_matrix(queries, "queries")
    if db.shape[0] == 0:
        raise ValueError("knn_search: the database is empty (0 descriptors).")
    if queries.shape[1] != db.shape[1]:
        raise ValueError(f"knn_search: queries have D={queries.shape[1]} but the database has D={db.shape[1]}.")
    if k < 1:
        raise ValueError(f"knn_search: k must be >= 1, got {k}.")
    k = min(int(k), db.shape[0])

    if use_gpu not in (True, False, "auto"):
        raise ValueError(f"knn_search: use_gpu must be True, False or 'auto', got {use_gpu!r}.")
    if faiss_or_none() is None:
        if use_gpu is True and not torch.cuda.is_available():
            raise RuntimeError("knn_search: use_gpu=True but no GPU is visible (and faiss is not installed).")
        warnings.warn(
            f"{faiss_missing()}: exact search in torch instead",
            RuntimeWarning,
            stacklevel=2,
        )
        device = torch.device("cuda" if use_gpu is not False and torch.cuda.is_available() else "cpu")
        distances, indices = torch_knn_search(db, queries, k, device)
        return (distances if squared else np.sqrt(np.maximum(distances, 0.0))), indices
    if use_gpu == "auto":
        use_gpu = faiss_has_gpu()
    elif use_gpu and not faiss_has_gpu():
        raise RuntimeError(
            "knn_search: use_gpu=True but this faiss has no GPU support or sees no GPU (faiss-cpu installed?). "
            "Install faiss-gpu or set use_gpu to 'auto'/False."
        )

    faiss = import_faiss()
    result = None
    if use_gpu:
        # This process's GPU (its own under DDP, where every rank ranks the gathered split), not always GPU 0.
        device = torch.cuda.current_device() if torch.cuda.is_available() else 0
        try:
            index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), device, faiss.IndexFlatL2(db.shape[1]))
            index.add(db)
            result = index.search(queries, k)
        except Exception as e:  # e.g. out of GPU memory, or a CUDA runtime that does not match faiss-gpu's
            warnings.warn(f"faiss GPU search failed ({e}); searching on the CPU instead", RuntimeWarning, stacklevel=2)
        index = None  # the GPU index's memory goes back before any CPU search
    if result is None:
        index = faiss.IndexFlatL2(db.shape[1])
        index.add(db)
        result = index.search(queries, k)
    distances, indices = result
    if not squared:
        # Rounding can make faiss's ||q||^2 - 2 q.x + ||x||^2 slightly negative for identical vectors.
        distances = np.sqrt(np.maximum(distances, 0.0))
    return distances, indices.astype(np.int64, copy=False)


def torch_knn_search(
    db: np.ndarray, queries: np.ndarray, k: int, device: torch.device, chunk_elements: int = 2**26
) -> tuple[np.ndarray, np.ndarray]:
    """Exact squared-L2 k-NN in torch, as IndexFlatL2 computes it (||q||^2 - 2 q.x + ||x||^2 in float32), the
    queries in chunks of at most ``chunk_elements`` distances (256 MB). db: (Nd, D), queries: (Nq, D) float32;
    1 <= k <= Nd. Returns numpy (Nq, k) distances ascending and int64 indices."""
    with full_float32_matmul():
        x = torch.from_numpy(db).to(device)
        x_sq = x.square().sum(1)
        step = max(1, chunk_elements // len(db))
        dist, idx = [], []
        for start in range(0, len(queries), step):
            q = torch.from_numpy(queries[start : start + step]).to(device)
            d = (q.square().sum(1, keepdim=True) - 2.0 * (q @ x.T) + x_sq).clamp_min_(0.0)
            values, order = torch.topk(d, k, dim=1, largest=False, sorted=True)
            dist.append(values.cpu())
            idx.append(order.cpu())
    if not dist:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return torch.cat(dist).numpy(), torch.cat(idx).numpy().astype(np.int64, copy=False)
