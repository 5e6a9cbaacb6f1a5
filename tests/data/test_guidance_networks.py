"""Guidance from segmentation networks: the paper's DeepLabV3+ (guidance=deeplab_cityscapes, its released weight
file) and any TorchScript export (guidance=torchscript). Targets come out per image on the feature grid, cached on
disk; a missing or unusable file is one clear error naming it."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from tests.conftest import compose_script, run_script, the_error_line
from tests.models.test_deeplab import random_state, save_checkpoint
from vpr.data.guidance import GuidanceTargets, build_label_source
from vpr.errors import ConfigError, DataError

GRID = (3, 4)


def city_images(tiny_city, n=4):
    return sorted((tiny_city / "database").rglob("*.jpg"))[:n] or sorted(tiny_city.rglob("*.jpg"))[:n]


def hand_target(labels, suppressed, grid):
    """Kept fraction of every grid cell, by a loop over cells (the image size is a multiple of the grid here or
    cells take floor/ceil bounds as adaptive pooling does)."""
    h, w = labels.shape
    out = np.zeros(grid, dtype=np.float64)
    for i in range(grid[0]):
        for j in range(grid[1]):
            r0, r1 = (i * h) // grid[0], -(-((i + 1) * h) // grid[0])
            c0, c1 = (j * w) // grid[1], -(-((j + 1) * w) // grid[1])
            cell = labels[r0:r1, c0:c1]
            out[i, j] = np.mean(~np.isin(cell, suppressed))
    return out


def deeplab_file(path, winner):
    """The released file's layout (model_state beside the training state), with the last 1x1 convolution's weights
    zero and its bias one-hot: every pixel's arg-max is class ``winner``."""
    sd = random_state(seed=3)
    sd["classifier.classifier.3.weight"] = torch.zeros_like(sd["classifier.classifier.3.weight"])
    bias = torch.zeros(19)
    bias[winner] = 5.0
    sd["classifier.classifier.3.bias"] = bias
    save_checkpoint(path, sd)


@pytest.mark.parametrize(
    "winner, suppress, expected",
    [
        (10, ["person", "vehicle"], 1.0),  # sky everywhere, sky kept: the paper's first models
        (10, ["person", "vehicle", "sky"], 0.0),  # sky suppressed: the final model
        (12, ["person"], 0.0),  # rider is a person
        (16, ["vehicle"], 0.0),  # train is a vehicle
        (0, ["person", "vehicle", "sky"], 1.0),  # road is never suppressed
    ],
    ids=["sky-kept", "sky-suppressed", "rider", "train", "road"],
)
def test_deeplab_cityscapes_targets_follow_the_cityscapes_classes(tiny_city, tmp_path, winner, suppress, expected):
    """Cityscapes train ids (sky 10, person 11, rider 12, car 13 ... bicycle 18) through guidance=deeplab_cityscapes."""
    deeplab_file(tmp_path / "best_deeplabv3plus_mobilenet_cityscapes_os16.pth", winner)
    weights = tmp_path / "best_deeplabv3plus_mobilenet_cityscapes_os16.pth"
    cfg = compose_script("train", "attention=deattention", "guidance=deeplab_cityscapes", f"guidance.weights={weights}")
    guidance = OmegaConf.to_container(cfg.guidance, resolve=True)
    source = build_label_source(guidance, tiny_city)
    paths = city_images(tiny_city, 2)
    labels = source.labels(paths[0])
    assert labels.shape == Image.open(paths[0]).size[::-1] and np.all(labels == winner)
    targets = GuidanceTargets(source, suppress, paths, GRID, cache_dir=tmp_path / "cache")
    assert targets.table.shape == (2, *GRID) and torch.all(targets.table == expected)


def test_deeplab_cityscapes_targets_are_cached_per_weight_file(tiny_city, tmp_path, monkeypatch):
    deeplab_file(tmp_path / "a.pth", 11)
    paths = city_images(tiny_city, 3)
    guidance = {"source": "deeplab_cityscapes", "weights": str(tmp_path / "a.pth")}
    GuidanceTargets(build_label_source(guidance, tiny_city), ["person"], paths, GRID, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("guidance_deeplab_cityscapes_*.npy"))) == 1
    source = build_label_source(guidance, tiny_city)
    monkeypatch.setattr(source, "labels", lambda p: pytest.fail("recomputed a cached target"))
    cached = GuidanceTargets(source, ["person"], paths, GRID, cache_dir=tmp_path / "cache")
    assert torch.all(cached.table == 0)
    deeplab_file(tmp_path / "b.pth", 0)  # other weights: other targets, not the cached ones
    other = GuidanceTargets(
        build_label_source({**guidance, "weights": str(tmp_path / "b.pth")}, tiny_city),
        ["person"],
        paths,
        GRID,
        cache_dir=tmp_path / "cache",
    )
    assert torch.all(other.table == 1)


class ColourSegmenter(torch.nn.Module):
    """Class c wins where the normalised red channel is nearest CENTRES[c]."""

    def __init__(self):
        super().__init__()
        self.register_buffer("centres", torch.linspace(-2.2, 2.3, 19).view(1, 19, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -(x[:, :1] - self.centres).abs()


class DictSegmenter(ColourSegmenter):
    """The same scores in a dict under "out" (the form of torchvision's segmentation models)."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": -(x[:, :1] - self.centres).abs()}


def export(module, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript export is deprecated; loading stays supported
        torch.jit.save(torch.jit.script(module), str(path))


@pytest.mark.parametrize("as_dict", [False, True], ids=["tensor", "dict"])
def test_torchscript_targets_equal_a_hand_computation(tiny_city, tmp_path, as_dict):
    export(DictSegmenter() if as_dict else ColourSegmenter(), tmp_path / "seg.pt")
    groups = {"person": [3, 4], "vehicle": [7], "sky": [15, 16, 17, 18]}
    mean, std = [0.5, 0.4, 0.3], [0.25, 0.2, 0.2]
    guidance = {
        "source": "torchscript",
        "model": str(tmp_path / "seg.pt"),
        "class_groups": groups,
        "mean": mean,
        "std": std,
    }
    paths = city_images(tiny_city, 3)
    targets = GuidanceTargets(
        build_label_source(guidance, tiny_city), ["person", "sky"], paths, GRID, cache_dir=tmp_path / "cache"
    )
    centres = np.linspace(-2.2, 2.3, 19)
    for i, p in enumerate(paths):
        red = (np.asarray(Image.open(p).convert("RGB"), dtype=np.float64)[..., 0] / 255.0 - mean[0]) / std[0]
        labels = np.abs(red[..., None] - centres).argmin(-1)
        want = hand_target(labels, [3, 4, 15, 16, 17, 18], GRID)
        np.testing.assert_allclose(targets.table[i].numpy(), want, atol=1e-5)
    assert 0.0 < float(targets.table.mean()) < 1.0  # the hand case is not trivial
    assert len(list((tmp_path / "cache").glob("guidance_torchscript_*.npy"))) == 1


def test_torchscript_settings_are_checked(tiny_city, tmp_path):
    export(ColourSegmenter(), tmp_path / "seg.pt")
    with pytest.raises(DataError, match="guidance.model=PATH"):
        build_label_source({"source": "torchscript", "class_groups": {"person": [1]}}, tiny_city)
    with pytest.raises(DataError, match="missing.pt: no such file"):
        build_label_source({"source": "torchscript", "model": str(tmp_path / "missing.pt")}, tiny_city)
    (tmp_path / "junk.pt").write_text("not a network")
    with pytest.raises(DataError, match="junk.pt is not a TorchScript"):
        build_label_source(
            {"source": "torchscript", "model": str(tmp_path / "junk.pt"), "class_groups": {"person": [1]}}, tiny_city
        )
    with pytest.raises(DataError, match="class_groups"):
        build_label_source({"source": "torchscript", "model": str(tmp_path / "seg.pt")}, tiny_city)
    with pytest.raises(ConfigError, match="nothere.pth: no such file"):
        build_label_source({"source": "deeplab_cityscapes", "weights": str(tmp_path / "nothere.pth")}, tiny_city)


def test_missing_deeplab_weights_is_one_error_line(data_dir, tmp_path):
    missing = tmp_path / "best_deeplabv3plus_mobilenet_cityscapes_os16.pth"
    proc = run_script(
        "train.py",
        "experiment=city_deattention",
        "data.prepare.preset=tiny",
        f"paths.data_dir={data_dir}",
        "guidance=deeplab_cityscapes",
        f"guidance.weights={missing}",
        "logger=none",
        f"cluster.file={tmp_path / 'centroids.hdf5'}",  # none yet: k-means would run first
        "trainer.max_epochs=1",
        f"hydra.run.dir={tmp_path / 'run'}",
        tmp=tmp_path,
        check=False,
    )
    error = the_error_line(proc)
    assert str(missing) in error and "weight_semantic_guidance" in error
    out = proc.stdout + proc.stderr
    assert "clustering now" not in out and "budget per epoch" not in out  # refused before any of the run's work


def test_default_cityscapes_groups_are_the_train_ids():
    from vpr.data.guidance import CITYSCAPES_GROUPS

    assert CITYSCAPES_GROUPS == {"person": [11, 12], "vehicle": [13, 14, 15, 16, 17, 18], "sky": [10]}


def test_pictures_never_download_torchvisions_model(tmp_path, monkeypatch):
    """eval.py's pictures ask for the label source without download: torchvision's weights must already be in the
    torch cache, and nothing reaches for the network otherwise."""
    import torch.hub

    def no_network(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(DataError, match="not downloaded for pictures"):
        build_label_source({"source": "torchvision"}, tmp_path, download=False)
    with pytest.raises(DataError, match="could not be loaded"):  # with download: the attempt (refused here)
        build_label_source({"source": "torchvision"}, tmp_path)
