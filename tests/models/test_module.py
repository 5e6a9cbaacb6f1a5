"""The LightningModule's training step: metric loss plus the weighted de-attention loss, and the mask's effect."""

import re

import pytest
import torch
from torch import nn

from vpr.errors import ConfigError
from vpr.losses import TripletMarginLoss
from vpr.models.attention.deattention import DeAttention
from vpr.models.heads.netvlad import NetVLAD
from vpr.models.module import PlaceRecognitionModule


class TinyBackbone(nn.Module):
    out_channels = 8

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=4, padding=1)

    def forward(self, x):
        return self.conv(x)


def make(apply="aggregation", aux_weight=0.5):
    torch.manual_seed(0)
    return PlaceRecognitionModule(
        TinyBackbone(), DeAttention(8, apply=apply), NetVLAD(4, 8), TripletMarginLoss(0.5), aux_weight=aux_weight
    )


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    return {
        "query": torch.randn(2, 3, 16, 16, generator=g),
        "positive": torch.randn(2, 3, 16, 16, generator=g),
        "negatives": torch.randn(3, 3, 16, 16, generator=g),
        "neg_to_query": torch.tensor([0, 0, 1]),
        "targets": torch.rand(7, 1, 4, 4, generator=g),
    }


def test_training_step_adds_weighted_mse_of_mask_and_target():
    m = make().eval()  # eval: BatchNorm uses running stats, so describe() below sees the same network
    b = batch()
    images = torch.cat([b["query"], b["positive"], b["negatives"]])
    desc, mask = m.describe(images)
    metric = TripletMarginLoss(0.5)(desc[:2], desc[2:4], desc[4:], b["neg_to_query"])
    mse = ((mask - b["targets"]) ** 2).mean()
    got = m.training_step(b, 0)
    assert torch.allclose(got, metric + 0.5 * mse, atol=1e-6)
    assert torch.allclose(make(aux_weight=0.0).eval().training_step(b, 0), metric, atol=1e-6)


def test_aux_weight_schedule():
    from types import SimpleNamespace

    m = make()
    m.aux_weight_after, m.aux_switch_epoch = 0.001, 4
    assert m.current_aux_weight() == 0.5  # no trainer: epoch 0
    for epoch, weight in ((3, 0.5), (4, 0.001), (9, 0.001)):  # the switch at epoch 4, as the paper's schedule
        m._trainer = SimpleNamespace(current_epoch=epoch)
        assert m.current_aux_weight() == weight, epoch


def test_mask_changes_descriptor_only_when_it_weights_aggregation():
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    for apply, changes in (("aggregation", True), ("features", False)):
        m = make(apply).eval()
        d0 = m(x)
        with torch.no_grad():  # another mask: perturb every parameter of the mask branch
            for p in m.attention.parameters():
                p.add_(torch.randn_like(p) * 2)
        d1 = m(x)
        delta = (d1 - d0).norm(dim=1).max().item()
        if changes:
            assert delta > 1e-2, delta
        else:
            assert delta < 1e-5, delta


def test_init_weights_loads_matching_tensors_and_keeps_the_new_module(tmp_path):
    from vpr.checkpoints import load_matching_weights
    from vpr.models.attention.base import Identity
    from vpr.models.attention.crn import CRN

    torch.manual_seed(1)
    trained = PlaceRecognitionModule(TinyBackbone(), Identity(8), NetVLAD(4, 8), TripletMarginLoss(0.1))
    torch.save({"state_dict": trained.state_dict()}, tmp_path / "baseline.ckpt")
    torch.manual_seed(2)
    crn = PlaceRecognitionModule(TinyBackbone(), CRN(8), NetVLAD(4, 8), TripletMarginLoss(0.1))
    crn_before = {k: v.clone() for k, v in crn.attention.state_dict().items()}
    load_matching_weights(crn, str(tmp_path / "baseline.ckpt"))
    for k, v in trained.state_dict().items():
        assert torch.equal(crn.state_dict()[k], v), k
    for k, v in crn.attention.state_dict().items():
        assert torch.equal(v, crn_before[k]), k


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr_multipliers": {"head": -1}}, "model.lr_multipliers.head=-1: must be a number >= 0"),
        ({"lr_multipliers": {"heads": 10}}, "model.lr_multipliers.heads: no such component"),
        ({"aux_weight": -1}, "guidance.weight=-1, guidance.weight_after=None: the weights"),
        ({"aux_weight_after": 0.001}, "guidance.weight_after=0.001, guidance.switch_epoch=None: give both"),
        (
            {"aux_weight_after": 0.001, "aux_switch_epoch": 1.5},
            "guidance.switch_epoch=1.5: must be a whole number >= 0",
        ),
        ({"aux_weight_after": 0.001, "aux_switch_epoch": -1}, "guidance.switch_epoch=-1: must be a whole number >= 0"),
        ({"aux_switch_epoch": 4}, "guidance.weight_after=None, guidance.switch_epoch=4: give both"),
    ],
)
def test_training_factors_out_of_range_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        PlaceRecognitionModule(
            TinyBackbone(), DeAttention(8), NetVLAD(4, 8), TripletMarginLoss(0.5), **{"aux_weight": 0.5, **kwargs}
        )


def test_guidance_settings_are_not_read_without_a_supervised_mask():
    PlaceRecognitionModule(TinyBackbone(), DeAttention(8), NetVLAD(4, 8), TripletMarginLoss(0.5), aux_weight_after=0.1)


def test_a_head_whose_out_dim_is_a_numpy_integer_passes_the_component_check():
    """out_dim = np.prod(...) is a numpy integer: the descriptors are allocated with it as with an int."""
    import numpy as np

    head = NetVLAD(4, 8)
    head.out_dim = np.int64(4 * 8)
    module = PlaceRecognitionModule(TinyBackbone(), DeAttention(8), head, TripletMarginLoss(0.5))
    module.check_components((32, 32))
    for out_dim in (0, 2.0, "32", None):
        head.out_dim = out_dim
        with pytest.raises(ConfigError, match=r"has out_dim=.*a whole number >= 1"):
            module.check_components((32, 32))
