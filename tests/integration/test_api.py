"""vpr.api, the way into the project from Python: a trained checkpoint's network, loaded outside any script,
gives the recall that train.py's own test reported for it."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import compose_script
from tests.integration.test_experiments import tiny_overrides


def test_a_checkpoint_loaded_from_python_gives_the_recall_train_py_reported(data_dir, tmp_path):
    from vpr.api import compose_config, encode_images, load_model
    from vpr.data.dataset import load_mat_split
    from vpr.eval.ranking import rank_split
    from vpr.eval.recall import recall_at_n
    from vpr.run.train import run_training

    overrides = [o for o in tiny_overrides("city_baseline", data_dir, tmp_path) if o != "test_after_training=false"]
    run_training(compose_script("train", *overrides))
    reported = json.loads((tmp_path / "results.json").read_text())

    # One epoch: the best checkpoint train.py tested holds the weights of last.ckpt.
    model, cfg = load_model(tmp_path / "checkpoints" / "last.ckpt", device="cpu")
    assert not model.training and list(cfg.data.image_size) == [48, 64]  # the training size, from the checkpoint
    split = load_mat_split(data_dir / "city_tiny_seed0", "city", "test")
    desc = encode_images(model, split.image_paths, cfg.data.image_size).numpy()
    assert desc.shape == (split.num_db + split.num_q, model.head.out_dim)
    np.testing.assert_allclose(np.linalg.norm(desc, axis=1), 1.0, atol=1e-5)
    predictions = rank_split(split, desc[: split.num_db], desc[split.num_db :], k=20)
    recall = recall_at_n(predictions, split.eval_positives(), (1, 5, 10, 20))
    assert {str(n): r for n, r in recall.items()} == pytest.approx(reported["recall_at"], abs=1e-9)

    # A config composed outside any script gets a run folder of its own, and takes command-line style overrides.
    eval_cfg = compose_config("eval", ["split=val", "model.num_clusters=16"])
    assert eval_cfg.split == "val" and eval_cfg.model.num_clusters == 16
    run_dir = Path(eval_cfg.paths.output_dir)  # named, not made: composing writes nothing
    assert run_dir.parent == Path(tempfile.gettempdir()) and not run_dir.exists()
    assert torch.get_float32_matmul_precision() == "highest"


def test_a_composed_training_config_names_its_variant_as_train_py_records_it():
    """The variant is a results table's row: experiment=city_baseline with attention=se and loss=stml is
    baseline+se+stml in train.py's config.yaml, so it is in a config composed from Python too."""
    from vpr.api import compose_config

    assert compose_config("train", ["experiment=city_baseline", "attention=se", "loss=stml"]).variant == (
        "baseline+se+stml"
    )
    assert compose_config("train", ["experiment=city_se"]).variant == "se"


def test_a_config_composes_inside_another_projects_hydra(tmp_path):
    """Another project's Hydra (its app, or its initialize()) has its own config folder: composing this project's
    config there finds this project's files, and the other project's Hydra is as it was afterwards."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from vpr.api import compose_config

    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "eval.yaml").write_text("theirs: 1\n")  # a config of the same name, theirs
    with initialize_config_dir(version_base="1.3", config_dir=str(tmp_path / "conf")):
        cfg = compose_config("eval", ["split=val", "model.num_clusters=16"])
        assert cfg.split == "val" and cfg.model.num_clusters == 16 and "theirs" not in cfg
        assert dict(compose(config_name="eval")) == {"theirs": 1}
    assert not GlobalHydra.instance().is_initialized()
