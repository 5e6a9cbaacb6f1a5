"""PCA (whitening) of global descriptors, e.g. 32768-d NetVLAD -> 4096-d, followed by L2 normalisation.

Fit on training database descriptors (docs/method.md section 2), then ``transform`` database and query descriptors
alike. With whitening, every kept component is divided by the square root of its variance, so the fitted data
have identity covariance in the reduced space (before the final L2).

When N < D (the usual case: 10k descriptors of 32768-d) the eigen-decomposition works on the N x N Gram matrix
instead of the D x D covariance.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vpr.devices import full_float32_matmul
from vpr.errors import ConfigError
from vpr.io import atomic_path

log = logging.getLogger(__name__)

# Above this many bytes for the float64 copy of the training matrix, fit in float32 to halve the memory.
_FLOAT64_LIMIT_BYTES = 1 << 30


class PCAWhitening:
    """PCA projection to ``dim`` components with optional whitening and final L2.

    Args:
        whiten: divide each component by sqrt(variance + eps) (True: PCA-whitening; False: plain PCA).
        eps: regulariser of the variances (guards near-zero components).

    Attributes after :meth:`fit`: ``mean`` (D,), ``components`` (dim, D) orthonormal rows,
    ``explained_variance`` (dim,) descending, per-component variances of the training data (ddof = 1).
    """

    def __init__(self, whiten: bool = True, eps: float = 1e-9) -> None:
        self.whiten = whiten
        self.eps = eps
        self.mean: np.ndarray | None = None
        self.components: np.ndarray | None = None
        self.explained_variance: np.ndarray | None = None
        self._on_device: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def dim(self) -> int:
        self._require_fitted()
        return int(self.components.shape[0])

    @property
    def input_dim(self) -> int:
        self._require_fitted()
        return int(self.components.shape[1])

    def fit(self, x: np.ndarray | torch.Tensor, dim: int) -> PCAWhitening:
        """x: (N, D) training descriptors; dim: kept components, 1 <= dim <= min(N - 1, D).

        Computed in torch where ``x`` lies (a CUDA tensor: on the GPU, for eval.py on a GPU machine; numpy: on the
        CPU, without a copy): the Gram (N < D) or covariance matrix and its eigen-decomposition in float64, the
        products in float32 when a float64 copy of ``x`` would exceed the limit, TF32 off."""
        x = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
        if x.ndim != 2:
            raise ValueError(f"PCA fit expects (N, D) descriptors, got shape {tuple(x.shape)}.")
        n, d = x.shape
        if not 1 <= dim <= min(n - 1, d):
            raise ValueError(
                f"PCA dim={dim} is impossible with {n} training descriptors of dimension {d}: it must be between "
                f"1 and min(N - 1, D) = {min(n - 1, d)}. Use more training descriptors or a smaller dim."
            )
        dtype = torch.float64 if n * d * 8 <= _FLOAT64_LIMIT_BYTES else torch.float32
        with full_float32_matmul():
            mean = x.sum(dim=0, dtype=torch.float64) / n
            centred = x.to(dtype) - mean.to(dtype)
            if n < d:
                # X = U S V^T: the eigenvectors of X X^T (N x N) are U, and V = X^T U / S.
                eigenvalues, u = torch.linalg.eigh((centred @ centred.T).double())
                order = torch.argsort(eigenvalues, descending=True)[:dim]
                singular = eigenvalues[order].clamp_min(0.0).sqrt()
                components = (centred.T @ u[:, order].to(dtype)).double().T
                components /= singular.clamp_min(torch.finfo(torch.float64).tiny)[:, None]
                squared_singular = singular**2
            else:
                eigenvalues, v = torch.linalg.eigh((centred.T @ centred).double())
                order = torch.argsort(eigenvalues, descending=True)[:dim]
                components = v[:, order].T
                squared_singular = eigenvalues[order].clamp_min(0.0)
        self._on_device = {}
        self.mean = mean.cpu().numpy()
        self.components = components.cpu().numpy()
        self.explained_variance = squared_singular.cpu().numpy() / (n - 1)
        return self

    def _projection(self) -> np.ndarray:
        """(D, dim) matrix applied to centred descriptors."""
        projection = self.components.T
        if self.whiten:
            projection = projection / np.sqrt(self.explained_variance + self.eps)[None, :]
        return projection

    def transform(self, x: np.ndarray | torch.Tensor, normalize: bool = True) -> np.ndarray | torch.Tensor:
        """x: (N, D) -> (N, dim), L2-normalised rows unless ``normalize=False``; numpy in, numpy out (float32),
        torch in, torch out (same device and dtype). Computed in float32 (TF32 off) where ``x`` lies: on the GPU
        for descriptors encoded there, with no float64 copy of the matrix."""
        self._require_fitted()
        if x.shape[-1] != self.input_dim:
            raise ValueError(f"PCA was fitted on {self.input_dim}-d descriptors, got shape {tuple(x.shape)}.")
        if not isinstance(x, torch.Tensor):
            return self.transform(torch.from_numpy(np.asarray(x, dtype=np.float32)), normalize).numpy()
        mean, projection = self._float32_state(x.device)
        with full_float32_matmul():
            out = (x.float() - mean) @ projection
        if normalize:
            out = torch.nn.functional.normalize(out, p=2, dim=-1)
        return out.to(x.dtype)

    def _float32_state(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and the (D, dim) projection in float32 on ``device``, made once per device."""
        key = str(device)
        if self._on_device.get(key) is None:
            self._on_device[key] = (
                torch.as_tensor(self.mean, dtype=torch.float32, device=device),
                torch.as_tensor(self._projection(), dtype=torch.float32, device=device),
            )
        return self._on_device[key]

    def state_dict(self) -> dict[str, np.ndarray]:
        self._require_fitted()
        return {
            "mean": self.mean,
            "components": self.components,
            "explained_variance": self.explained_variance,
            "whiten": np.array(self.whiten),
            "eps": np.array(self.eps),
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        missing = {"mean", "components", "explained_variance", "whiten", "eps"} - set(state)
        if missing:
            raise KeyError(f"PCA state is missing {sorted(missing)}.")
        self._on_device = {}
        self.mean = np.asarray(state["mean"], dtype=np.float64)
        self.components = np.asarray(state["components"], dtype=np.float64)
        self.explained_variance = np.asarray(state["explained_variance"], dtype=np.float64)
        self.whiten = bool(state["whiten"])
        self.eps = float(state["eps"])

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted state to an ``.npz`` file (atomically: a crash never leaves half a file)."""
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, **self.state_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> PCAWhitening:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"PCA file {path} does not exist; fit PCA first (PCAWhitening.fit + save).")
        try:
            data = np.load(path)
        except (EOFError, zipfile.BadZipFile) as err:  # empty, or an .npz cut short (an interrupted copy)
            raise ValueError(f"PCA file {path} is truncated or not an .npz file ({type(err).__name__}: {err})") from err
        if not isinstance(data, np.lib.npyio.NpzFile):  # a single array (.npy): not a saved PCA
            raise ValueError(f"PCA file {path} holds one array, not the .npz of a saved PCA")
        with data:
            pca = cls()
            try:
                pca.load_state_dict(dict(data))
            except KeyError as err:
                raise ValueError(f"PCA file {path} is incomplete: {err}") from err
            except (EOFError, zipfile.BadZipFile) as err:  # an entry of the archive cut short
                raise ValueError(f"PCA file {path} is truncated ({type(err).__name__}: {err})") from err
        return pca

    def _require_fitted(self) -> None:
        if self.components is None:
            raise RuntimeError("PCAWhitening is not fitted: call fit(descriptors, dim) or load(path) first.")


def load_pca_file(path: Any, input_dim: int, setting: str = "pca_file") -> PCAWhitening:
    """A saved PCA-whitening, checked against the descriptor size it will be applied to."""
    try:
        pca = PCAWhitening.load(str(path))
    except FileNotFoundError:
        raise ConfigError(f"{setting}={path}: no such file; fit one with eval.py pca_dim=N pca_file={path}") from None
    except (ValueError, OSError, KeyError) as e:
        raise ConfigError(f"{setting}={path}: not a PCA file saved by this project ({e})") from None
    if pca.input_dim != input_dim:
        raise ConfigError(
            f"{setting}={path}: fitted on {pca.input_dim}-d descriptors, this network gives {input_dim}-d"
        )
    return pca


def check_pca_file_free(dim: int | None, path: Any) -> None:
    """A fit (``pca_dim``) is never saved over an existing ``pca_file``: refused, before any work."""
    if dim and path and Path(str(path)).exists():
        raise ConfigError(
            f"pca_file={path} exists: give only pca_file={path} to use it, or another path to save a new fit"
        )


def check_pca_dim(dim: int, num_fit_images: int, input_dim: int, fit_images: str) -> None:
    """A PCA of ``dim`` dimensions needs more fitting images and descriptor dimensions than that."""
    if dim >= min(num_fit_images, input_dim):
        raise ConfigError(
            f"pca_dim={dim} must be below the number of {fit_images} ({num_fit_images}) and the descriptor size "
            f"({input_dim})"
        )


def load_or_fit_pca(
    dim: int | None,
    path: Any,
    input_dim: int,
    fit_images: str,
    num_fit_images: int,
    descriptors: Callable[[], np.ndarray | torch.Tensor],
    save_to: Any = None,
) -> tuple[PCAWhitening | None, dict[str, Any]]:
    """The PCA-whitening the settings ask for, and what results record of it (eval.py and retrieve.py alike).

    ``pca_file`` alone (``path``) is read; ``pca_dim`` (``dim``) fits one on ``descriptors()`` (called only then: the
    ``num_fit_images`` ``fit_images``) and saves it to ``path``, which must not exist yet, else to ``save_to``.
    Neither: no PCA (None, {})."""
    if not dim and not path:
        return None, {}
    if not dim:
        pca = load_pca_file(path, input_dim)
        log.info("PCA-whitening %d -> %d read from %s", pca.input_dim, pca.dim, path)
        return pca, {"pca_dim": pca.dim, "pca_file": str(path)}
    dim = int(dim)
    check_pca_file_free(dim, path)
    check_pca_dim(dim, num_fit_images, input_dim, fit_images)
    pca = PCAWhitening(whiten=True).fit(descriptors(), dim)  # on the device the descriptors are on
    log.info("PCA-whitening %d -> %d fitted on the %d %s", pca.input_dim, dim, num_fit_images, fit_images)
    target = path or save_to
    if target:
        pca.save(str(target))
        log.info("PCA saved to %s (reuse it with pca_file=%s)", target, target)
    return pca, {"pca_dim": dim, **({"pca_file": str(target)} if target else {})}
