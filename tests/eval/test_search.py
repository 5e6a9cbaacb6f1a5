"""Tests for vpr/eval/search.py against numpy brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vpr.eval.search import faiss_has_gpu, knn_search, torch_knn_search


def _data(seed: int = 0, num_db: int = 60, num_q: int = 15, dim: int = 16):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(num_db, dim)).astype(np.float32), rng.normal(size=(num_q, dim)).astype(np.float32)


def test_matches_numpy_brute_force():
    db, queries = _data()
    distances, indices = knn_search(db, queries, k=7, use_gpu=False)
    brute = ((queries[:, None, :].astype(np.float64) - db[None, :, :]) ** 2).sum(-1)  # (Nq, Nd) squared
    expected_indices = np.argsort(brute, axis=1)[:, :7]
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, np.take_along_axis(brute, expected_indices, 1), rtol=1e-4)
    assert indices.dtype == np.int64 and distances.shape == (15, 7)


def test_plain_distances():
    db = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]], dtype=np.float32)
    queries = np.array([[0.0, 0.0]], dtype=np.float32)
    distances, indices = knn_search(db, queries, k=3, use_gpu=False, squared=False)
    np.testing.assert_array_equal(indices, [[0, 2, 1]])
    np.testing.assert_allclose(distances, [[0.0, 1.0, 5.0]], atol=1e-6)


def test_k_clipped_to_database_size_and_input_coercion():
    db, queries = _data(num_db=4)
    # float64, non-contiguous views are accepted (faiss needs C-contiguous float32)
    distances, indices = knn_search(db.astype(np.float64), np.asfortranarray(queries), k=10, use_gpu="auto")
    assert indices.shape == (15, 4)
    assert sorted(indices[0].tolist()) == [0, 1, 2, 3]
    assert (np.diff(distances, axis=1) >= 0).all()


def test_errors():
    db, queries = _data()
    with pytest.raises(ValueError, match="D=8"):
        knn_search(db, queries[:, :8], k=1)
    with pytest.raises(ValueError, match="k must be"):
        knn_search(db, queries, k=0)
    with pytest.raises(ValueError, match="empty"):
        knn_search(db[:0], queries, k=1)


@pytest.mark.skipif(faiss_has_gpu(), reason="this faiss has a GPU")
def test_use_gpu_true_without_gpu_raises():
    db, queries = _data()
    with pytest.raises(RuntimeError, match="faiss-gpu"):
        knn_search(db, queries, k=1, use_gpu=True)


def test_a_gpu_index_that_fails_falls_back_to_the_cpu_with_a_warning(monkeypatch):
    import faiss

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA driver version is insufficient for CUDA runtime version")

    monkeypatch.setattr(faiss, "StandardGpuResources", broken, raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    rng = np.random.default_rng(0)
    db, q = rng.normal(size=(50, 8)).astype(np.float32), rng.normal(size=(5, 8)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="searching on the CPU"):
        _, idx = knn_search(db, q, 3, use_gpu="auto")
    brute = np.argsort(((q[:, None] - db[None]) ** 2).sum(-1), axis=1)[:, :3]
    assert np.array_equal(idx, brute)


def test_without_faiss_the_torch_search_gives_the_brute_force_neighbours(no_faiss):
    db, queries = _data(seed=3, num_db=300, num_q=40, dim=24)
    brute = ((queries[:, None, :].astype(np.float64) - db[None, :, :]) ** 2).sum(-1)
    expected = np.argsort(brute, axis=1)[:, :9]
    with pytest.warns(RuntimeWarning, match=r"faiss is not installed.*pip install -e '\.\[cpu\]'"):
        distances, indices = knn_search(db, queries, k=9)
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(distances, np.take_along_axis(brute, expected, 1), rtol=1e-4)
    assert indices.dtype == np.int64 and distances.dtype == np.float32
    with pytest.warns(RuntimeWarning):
        plain, _ = knn_search(db, queries, k=9, squared=False)
    np.testing.assert_allclose(plain, np.sqrt(np.take_along_axis(brute, expected, 1)), rtol=1e-4)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no GPU"):
            knn_search(db, queries, k=1, use_gpu=True)


def test_torch_search_in_chunks_equals_one_block():
    db, queries = _data(seed=4, num_db=50, num_q=33, dim=8)
    whole = torch_knn_search(db, queries, 5, torch.device("cpu"))
    chunked = torch_knn_search(db, queries, 5, torch.device("cpu"), chunk_elements=50 * 4)  # 4 queries at a time
    np.testing.assert_array_equal(whole[1], chunked[1])
    np.testing.assert_allclose(whole[0], chunked[0], rtol=1e-6)  # BLAS blocks a 4-row product differently
    faiss_d, faiss_i = knn_search(db, queries, 5, use_gpu=False)
    np.testing.assert_array_equal(whole[1], faiss_i)


def test_a_faiss_that_cannot_load_is_named_as_such(monkeypatch):
    """A faiss-gpu built for another CUDA than the one present fails at import with its library error: the torch
    search runs, and the warning says faiss is there but could not load, not that it is missing."""
    import builtins

    real_import = builtins.__import__

    def importer(name, *args, **kwargs):
        if name == "faiss":
            raise ImportError("libcudart.so.12: cannot open shared object file: No such file or directory")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", importer)
    db, queries = _data(seed=3, num_db=30, num_q=4, dim=8)
    with pytest.warns(RuntimeWarning, match=r"faiss is installed but cannot load \(libcudart\.so\.12"):
        knn_search(db, queries, k=3)
