"""Tests for vpr/models/heads/netvlad.py against plain loops and hand-computed initialisations."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch

from vpr.models.heads.netvlad import NetVLAD, alpha_v1, alpha_v2, load_centroid_file

B, K, D, H, W = 2, 3, 5, 2, 3


def reference_netvlad(
    x: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor | None,
    centroids: torch.Tensor,
    weights: torch.Tensor | None = None,
    skip: set[tuple[int, int, int]] = frozenset(),
) -> torch.Tensor:
    """NetVLAD by the definition, one location and one cluster at a time, in float64.

    skip: (b, h, w) locations left out of the sum entirely.
    """
    x = x.double()
    num_b, dim, height, width = x.shape
    k_count = centroids.shape[0]
    out = []
    for b in range(num_b):
        v = [[0.0] * dim for _ in range(k_count)]
        for i in range(height):
            for j in range(width):
                if (b, i, j) in skip:
                    continue
                xi = [x[b, d, i, j].item() for d in range(dim)]
                norm = math.sqrt(sum(t * t for t in xi))
                xi = [t / norm for t in xi]
                logits = []
                for k in range(k_count):
                    s = sum(conv_weight[k, d].item() * xi[d] for d in range(dim))
                    logits.append(s + (conv_bias[k].item() if conv_bias is not None else 0.0))
                m = max(logits)
                exps = [math.exp(t - m) for t in logits]
                wi = 1.0 if weights is None else weights[b, 0, i, j].item()
                for k in range(k_count):
                    a = exps[k] / sum(exps)
                    for d in range(dim):
                        v[k][d] += wi * a * (xi[d] - centroids[k, d].item())
        flat = []
        for k in range(k_count):
            n = math.sqrt(sum(t * t for t in v[k]))
            flat.extend(t / n for t in v[k])  # cluster-major: index k * D + d
        n = math.sqrt(sum(t * t for t in flat))
        out.append([t / n for t in flat])
    return torch.tensor(out, dtype=torch.float64)


def _head(version: str = "v1", seed: int = 0) -> NetVLAD:
    torch.manual_seed(seed)
    head = NetVLAD(num_clusters=K, dim=D, version=version)
    with torch.no_grad():  # non-trivial parameters, bias included for v2
        head.conv.weight.normal_()
        if head.conv.bias is not None:
            head.conv.bias.normal_()
        head.centroids.normal_(0, 0.3)
    return head


def _weight_and_bias(head: NetVLAD):
    return head.conv.weight[:, :, 0, 0].detach(), None if head.conv.bias is None else head.conv.bias.detach()


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_forward_matches_loop(version):
    head = _head(version)
    x = torch.randn(B, D, H, W, generator=torch.Generator().manual_seed(1))
    weight, bias = _weight_and_bias(head)
    out = head(x)
    assert out.shape == (B, K * D) and head.out_dim == K * D
    expected = reference_netvlad(x, weight, bias, head.centroids.detach())
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)


def test_forward_with_weights_matches_loop():
    head = _head()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(B, D, H, W, generator=g)
    weights = torch.rand(B, 1, H, W, generator=g) + 0.1
    out = head(x, weights)
    expected = reference_netvlad(x, *_weight_and_bias(head), head.centroids.detach(), weights)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out, head(x), atol=1e-4)  # the weights do change the descriptor


def test_unit_weights_equal_no_weights():
    head = _head()
    x = torch.randn(B, D, H, W)
    torch.testing.assert_close(head(x, torch.ones(B, 1, H, W)), head(x))


def test_zero_weight_removes_location():
    head = _head()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(B, D, H, W, generator=g)
    weights = torch.ones(B, 1, H, W)
    weights[0, 0, 1, 2] = 0.0
    weights[1, 0, 0, 0] = 0.0
    out = head(x, weights)
    expected = reference_netvlad(x, *_weight_and_bias(head), head.centroids.detach(), skip={(0, 1, 2), (1, 0, 0)})
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
    x_changed = x.clone()
    x_changed[0, :, 1, 2] = torch.randn(D)  # what a zero-weight location holds no longer matters
    torch.testing.assert_close(head(x_changed, weights), out)


def test_positive_feature_mask_is_invisible_but_weights_are_not():
    """Input L2-normalisation cancels any positive per-location scaling of the features (docs/method.md sec. 5)."""
    head = _head()
    x = torch.randn(B, D, H, W)
    mask = torch.rand(B, 1, H, W) + 0.05
    torch.testing.assert_close(head(x * mask), head(x), atol=1e-6, rtol=1e-5)
    assert (head(x, weights=mask) - head(x)).abs().max() > 1e-3


def test_output_unit_norm_and_gradients():
    head = _head("v2")
    x = torch.randn(B, D, H, W, requires_grad=True)
    out = head(x, torch.rand(B, 1, H, W))
    torch.testing.assert_close(out.norm(dim=1), torch.ones(B))
    (out * torch.randn_like(out)).sum().backward()
    for name, p in [
        ("centroids", head.centroids),
        ("conv.weight", head.conv.weight),
        ("conv.bias", head.conv.bias),
    ]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert torch.isfinite(x.grad).all()


def test_input_channel_and_weight_shape_errors():
    head = _head()
    with pytest.raises(ValueError, match="input channels"):
        head(torch.randn(1, D + 1, H, W))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        head(torch.randn(1, D, H, W), torch.ones(1, 1, H, W + 1))


# Hand example: K = 2, D = 2, centroids c1 = (2, 0), c2 = (0, 1); descriptors x1 = (1, 0), x2 = (0.6, 0.8).
CENTROIDS = np.array([[2.0, 0.0], [0.0, 1.0]], dtype=np.float32)
DESCRIPTORS = np.array([[1.0, 0.0], [0.6, 0.8]], dtype=np.float32)


def test_alpha_v1_hand_example():
    # c_hat = (1, 0), (0, 1). x1 dots (1, 0): gap 1. x2 dots (0.6, 0.8) -> sorted (0.8, 0.6): gap 0.2.
    expected = math.log(100) / ((1.0 + 0.2) / 2)
    assert alpha_v1(CENTROIDS, DESCRIPTORS) == pytest.approx(expected, rel=1e-6)
    head = NetVLAD(num_clusters=2, dim=2, version="v1")
    assert head.conv.bias is None  # v1 has no bias parameter at all
    assert not head.is_initialised
    alpha = head.init_from_centroids(CENTROIDS, DESCRIPTORS)
    assert alpha == pytest.approx(expected, rel=1e-6)
    w = head.conv.weight.detach()[:, :, 0, 0]
    torch.testing.assert_close(w, torch.tensor([[expected, 0.0], [0.0, expected]]))
    torch.testing.assert_close(head.centroids.detach(), torch.tensor([[2.0, 0.0], [0.0, 1.0]]))  # not normalised
    assert head.is_initialised
    assert head.state_dict()["initialised"].item()  # the flag travels with checkpoints


def test_alpha_v2_hand_example_uses_distances():
    # Squared distances: x1 -> c1: 1, c2: 1 + 1 = 2 (gap 1); x2 -> c1: 1.4^2 + 0.8^2 = 2.6, c2: 0.6^2 + 0.2^2 = 0.4
    # (gap 2.2). Mean gap 1.6.
    expected = math.log(100) / 1.6
    assert alpha_v2(CENTROIDS, DESCRIPTORS) == pytest.approx(expected, rel=1e-6)
    head = NetVLAD(num_clusters=2, dim=2, version="v2")
    head.init_from_centroids(CENTROIDS, DESCRIPTORS)
    torch.testing.assert_close(
        head.conv.weight.detach()[:, :, 0, 0], torch.tensor([[4.0 * expected, 0.0], [0.0, 2.0 * expected]])
    )
    torch.testing.assert_close(head.conv.bias.detach(), torch.tensor([-4.0 * expected, -1.0 * expected]))


def test_alpha_v2_three_clusters_uses_the_two_nearest():
    # x = (0, 0) with centroids at squared distances 9, 1, 4: nearest two are 1 and 4 -> gap 3.
    centroids = np.array([[3.0, 0.0], [0.0, 1.0], [0.0, -2.0]])
    descriptors = np.array([[0.0, 0.0]])
    assert alpha_v2(centroids, descriptors) == pytest.approx(math.log(100) / 3.0)


def test_v2_assignment_is_softmax_of_negative_scaled_distance():
    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(K, D)).astype(np.float32)
    descriptors = rng.normal(size=(20, D)).astype(np.float32)
    head = NetVLAD(num_clusters=K, dim=D, version="v2")
    alpha = head.init_from_centroids(centroids, descriptors)
    x = torch.nn.functional.normalize(torch.randn(4, D), dim=1)
    logits = x @ head.conv.weight.detach()[:, :, 0, 0].T + head.conv.bias.detach()
    distances_sq = torch.cdist(x, torch.from_numpy(centroids)) ** 2
    torch.testing.assert_close(logits.softmax(1), (-alpha * distances_sq).softmax(1), atol=1e-5, rtol=1e-4)


def test_init_errors():
    head = NetVLAD(num_clusters=2, dim=2, version="v1")
    with pytest.raises(ValueError, match="version"):
        head.init_from_centroids(CENTROIDS, DESCRIPTORS, version="v2")
    with pytest.raises(ValueError, match="shape"):
        head.init_from_centroids(np.zeros((3, 2)), DESCRIPTORS)
    with pytest.raises(ValueError, match="gap"):  # identical centroids: alpha would be infinite
        head.init_from_centroids(np.ones((2, 2)), DESCRIPTORS)


def _write_h5(path, **datasets):
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f.create_dataset(name, data=value)


def test_init_from_file(tmp_path):
    path = tmp_path / "vgg16_city_64.hdf5"
    _write_h5(path, centroids=CENTROIDS, descriptors=DESCRIPTORS)
    head = NetVLAD(num_clusters=2, dim=2)
    alpha = head.init_from_file(path)
    assert alpha == pytest.approx(math.log(100) / 0.6, rel=1e-6)
    assert head.is_initialised


def test_centroid_file_errors_name_the_file_and_the_fix(tmp_path):
    missing = tmp_path / "nope.hdf5"
    with pytest.raises(FileNotFoundError, match="cluster.py") as info:
        NetVLAD(num_clusters=2, dim=2).init_from_file(missing)
    assert str(missing) in str(info.value)

    no_descriptors = tmp_path / "partial.hdf5"
    _write_h5(no_descriptors, centroids=CENTROIDS)
    with pytest.raises(ValueError, match="descriptors") as info:
        load_centroid_file(no_descriptors)
    assert str(no_descriptors) in str(info.value) and "cluster.py" in str(info.value)

    good = tmp_path / "good.hdf5"
    _write_h5(good, centroids=CENTROIDS, descriptors=DESCRIPTORS)
    with pytest.raises(ValueError, match="num_clusters=64, dim=512") as info:
        NetVLAD(num_clusters=64, dim=512).init_from_file(good)
    assert str(good) in str(info.value)

    not_hdf5 = tmp_path / "text.hdf5"
    not_hdf5.write_text("not an hdf5 file")
    with pytest.raises(ValueError, match="HDF5"):
        load_centroid_file(not_hdf5)


def test_bf16_autocast_keeps_the_descriptor_of_float32():
    """Under bf16 mixed precision (the GPU recipe; CPU autocast runs the same casts) the head computes in float32:
    with alpha-scaled logits and tight clusters a bf16 head is off by about 1e-2 in L2 (8e-3 here), a tenth of the margin."""
    g = torch.Generator().manual_seed(3)
    k, d = 8, 32
    centres = torch.nn.functional.normalize(torch.randn(k, d, generator=g), dim=1)
    descriptors = torch.nn.functional.normalize(
        centres.repeat_interleave(50, 0) + 0.15 * torch.randn(k * 50, d, generator=g), dim=1
    )
    head = NetVLAD(num_clusters=k, dim=d, version="v1")
    with torch.no_grad():
        head.init_from_centroids(centres, descriptors)
    # features near the clusters, already rounded to bf16 as a backbone under autocast would give them
    x = centres[torch.randint(0, k, (2 * 6 * 5,), generator=g)] + 0.15 * torch.randn(60, d, generator=g)
    x = x.view(2, 6, 5, d).permute(0, 3, 1, 2).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(x)
    assert out.dtype == torch.float32
    expected = reference_netvlad(x.float(), *_weight_and_bias(head), head.centroids.detach())
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
