"""Components added through config only: the classes below live in this test module, not under vpr/, and are
selected by their ``_target_`` on the command line. Nothing in the wiring layer names them."""

from __future__ import annotations

import h5py
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import compose_script, run_script
from tests.integration.test_errors import assert_clean_failure
from tests.integration.test_experiments import tiny_overrides
from vpr.models.attention.base import AttentionOutput

HERE = "tests.integration.test_extending"


class ToyGate(nn.Module):
    """A learnable per-location gate handed to the head as aggregation weights."""

    def __init__(self, channels: int, hidden: int = 4) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, 1, 1))

    def forward(self, x: torch.Tensor) -> AttentionOutput:
        gate = torch.sigmoid(self.score(x))
        return AttentionOutput(features=x, weights=gate, mask=gate)


class PlainTensorGate(ToyGate):
    """The natural mistake: returning the gated features themselves."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.score(x))


class ChannelWeightsGate(ToyGate):
    """Weights per channel and location, (B, C, h, w), where a head takes one weight per location."""

    def forward(self, x: torch.Tensor) -> AttentionOutput:
        return AttentionOutput(features=x, weights=torch.sigmoid(x), mask=None)


class HeadWithoutOutDim(nn.Module):
    """Average pooling that forgot its ``out_dim``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        return F.normalize(x.mean(dim=(2, 3)), dim=1)


class HeadOfAnotherLength(HeadWithoutOutDim):
    """Its ``out_dim`` says 7, its descriptors have the input's channels."""

    out_dim = 7


class PerTupleLoss(nn.Module):
    """A triplet loss that forgot to average: one value per tuple."""

    mining_margin = 0.1

    def forward(self, query, positive, negatives, neg_to_query) -> torch.Tensor:
        return (query - positive).norm(dim=1)


class ToyCentroidHead(nn.Module):
    """A head that needs k-means centroids: similarities of the pooled feature to K centroids."""

    needs_centroids = True

    def __init__(self, dim: int, num_clusters: int = 4) -> None:
        super().__init__()
        self.dim, self.num_clusters, self.out_dim = dim, num_clusters, num_clusters
        self.centroids = nn.Parameter(torch.randn(num_clusters, dim))

    def init_from_file(self, path) -> float:
        with h5py.File(path, "r") as f:
            self.centroids.data.copy_(torch.from_numpy(f["centroids"][...]))
        return 1.0

    def forward(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        x = F.normalize(x, dim=1)
        pooled = x.mean(dim=(2, 3)) if weights is None else (x * weights).sum((2, 3)) / weights.sum((2, 3))
        return F.normalize(pooled @ self.centroids.t(), dim=1)


def train(overrides: list[str]) -> None:
    from vpr.run.train import run_training

    run_training(compose_script("train", *overrides))


def test_toy_attention_through_config_only(data_dir, tmp_path):
    train(
        [
            *tiny_overrides("city_baseline", data_dir, tmp_path),
            f"attention._target_={HERE}.ToyGate",
            "+attention.hidden=3",
        ]
    )
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["vpr_config"]["attention"]["_target_"] == f"{HERE}.ToyGate"
    assert state["state_dict"]["attention.score.0.weight"].shape[0] == 3
    # eval.py builds it from the checkpoint once its package is trusted, and says how when it is not.
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    common = [
        "data.prepare.preset=tiny",
        f"paths.data_dir={data_dir}",
        f"ckpt_path={ckpt}",
        "logger=none",
        "data.num_workers=0",
    ]
    refused = run_script("eval.py", *common, f"hydra.run.dir={tmp_path}/refused", tmp=tmp_path, check=False)
    assert_clean_failure(refused, f"'{HERE}.ToyGate' (vpr_config.attention._target_)", "trusted_targets=[tests]")
    run_script("eval.py", *common, "trusted_targets=[tests]", f"hydra.run.dir={tmp_path}/trusted", tmp=tmp_path)
    assert (tmp_path / "trusted" / "results.json").is_file()


def test_head_needing_centroids_gets_them_without_glue(data_dir, tmp_path):
    train(
        [
            *tiny_overrides("city_baseline", data_dir, tmp_path),
            "head=avg",
            f"head._target_={HERE}.ToyCentroidHead",
            "+head.num_clusters=5",
            f"paths.centroids_dir={tmp_path}/centroids",
            "optimizer.lr=0.0",
        ]
    )
    (path,) = (tmp_path / "centroids").glob("*.hdf5")
    assert path.name == "resnet18-layer3-random42_city-tiny-seed0_5_48x64_desc_cen.hdf5"  # K asked of the head
    with h5py.File(path) as f:
        centroids = torch.from_numpy(f["centroids"][...])
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    torch.testing.assert_close(state["state_dict"]["head.centroids"], centroids)  # lr 0: as initialised


def test_an_attention_module_returning_a_plain_tensor_is_said_before_any_work(data_dir, tmp_path):
    import pytest

    from vpr.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"attention \({HERE}\.PlainTensorGate\) returned Tensor: .*AttentionOutput"):
        train(
            [
                *tiny_overrides("city_baseline", data_dir, tmp_path),
                f"attention._target_={HERE}.PlainTensorGate",
                f"paths.centroids_dir={tmp_path}/centroids",
            ]
        )
    assert not (tmp_path / "centroids").exists()  # before k-means


@pytest.mark.parametrize(
    ("component", "says"),
    [
        # ResNet-18 to layer3 on 48x64 images: 256 channels on a 48/16 x 64/16 = 3 x 4 grid, a batch of two
        (
            f"attention._target_={HERE}.ChannelWeightsGate",
            rf"attention \({HERE}\.ChannelWeightsGate\) returned weights \(2, 256, 3, 4\) for features "
            r"\(2, 256, 3, 4\): .*\(2, 1, 3, 4\)",
        ),
        (f"head._target_={HERE}.HeadWithoutOutDim", rf"head \({HERE}\.HeadWithoutOutDim\) has out_dim=None"),
        (
            f"head._target_={HERE}.HeadOfAnotherLength",
            rf"head \({HERE}\.HeadOfAnotherLength\) returned \(2, 256\) for a batch of 2: .*\(2, 7\)",
        ),
        (
            f"loss._target_={HERE}.PerTupleLoss",
            rf"loss \({HERE}\.PerTupleLoss\) returned \(2,\) for 2 tuples: .*one number",
        ),
    ],
    ids=["weights-per-channel", "head-without-out_dim", "head-of-another-length", "loss-per-tuple"],
)
def test_a_component_breaking_its_shape_contract_is_said_before_any_work(data_dir, tmp_path, component, says):
    from vpr.errors import ConfigError

    # a head option whose settings fit the toy heads' constructors; the toy loss takes no margin
    fitting = {"head": ["head=avg"], "loss": ["~loss.margin"]}.get(component.split(".")[0], [])
    with pytest.raises(ConfigError, match=says):
        train(
            [
                *tiny_overrides("city_baseline", data_dir, tmp_path),
                *fitting,
                component,
                f"paths.centroids_dir={tmp_path}/centroids",
            ]
        )
    assert not (tmp_path / "centroids").exists()  # before k-means
