"""The paper_* recipes carry the paper's training protocol. The expected values are written here from the
method's description (docs/method.md: data protocol, NetVLAD, mining, losses, optimiser), not read from configs/."""

from __future__ import annotations

import pytest

from tests.conftest import compose_script

PAPER = ["paper_baseline", "paper_se", "paper_cbam", "paper_bam", "paper_crn", "paper_deattention"]
PAPER += ["paper_deattention_stml"]


@pytest.mark.parametrize("name", PAPER)
def test_training_protocol(name):
    cfg = compose_script("train", f"experiment={name}")
    assert cfg.backbone.name == "vgg16" and cfg.backbone.pretrained is True
    assert cfg.backbone.train_from == "conv3"  # conv3_1 .. conv5_3 train
    assert list(cfg.data.image_size) == [480, 640]
    assert cfg.head._target_.endswith("NetVLAD") and cfg.model.num_clusters == 64
    # 4 tuples of 1 query + 1 positive + up to 10 negatives; the cache is refreshed every 1000 queries from 1000
    # random negative candidates
    assert cfg.data.batch_size == 4
    assert cfg.mining.negatives_per_query == 10
    assert cfg.mining.refresh_every_queries == 1000
    assert cfg.mining.candidate_negatives == 1000
    assert cfg.mining.cache_dtype == "float32"
    # SGD momentum 0.9, weight decay 1e-3, lr 1e-3; StepLR x0.5 every 5 epochs; 30 epochs
    assert cfg.optimizer._target_ == "torch.optim.SGD"
    assert (cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.weight_decay) == (1e-3, 0.9, 1e-3)
    assert (cfg.scheduler.step_size, cfg.scheduler.gamma) == (5, 0.5)
    assert cfg.trainer.max_epochs == 30
    # the best checkpoint on validation Recall@1; the public codes stop when more than 10 epochs passed without
    # improvement (not_improved > 10), which is Lightning's patience 11
    assert cfg.monitor == "val/R@1"
    assert cfg.callbacks.checkpoint.monitor == cfg.monitor and cfg.callbacks.early_stopping.monitor == cfg.monitor
    assert cfg.callbacks.early_stopping.patience == 11
    assert list(cfg.model.recall_at) == [1, 5, 10, 20]


@pytest.mark.parametrize("name", PAPER)
def test_loss(name):
    cfg = compose_script("train", f"experiment={name}")
    if name.endswith("_stml"):
        assert cfg.loss._target_.endswith("SharpenedTripletMarginLoss")
        assert (cfg.loss.margin, cfg.loss.margin_pn) == (0.1, 1.4)
    else:
        assert cfg.loss._target_.endswith(".TripletMarginLoss") and cfg.loss.margin == 0.1


def test_guidance_of_the_deattention_recipes():
    person, vehicle, sky = [11, 12], [13, 14, 15, 16, 17, 18], [10]  # Cityscapes train ids
    for name, suppress in [("paper_deattention", ["person", "vehicle"]), ("paper_deattention_stml", None)]:
        g = compose_script("train", f"experiment={name}").guidance
        assert g.source == "mask_dir" and g.loss == "mse" and g.weight == 0.1
        assert {k: list(v) for k, v in g.class_groups.items()} == {"person": person, "vehicle": vehicle, "sky": sky}
        assert list(g.suppress) == (suppress or ["person", "vehicle", "sky"])  # the final model adds sky


def test_crn_trains_its_layers_ten_times_faster():
    cfg = compose_script("train", "experiment=paper_crn")
    assert cfg.model.lr_multipliers.attention == 10.0
    assert cfg.model.lr_multipliers.backbone == cfg.model.lr_multipliers.head == 1.0


def test_the_default_stops_at_the_baselines_epoch():
    assert compose_script("train").callbacks.early_stopping.patience == 11  # more than 10 epochs, as the baseline
