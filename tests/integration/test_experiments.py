"""Every experiment config composes and trains for one batch on the tiny city (the paper's on CPU-sized settings)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig

from tests.conftest import ROOT, compose_script

EXPERIMENTS = sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml"))


def tiny_overrides(name: str, data_dir: Path, out: Path) -> list[str]:
    o = [
        f"experiment={name}",
        "data=synthetic",
        "data.prepare.preset=tiny",
        f"paths.data_dir={data_dir}",
        f"paths.output_dir={out}",
        "data.image_size=[48,64]",
        "data.num_workers=0",
        "data.eval_batch_size=64",
        "model.num_clusters=8",
        "cluster.auto=true",
        "cluster.images=20",
        "cluster.descriptors_per_image=10",
        "mining.refresh_every_queries=8",
        "mining.candidate_negatives=20",
        "mining.negatives_per_query=2",
        "trainer=default",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=1",
        "logger=none",
        "test_untrained=false",
        "test_after_training=false",
        "backbone.pretrained=false",
    ]
    if name.startswith("paper_"):
        o += ["data.batch_size=2"]  # data=synthetic alone makes a paper recipe run on the city (no data.name=city)
    return o


def test_every_experiment_is_listed():
    assert {"city_baseline", "city_se", "city_crn", "city_deattention", "city_deattention_stml"} <= set(EXPERIMENTS)
    assert {f"paper_{v}" for v in ("baseline", "crn", "bam", "cbam", "se", "deattention", "deattention_stml")} <= set(
        EXPERIMENTS
    )


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_trains_one_batch(name, data_dir, tmp_path):
    from vpr.run.train import run_training

    cfg = compose_script("train", *tiny_overrides(name, data_dir, tmp_path))
    if cfg.guidance.get("source") == "mask_dir":
        # The paper's Cityscapes label maps are not here: the synthetic city's labels stand in for them.
        cfg = compose_script(
            "train",
            *tiny_overrides(name, data_dir, tmp_path),
            "guidance=synthetic",
            f"guidance.suppress={list(cfg.guidance.suppress)}",
        )
    assert cfg.variant
    run_training(cfg)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("head", ["gem", "max", "avg"])
def test_pooling_heads_train_without_centroids(head, data_dir, tmp_path):
    from vpr.run.train import run_training

    cfg = compose_script("train", *tiny_overrides("city_baseline", data_dir, tmp_path), f"head={head}")
    assert torch.get_float32_matmul_precision() == "highest"  # torch's default
    run_training(cfg)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert torch.get_float32_matmul_precision() == "highest"  # the run's TF32 setting did not outlive it


def test_a_failed_run_leaves_the_float32_precision_as_it_was(tmp_path):
    from vpr.errors import DataError
    from vpr.run.train import run_training

    cfg = compose_script(
        "train",
        "data=pitts30k",
        f"data.root={tmp_path / 'absent'}",
        f"paths.output_dir={tmp_path / 'out'}",
        "logger=none",
    )
    with pytest.raises(DataError, match="does not exist"):
        run_training(cfg)
    assert torch.get_float32_matmul_precision() == "highest"


def test_deattention_is_guided_by_default(data_dir, tmp_path, caplog):
    """The design card's command: attention=deattention loss=stml trains the guided mask (auxiliary loss logged);
    the log names the source, the classes and the weight schedule."""
    import csv
    import logging

    from vpr.run.train import run_training

    overrides = [
        o
        for o in tiny_overrides("city_baseline", data_dir, tmp_path)
        if not o.startswith(("logger", "+trainer.limit_train_batches", "mining.refresh_every_queries"))
    ]
    overrides += [
        "+trainer.limit_train_batches=3",
        "mining.refresh_every_queries=4",  # a round per batch
        "attention=deattention",
        "loss=stml",
        "backbone=resnet18",
        "backbone.pretrained=false",
        "logger=csv",
        "++guidance.weight_after=0.001",
        "++guidance.switch_epoch=4",
    ]
    cfg = compose_script("train", *overrides)
    assert cfg.guidance.source == "auto"
    with caplog.at_level(logging.INFO, logger="vpr.data"):
        run_training(cfg)
    assert "semantic guidance (guidance.source=auto)" in caplog.text
    assert "mse loss x 0.1 (x 0.001 from epoch 4) on the" in caplog.text
    (metrics,) = tmp_path.rglob("metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    aux = [float(r["train/aux_loss"]) for r in rows if r.get("train/aux_loss")]
    assert aux and all(a > 0 for a in aux), "the auxiliary loss was logged"
    # The epoch's mining metrics cover all its rounds (the log prints a line per round).
    rounds = re.findall(r"epoch 0 round \d+/\d+ cache pass: (\d+) images .*\((\d+) skipped\)", caplog.text)
    (epoch,) = [r for r in rows if r.get("mining/rounds")]
    assert float(epoch["mining/rounds"]) == len(rounds) > 1
    assert float(epoch["mining/skipped_queries"]) == sum(int(skipped) for _, skipped in rounds)
    # guidance=none says otherwise: no auxiliary loss
    cfg = compose_script("train", *overrides, "guidance=none", f"paths.output_dir={tmp_path / 'unguided'}")
    run_training(cfg)
    (metrics,) = (tmp_path / "unguided").rglob("metrics.csv")
    assert "train/aux_loss" not in metrics.read_text()


@pytest.mark.parametrize(
    ("script", "overrides", "expected"),
    [
        ("train", ["experiment=city_se", "seed=3"], "7_se_seed3"),
        ("train", ["seed=1"], "7_train_seed1"),  # no experiment: no variant
        ("train", ["backbone=resnet18", "attention=se", "seed=1"], "7_resnet18+se_seed1"),  # named by its choices
        ("train", ["backbone=vgg16", "attention=se", "seed=1"], "7_se_seed1"),  # the default backbone: not a choice
        ("train", ["attention=none", "seed=1"], "7_train_seed1"),  # the defaults alone: no variant
        ("eval", ["seed=2"], "7_eval_seed2"),  # eval.py without a checkpoint and without a variant: the task
        ("eval", ["experiment=city_baseline", "seed=2"], "7_baseline_seed2"),
        ("eval", ["ckpt_path={run}/checkpoints/last.ckpt"], "7_crn_seed5"),  # the run that wrote the checkpoint
        ("eval", ["ckpt_path={elsewhere}/model_best.pth.tar"], "7_eval_seed42"),  # a released file: no run config
        ("eval", ["ckpt_path={novariant}/checkpoints/last.ckpt"], "7_eval_seed6"),  # a run without variant: its seed
        # components chosen on the command line beyond the experiment's own: a variant of their own
        ("train", ["experiment=city_baseline", "attention=se", "loss=stml", "seed=1"], "7_baseline+se+stml_seed1"),
        ("train", ["experiment=city_se", "attention=se"], "7_se_seed42"),  # the experiment's own choice
        ("train", ["experiment=city_baseline", "attention=cbam", "variant=mine"], "7_mine_seed42"),  # named by hand
    ],
)
def test_sweep_job_folders_are_named_by_variant_or_task(script, overrides, expected, tmp_path):
    import vpr  # noqa: F401  (registers the vpr.job_name resolver, as the scripts' imports do)

    run = tmp_path / "outputs" / "train" / "runs" / "x"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("variant: crn\nseed: 5\n")  # what train.py writes, reduced to these keys
    novariant = tmp_path / "outputs" / "train" / "runs" / "y"
    (novariant / "checkpoints").mkdir(parents=True)
    (novariant / "config.yaml").write_text("variant: null\nseed: 6\n")
    overrides = [o.format(run=run, elsewhere=tmp_path, novariant=novariant) for o in overrides]
    cfg = compose_script(script, *overrides, hydra=True)
    cfg.hydra.job.num = 7
    hydra_config = HydraConfig.instance()
    hydra_config.set_config(cfg)  # as Hydra sets it for a job: the resolvers read the job's command line from it
    try:
        assert cfg.hydra.sweep.subdir == expected
    finally:
        hydra_config.cfg = None
