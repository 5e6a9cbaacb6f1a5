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
    run_script("train.py", *settings, "trainer.max_epochs=1", "attention=deattention", "logger=csv",
               f"paths.data_dir={data_dir}", f"hydra.run.dir={out}", tmp=tmp_path)
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
