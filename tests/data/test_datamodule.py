import pytest
import torch

from vpr.data.datamodule import PlaceDataModule, collate_triplets
from vpr.errors import ConfigError


def item(q, n_neg, value):
    return {
        "query": torch.full((3, 4, 4), value),
        "positive": torch.full((3, 4, 4), value + 0.1),
        "negatives": torch.full((n_neg, 3, 4, 4), value + 0.2),
        "target_query": torch.full((1, 2, 2), value),
        "target_positive": torch.full((1, 2, 2), value + 0.1),
        "target_negatives": torch.full((n_neg, 1, 2, 2), value + 0.2),
    }


def test_collate_variable_negatives_and_target_order():
    b = collate_triplets([item(7, 2, 1.0), item(9, 3, 2.0)])
    assert b["query"].shape == (2, 3, 4, 4) and b["negatives"].shape == (5, 3, 4, 4)
    assert b["neg_to_query"].tolist() == [0, 0, 1, 1, 1]
    # targets follow the model's image order: queries, positives, negatives
    firsts = b["targets"][:, 0, 0, 0].tolist()
    want = [1.0, 2.0, 1.1, 2.1, 1.2, 1.2, 2.2, 2.2, 2.2]
    assert [round(v, 4) for v in firsts] == want
    images = torch.cat([b["query"], b["positive"], b["negatives"]])[:, 0, 0, 0]
    assert torch.allclose(images, b["targets"][:, 0, 0, 0])


def test_persistent_workers_setting():
    import pytest

    from vpr.data.datamodule import PlaceDataModule
    from vpr.errors import ConfigError

    def kwargs(persistent, workers):
        return PlaceDataModule(None, "city", num_workers=workers, persistent_workers=persistent)._loader_kwargs()

    assert kwargs(True, 2)["persistent_workers"] is True
    assert kwargs(True, 0)["persistent_workers"] is False  # DataLoader refuses persistent workers without workers
    assert kwargs(False, 2)["persistent_workers"] is False
    assert kwargs("auto", 2)["persistent_workers"] is torch.cuda.is_available()
    with pytest.raises(ConfigError, match="data.persistent_workers"):
        kwargs("yes", 2)


def test_pinned_memory_follows_the_trainers_device(monkeypatch):
    """On a GPU machine a trainer=cpu run pins nothing (no CUDA context); a CUDA trainer pins and keeps workers."""
    from types import SimpleNamespace

    from vpr.data.datamodule import PlaceDataModule

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    dm = PlaceDataModule(None, "city", num_workers=2, persistent_workers="auto")
    assert dm._loader_kwargs()["pin_memory"] is True  # no trainer attached yet: CUDA's presence decides
    for device, expected in (("cpu", False), ("cuda", True)):
        dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
        kwargs = dm._loader_kwargs()
        assert kwargs["pin_memory"] is expected and kwargs["persistent_workers"] is expected


@pytest.mark.parametrize("size", [0, -2, 1.5, "abc"])
def test_a_place_group_size_below_one_is_refused_when_built(size):
    with pytest.raises(ConfigError, match=r"^data\.nms_group_size=.*: must be a whole number >= 1"):
        PlaceDataModule(None, "city", nms_group_size=size)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"eval_radius_m": 25.0, "train_radius_m": 30.0},
            r"^data\.eval_radius_m=25 is below .*data\.train_radius_m=30",
        ),
        ({"train_radius_m": 30.0, "own": 20.0}, r"^mining\.negative_radius_m=20 is below .*data\.train_radius_m=30"),
        ({"train_radius_m": 10.0, "train_min_distance_m": 12.0}, r"^data\.train_min_distance_m=12 is not below"),
        ({"own": "abc"}, r"^mining\.negative_radius_m='abc': must be a distance > 0"),
        ({"own": -5.0}, r"^mining\.negative_radius_m=-5\.0: must be a distance > 0"),
    ],
)
def test_radii_known_from_the_settings_are_compared_before_any_data_work(tmp_path, settings, message):
    """Training: radii the settings give (not the split file's) are compared when the data module is made, before
    the data is generated or read (the root does not exist; reading it would be a DataError)."""
    settings = dict(settings)
    own = settings.pop("own", None)
    mining = {"negatives_per_query": 2} | ({} if own is None else {"negative_radius_m": own})
    with pytest.raises(ConfigError, match=message):
        PlaceDataModule(str(tmp_path / "absent"), "city", mining=mining, **settings)


def test_radii_left_to_the_split_file_or_not_mined_pass_when_built(tmp_path):
    root = str(tmp_path / "absent")
    PlaceDataModule(root, "city", mining={}, eval_radius_m=5.0)  # the training radius: the split file's
    PlaceDataModule(root, "city", mining={}, train_min_distance_m=12.0)  # likewise
    PlaceDataModule(root, "city", mining={"negative_radius_m": 30.0}, eval_radius_m=5.0, train_radius_m=10.0)
    PlaceDataModule(root, "city", eval_radius_m=25.0, train_radius_m=30.0)  # a test set: nothing is mined


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("bogus", r"^mining\.bogus: no such mining setting; the settings are refresh_every_queries, "),
        (
            "negative_radius",
            r"^mining\.negative_radius: no such mining setting; did you mean mining\.negative_radius_m",
        ),
        ("negatives_per_querry", r"^mining\.negatives_per_querry: .*did you mean mining\.negatives_per_query\?"),
    ],
)
def test_an_unknown_mining_key_is_refused_before_any_data_work(tmp_path, key, message):
    """A key added with + (train.py +mining.<key>=...) that no mining part reads: refused when the data module is
    made (the root does not exist), not with a TypeError traceback once the miner is built from the read splits."""
    with pytest.raises(ConfigError, match=message):
        PlaceDataModule(str(tmp_path / "absent"), "city", mining={"negatives_per_query": 2, key: 1})


def test_every_configured_mining_key_is_known(tmp_path):
    """configs/mining/offline.yaml's keys, and the ones added with + that the miner reads, pass."""
    from vpr.api import compose_config

    mining = dict(compose_config("train", ["logger=none"]).mining)
    PlaceDataModule(str(tmp_path / "absent"), "city", mining=mining | {"negative_radius_m": 30.0, "chunk_database": 8})
