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
