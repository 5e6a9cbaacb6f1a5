"""Partial mining end to end: each round caches a subset of the training database, the run trains and tests."""

from __future__ import annotations

import json
import re

from tests.conftest import run_script
from tests.integration.test_resume import SETTINGS


def test_training_with_a_database_subset_per_round(data_dir, tmp_path):
    out = tmp_path / "run"
    proc = run_script(
        "train.py",
        *[o for o in SETTINGS if not o.startswith("trainer.max_epochs")],
        "trainer.max_epochs=1",
        f"paths.data_dir={data_dir}",
        "mining.database_subset=10",
        f"hydra.run.dir={out}",
        tmp=tmp_path,
    )
    log = proc.stdout + proc.stderr
    encoded = [int(n) for n in re.findall(r"round \d+/\d+ cache pass: (\d+) images", log)]
    # the tiny city's training database has 40 images; a round caches 10 random ones, its 8 queries and
    # their positives, so fewer than the 48 of a full round
    assert encoded and all(18 <= n < 48 for n in encoded), encoded
    assert json.loads((out / "results.json").read_text())["num_queries"] > 0
