"""The mask-quality measure of a guided de-attention run: logged every validation, written into results.json, and
computed over the images the label maps say (checked against the label PNGs read directly)."""

from __future__ import annotations

import csv
import json

import numpy as np
import scipy.io as sio
from PIL import Image

from tests.conftest import run_script
from tests.integration.test_resume import SETTINGS


def test_guided_deattention_run_measures_its_mask(data_dir, tmp_path):
    out = tmp_path / "run"
    settings = [o for o in SETTINGS if not o.startswith(("trainer.max_epochs", "logger"))]
    run_script(
        "train.py",
        *settings,
        "trainer.max_epochs=1",
        "attention=deattention",
        "logger=csv",
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={out}",
        tmp=tmp_path,
    )
    (metrics_file,) = out.rglob("metrics.csv")
    with open(metrics_file, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("mask/auc")]
    assert rows and 0.0 <= float(rows[-1]["mask/auc"]) <= 1.0
    mask = json.loads((out / "results.json").read_text())["mask"]
    assert 0.0 <= mask["auc"] <= 1.0 and 0.0 < mask["mask_on_static"] < 1.0

    # The tiny test split has 60 images (< 64: all are measured) of 48x64 pixels; ResNet-18 to layer3 gives a
    # 3x4 grid of 16x16-pixel cells, so the suppressed share is the plain pixel share of person and vehicle.
    city = data_dir / "city_tiny_seed0"
    classes = {name: int(i) for i, name in json.loads((city / "classes.json").read_text()).items()}
    spec = sio.loadmat(city / "datasets" / "city_test.mat", squeeze_me=True, struct_as_record=False)["dbStruct"]
    images = [city / n for n in spec.dbImageFns] + [city / "queries_real" / n for n in spec.qImageFns]
    labels = [np.asarray(Image.open(p.with_name(p.stem + "_labels.png"))) for p in images]
    share = np.mean([np.isin(lab, [classes["person"], classes["vehicle"]]).mean() for lab in labels])
    assert share > 0.01 and abs(mask["suppressed_share"] - share) < 1e-6


def test_a_constant_mask_is_said_once(tiny_city, caplog):
    """A mask head whose ReLU died outputs one number everywhere: the measure says so (once), not only AUC 0.5."""
    import logging
    from types import SimpleNamespace

    import torch

    from vpr.callbacks import MaskQuality

    class Labels:  # the left half of every image is a person
        def group_ids(self, group):
            return [1]

        def labels(self, path):
            lab = np.zeros((48, 64), dtype=np.uint8)
            lab[:, :32] = 1
            return lab

    class ConstantMask(torch.nn.Module):
        device = torch.device("cpu")

        def describe(self, x):
            return None, torch.full((x.shape[0], 1, 3, 4), 0.731)

    dm = SimpleNamespace(
        guidance={"suppress": ["person"]},
        label_source=Labels,
        eval_batch_size=8,
        transform=lambda image: torch.zeros(3, 48, 64),
    )
    split = SimpleNamespace(image_paths=sorted(tiny_city.glob("000/*_pitch1_yaw1.jpg"))[:10])
    callback = MaskQuality(images=10)
    with caplog.at_level(logging.WARNING, logger="vpr.callbacks"):
        for _ in range(2):
            quality = callback.measure(ConstantMask(), dm, split)
    assert quality["auc"] == 0.5
    assert caplog.text.count("the attention mask is the same number (0.731) on every cell") == 1


def test_label_maps_for_the_training_images_only_are_enough(data_dir, tmp_path):
    """guidance=mask_dir asks for a label map per training image: the run trains, validates and tests without maps
    for the other splits, and says once per split that their mask quality is not measured."""
    import shutil

    city = data_dir / "city_tiny_seed0"
    masks = tmp_path / "masks"
    spec = sio.loadmat(city / "datasets" / "city_train.mat", squeeze_me=True, struct_as_record=False)["dbStruct"]
    for name in [*spec.dbImageFns, *(f"queries_real/{n}" for n in spec.qImageFns)]:
        image = city / name
        target = (masks / name).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image.with_name(image.stem + "_labels.png"), target)  # the city's ids stand in for Cityscapes'
    out = tmp_path / "run"
    settings = [o for o in SETTINGS if not o.startswith(("trainer.max_epochs",))]
    proc = run_script(
        "train.py",
        *settings,
        "trainer.max_epochs=1",
        "attention=deattention",
        "guidance=mask_dir",
        f"guidance.mask_dir={masks}",
        "guidance.class_groups={person:[3],vehicle:[4]}",
        f"guidance.cache_dir={tmp_path / 'cache'}",
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={out}",
        tmp=tmp_path,
    )
    log = (out / "train.log").read_text()
    assert (out / "results.json").is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    assert log.count("mask quality on city/val not measured: label map") == 1
    assert log.count("mask quality on city/test not measured: label map") == 1
    assert "error:" not in proc.stderr and "no semantic targets in the pictures: label map" in log
