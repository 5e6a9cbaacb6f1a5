"""Tests for vpr/eval/pca.py: whitening gives identity covariance on the training data, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vpr.eval.pca import PCAWhitening


def _correlated(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) * np.linspace(3.0, 0.1, d)[None, :]  # very unequal variances
    return (rng.normal(size=(n, d)) @ mixing.T + rng.normal(size=d) * 5).astype(np.float32)


# numpy is fitted with numpy, a torch tensor where it lies (eval.py on a GPU): both must hold what PCA means
FIT_INPUTS = {"numpy": lambda x: x, "torch": torch.from_numpy}


@pytest.mark.parametrize("given", sorted(FIT_INPUTS))
@pytest.mark.parametrize(("n", "d", "dim"), [(200, 12, 6), (30, 80, 10)])  # N > D and N < D (Gram) branches
def test_whitening_gives_identity_covariance(n, d, dim, given):
    x = _correlated(n, d)
    pca = PCAWhitening().fit(FIT_INPUTS[given](x), dim)
    y = pca.transform(x, normalize=False).astype(np.float64)
    np.testing.assert_allclose(y.mean(axis=0), np.zeros(dim), atol=1e-4)
    np.testing.assert_allclose(np.cov(y, rowvar=False), np.eye(dim), atol=1e-3)
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(dim), atol=1e-8)


@pytest.mark.parametrize("given", sorted(FIT_INPUTS))
@pytest.mark.parametrize(("n", "d"), [(200, 12), (30, 80)])
def test_variances_and_subspace_match_numpy(n, d, given):
    x = _correlated(n, d, seed=1).astype(np.float64)
    pca = PCAWhitening(whiten=False).fit(FIT_INPUTS[given](x), 5)
    covariance = np.cov(x, rowvar=False)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    np.testing.assert_allclose(pca.explained_variance, eigenvalues[::-1][:5], rtol=1e-6)
    # the same directions up to sign
    np.testing.assert_allclose(np.abs(pca.components @ eigenvectors[:, ::-1][:, :5]), np.eye(5), atol=1e-6)


def test_transform_l2_normalises_and_accepts_torch():
    x = _correlated(100, 10)
    pca = PCAWhitening().fit(x, 4)
    y = pca.transform(x)
    assert y.shape == (100, 4) and y.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-6)
    y_torch = pca.transform(torch.from_numpy(x))
    assert isinstance(y_torch, torch.Tensor) and y_torch.dtype == torch.float32
    np.testing.assert_allclose(y_torch.numpy(), y, atol=1e-5)


def test_save_load_roundtrip(tmp_path):
    x = _correlated(100, 10)
    pca = PCAWhitening(eps=1e-7).fit(x, 4)
    path = tmp_path / "pca_4.npz"
    pca.save(path)
    loaded = PCAWhitening.load(path)
    assert loaded.eps == 1e-7 and loaded.whiten and loaded.dim == 4 and loaded.input_dim == 10
    np.testing.assert_array_equal(loaded.transform(x), pca.transform(x))
    state = pca.state_dict()
    fresh = PCAWhitening()
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(fresh.transform(x), pca.transform(x))


def test_errors(tmp_path):
    x = _correlated(10, 50)
    with pytest.raises(ValueError, match="min\\(N - 1, D\\) = 9"):
        PCAWhitening().fit(x, 10)
    with pytest.raises(RuntimeError, match="not fitted"):
        PCAWhitening().transform(x)
    pca = PCAWhitening().fit(x, 3)
    with pytest.raises(ValueError, match="50-d"):
        pca.transform(x[:, :20])
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        PCAWhitening.load(tmp_path / "missing.npz")


@pytest.mark.parametrize("kept", [0.0, 0.2, 0.5, 0.9])
def test_a_truncated_pca_file_is_a_config_error(tmp_path, kept):
    """pca_file cut short (an interrupted copy) is refused with one message naming the setting, not a traceback."""
    from vpr.errors import ConfigError
    from vpr.eval.pca import load_pca_file

    whole = tmp_path / "pca.npz"
    PCAWhitening().fit(_correlated(40, 10), 3).save(whole)
    data = whole.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: int(len(data) * kept)])
    assert load_pca_file(whole, 10).dim == 3
    with pytest.raises(ConfigError, match=r"^pca_file=.*cut\.npz: .*truncated"):
        load_pca_file(cut, 10)


def test_a_single_array_is_not_a_pca_file(tmp_path):
    from vpr.errors import ConfigError
    from vpr.eval.pca import load_pca_file

    np.save(tmp_path / "one.npy", np.zeros((3, 10)))
    with pytest.raises(ConfigError, match=r"^pca_file=.*one\.npy: .*one array"):
        load_pca_file(tmp_path / "one.npy", 10)


@pytest.mark.parametrize("given", sorted(FIT_INPUTS))
def test_float32_products_above_the_memory_limit(monkeypatch, given):
    """Large training sets are multiplied in float32 (no float64 copy); the result stays PCA within float32."""
    import vpr.eval.pca as pca_module

    x = _correlated(40, 60, seed=2)
    exact = PCAWhitening(whiten=False).fit(x.astype(np.float64), 5)
    monkeypatch.setattr(pca_module, "_FLOAT64_LIMIT_BYTES", 0)
    approx = PCAWhitening(whiten=False).fit(FIT_INPUTS[given](x), 5)
    np.testing.assert_allclose(approx.explained_variance, exact.explained_variance, rtol=1e-4)
    np.testing.assert_allclose(np.abs(approx.components @ exact.components.T), np.eye(5), atol=1e-4)
