"""Guidance targets computed by a DataLoader: worker processes reading label maps, a network run on batches (one
call per image size, one image at a time for a network that takes no batch), and DDP shards that add up to the
whole table. Every table is compared with a loop over grid cells written here."""

from __future__ import annotations

import datetime
import functools
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.data.test_guidance_networks import ColourSegmenter, export, hand_target
from vpr.data.guidance import GuidanceTargets, MaskDirLabels, build_label_source, compute_targets
from vpr.errors import DataError, user_message

GRID = (3, 4)
PERSON = [11, 12]  # Cityscapes train ids of person and rider, MaskDirLabels' default groups


@pytest.fixture
def mask_dir(tmp_path):
    """Seven images (never opened) and their label maps: PNGs of Cityscapes train ids, 12 x 16 and 9 x 10 pixels."""
    root, masks = tmp_path / "root", tmp_path / "masks"
    rng = np.random.default_rng(0)
    images, labels = [], []
    for i in range(7):
        shape = (12, 16) if i % 3 else (9, 10)
        ids = rng.choice([0, 2, 8, 10, 11, 12, 13], size=shape).astype(np.uint8)
        (masks / "000").mkdir(parents=True, exist_ok=True)
        Image.fromarray(ids).save(masks / "000" / f"{i:03d}.png")
        images.append(root / "000" / f"{i:03d}.jpg")
        labels.append(ids)
    return root, masks, images, labels


@pytest.mark.parametrize("workers", [0, 2])
def test_label_maps_read_by_loader_workers_give_the_hand_targets(mask_dir, tmp_path, workers):
    root, masks, images, labels = mask_dir
    targets = GuidanceTargets(MaskDirLabels(masks, root, None), ["person"], images, GRID, num_workers=workers)
    for i, ids in enumerate(labels):
        np.testing.assert_allclose(targets.table[i].numpy(), hand_target(ids, PERSON, GRID), atol=1e-6)
    assert 0.0 < float(targets.table.mean()) < 1.0


def test_a_missing_label_map_in_a_worker_is_one_message_naming_it(mask_dir):
    root, masks, images, _ = mask_dir
    (masks / "000" / "004.png").unlink()
    with pytest.raises(DataError) as err:
        compute_targets(MaskDirLabels(masks, root, None), images, PERSON, GRID, num_workers=2)
    message = user_message(err.value)
    assert "004.png" in message and "missing under guidance.mask_dir" in message
    assert "\n" not in message and "Traceback" not in message


def test_ranks_compute_their_share_and_the_shares_add_up(mask_dir, tmp_path):
    """Rank r computes images r, r + 3, ...; combine (the sum over ranks under DDP) gives every image its target;
    only rank 0 writes the cache."""
    root, masks, images, labels = mask_dir
    source = MaskDirLabels(masks, root, None)
    shares = [compute_targets(source, images, PERSON, GRID, shard=(rank, 3)) for rank in range(3)]
    for rank, share in enumerate(shares):
        for i in range(len(images)):
            if i % 3 != rank:
                assert not share[i].any()  # left to the other ranks
    others = shares[1] + shares[2]
    cache = tmp_path / "cache"
    rank1 = GuidanceTargets(
        source, ["person"], images, GRID, cache, shard=(1, 3), combine=lambda t, failure: t + shares[0]
    )
    assert not cache.exists()
    rank0 = GuidanceTargets(
        source, ["person"], images, GRID, cache, shard=(0, 3), combine=lambda t, failure: t + others
    )
    for i, ids in enumerate(labels):
        want = hand_target(ids, PERSON, GRID)
        np.testing.assert_allclose(rank0.table[i].numpy(), want, atol=1e-6)
    np.testing.assert_allclose(rank1.table.numpy(), rank0.table.numpy() - shares[2], atol=1e-6)
    assert len(list(cache.glob("*.npy"))) == 1
    with pytest.raises(ValueError, match="combine"):
        GuidanceTargets(source, ["person"], images, GRID, shard=(0, 2))


class BatchOfOne(ColourSegmenter):
    """The colour segmenter, refusing a batch of more than one image (as a network exported for one does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != 1:
            raise RuntimeError("this network takes one image")
        return -(x[:, :1] - self.centres).abs()


def colour_labels(path, mean, std):
    centres = np.linspace(-2.2, 2.3, 19)
    red = (np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)[..., 0] / 255.0 - mean) / std
    return np.abs(red[..., None] - centres).argmin(-1)


@pytest.fixture
def two_sizes(tiny_city, tmp_path):
    """Three city images and two smaller copies, interleaved: a loader batch holds both sizes."""
    originals = sorted(tiny_city.rglob("*.jpg"))[:3]
    small = []
    for i, p in enumerate(originals[:2]):
        out = tmp_path / f"small{i}.png"
        with Image.open(p) as im:
            im.convert("RGB").resize((im.width // 2 + 3, im.height // 2 + 1)).save(out)
        small.append(out)
    return [originals[0], small[0], originals[1], small[1], originals[2]]


@pytest.mark.parametrize("network", [ColourSegmenter, BatchOfOne], ids=["batched", "one-at-a-time"])
@pytest.mark.parametrize("workers", [0, 2])
def test_network_targets_on_batches_of_mixed_sizes_equal_a_hand_loop(tmp_path, two_sizes, caplog, network, workers):
    export(network(), tmp_path / "seg.pt")
    guidance = {"source": "torchscript", "model": str(tmp_path / "seg.pt"), "class_groups": {"person": [3, 4, 5]}}
    source = build_label_source(guidance, tmp_path, device="cpu")
    with caplog.at_level(logging.WARNING, logger="vpr.data.guidance"):
        table = compute_targets(source, two_sizes, [3, 4, 5], GRID, num_workers=workers, batch_size=5)
    for i, p in enumerate(two_sizes):
        want = hand_target(colour_labels(p, 0.485, 0.229), [3, 4, 5], GRID)
        np.testing.assert_allclose(table[i], want, atol=1e-5)
    assert 0.0 < float(table.mean()) < 1.0
    refused = [r for r in caplog.records if "refused a batch" in r.getMessage()]
    assert len(refused) == (1 if network is BatchOfOne else 0)


def test_a_torch_export_program_made_for_one_image(tmp_path, tiny_city):
    """A .pt2 exported with a batch of 1 is specialised to it: its targets still come out, one image at a time."""
    paths = sorted(tiny_city.rglob("*.jpg"))[:3]
    with Image.open(paths[0]) as im:
        size = (im.height, im.width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(ColourSegmenter(), (torch.zeros(1, 3, *size),))
        torch.export.save(program, str(tmp_path / "seg.pt2"))
    guidance = {"source": "torchscript", "model": str(tmp_path / "seg.pt2"), "class_groups": {"person": [3, 4, 5]}}
    table = compute_targets(build_label_source(guidance, tmp_path, device="cpu"), paths, [3, 4, 5], GRID)
    for i, p in enumerate(paths):
        want = hand_target(colour_labels(p, 0.485, 0.229), [3, 4, 5], GRID)
        np.testing.assert_allclose(table[i], want, atol=1e-5)


def _rank_process(rank: int, store: str, root, masks, images, out, caches=None) -> None:
    """One of two gloo processes: the guidance targets of ``images`` in shares, or the error it ended with.
    ``caches``: each rank's cache folder (as on node-local disks)."""
    import json
    import traceback

    import torch.distributed as dist

    from vpr.data.datamodule import _rank_zero_says, _sum_over_ranks

    # a time limit: a process left waiting for one that stopped fails the test instead of hanging it
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=60)
    )
    try:
        combine = functools.partial(_sum_over_ranks, device=torch.device("cpu"))
        targets = GuidanceTargets(
            MaskDirLabels(masks, root, None),
            ["person"],
            images,
            GRID,
            caches[rank] if caches else None,
            shard=(rank, 2),
            combine=combine,
            agree=_rank_zero_says,
        )
        np.save(out / f"rank{rank}.npy", targets.table.numpy())
    except Exception as e:
        (out / f"rank{rank}.json").write_text(json.dumps([type(e).__name__, user_message(e), traceback.format_exc()]))
    finally:
        dist.destroy_process_group()


def _two_ranks(tmp_path, mask_dir, caches=None, name="out") -> Path:
    import torch.multiprocessing as mp

    root, masks, images, _ = mask_dir
    out = tmp_path / name
    out.mkdir()
    store = str(tmp_path / f"store_{name}")
    mp.start_processes(_rank_process, args=(store, root, masks, images, out, caches), nprocs=2, start_method="spawn")
    return out


@pytest.mark.ddp
def test_two_gloo_processes_add_their_shares_into_the_whole_table(tmp_path, mask_dir):
    _, _, _, labels = mask_dir
    out = _two_ranks(tmp_path, mask_dir)
    for rank in range(2):
        table = np.load(out / f"rank{rank}.npy")
        for i, ids in enumerate(labels):
            np.testing.assert_allclose(table[i], hand_target(ids, PERSON, GRID), atol=1e-6)


@pytest.mark.ddp
def test_a_share_that_fails_stops_every_process_with_its_message(tmp_path, mask_dir):
    """Image 3 is in process 1's share: process 1 ends with its own error, process 0 with one naming process 1,
    instead of waiting for it in the sum (or failing on a closed connection)."""
    import json

    _, masks, _, _ = mask_dir
    (masks / "000" / "003.png").unlink()
    out = _two_ranks(tmp_path, mask_dir)
    first = json.loads((out / "rank0.json").read_text())
    second = json.loads((out / "rank1.json").read_text())
    assert second[0] == "DataError" and "003.png" in second[1] and "missing under guidance.mask_dir" in second[1]
    assert first[0] == "DataError" and first[1] == f"guidance targets of DDP process 1: {second[1]}"


def test_label_maps_that_cannot_be_class_ids_of_their_image_are_refused(tmp_path):
    """An RGB (colour-coded) PNG, and one transposed against its image, are one error each naming the file; a map
    at twice the image's resolution is taken."""
    root, masks = tmp_path / "root", tmp_path / "masks"
    (root / "000").mkdir(parents=True)
    (masks / "000").mkdir(parents=True)
    Image.new("RGB", (16, 12)).save(root / "000" / "a.jpg")  # 12 rows, 16 columns
    source = MaskDirLabels(masks, root, None)
    Image.fromarray(np.zeros((12, 16, 3), dtype=np.uint8)).save(masks / "000" / "a.png")
    with pytest.raises(DataError, match=r"a.png \(guidance.mask_dir\) has 3 channels"):
        source.labels(root / "000" / "a.jpg")
    Image.fromarray(np.zeros((16, 12), dtype=np.uint8)).save(masks / "000" / "a.png")
    with pytest.raises(DataError, match=r"a.png \(guidance.mask_dir\) is 16x12 \(h x w\) for the 12x16 image"):
        source.labels(root / "000" / "a.jpg")
    Image.fromarray(np.full((24, 32), 11, dtype=np.uint8)).save(masks / "000" / "a.png")
    assert source.labels(root / "000" / "a.jpg").shape == (24, 32)


def test_mask_dir_paths_are_compared_resolved(tmp_path, monkeypatch):
    """data.root given relative and the images absolute (an absolute data.db_dir): the same label maps; an image
    outside data.root is one error."""
    root, masks = tmp_path / "root", tmp_path / "masks"
    (masks / "000").mkdir(parents=True)
    Image.fromarray(np.full((4, 4), 11, dtype=np.uint8)).save(masks / "000" / "a.png")
    monkeypatch.chdir(tmp_path)
    source = MaskDirLabels("masks", "root", None)
    assert source.label_file(root / "000" / "a.jpg").resolve() == (masks / "000" / "a.png").resolve()
    assert source.labels(root / "000" / "a.jpg").tolist() == [[11] * 4] * 4
    with pytest.raises(DataError, match="is not under data.root"):
        source.labels(tmp_path / "elsewhere" / "a.jpg")
    # an image folder linked into data.root from elsewhere keeps its path under data.root
    (tmp_path / "store" / "000").mkdir(parents=True)
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "000").symlink_to(tmp_path / "store" / "000")
    linked = MaskDirLabels("masks", "linked", None)
    assert linked.labels(tmp_path / "linked" / "000" / "a.jpg").tolist() == [[11] * 4] * 4
    # and data.root itself reached through a link, the images named by their real path
    (tmp_path / "root_link").symlink_to(root, target_is_directory=True)
    root.mkdir(exist_ok=True)
    through = MaskDirLabels("masks", "root_link", None)
    assert through.label_file((root / "000" / "a.jpg").resolve()).resolve() == (masks / "000" / "a.png").resolve()


class ChannelsLast(ColourSegmenter):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (-(x[:, :1] - self.centres).abs()).permute(0, 2, 3, 1)


class FiveClasses(ColourSegmenter):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -(x[:, :1] - self.centres[:, :5]).abs()


@pytest.mark.parametrize(
    "network, says",
    [(ChannelsLast, "the last two dimensions must be the image's rows and columns"), (FiveClasses, "scores 5 classes")],
    ids=["channels-last", "too-few-classes"],
)
def test_network_outputs_that_cannot_be_class_scores_of_the_image_are_refused(tmp_path, tiny_city, network, says):
    export(network(), tmp_path / "seg.pt")
    guidance = {"source": "torchscript", "model": str(tmp_path / "seg.pt"), "class_groups": {"person": [11, 12]}}
    source = build_label_source(guidance, tmp_path, device="cpu")
    with pytest.raises(DataError, match=says):
        compute_targets(source, sorted(tiny_city.rglob("*.jpg"))[:2], [11, 12], GRID)


def test_a_networks_targets_are_computed_again_for_an_image_rewritten_in_place(tmp_path, tiny_city):
    import os

    export(ColourSegmenter(), tmp_path / "seg.pt")
    guidance = {"source": "torchscript", "model": str(tmp_path / "seg.pt"), "class_groups": {"person": [3, 4, 5]}}
    image = tmp_path / "img.png"
    with Image.open(sorted(tiny_city.rglob("*.jpg"))[0]) as im:
        im.convert("RGB").save(image)
    cache = tmp_path / "cache"

    def targets():
        return GuidanceTargets(build_label_source(guidance, tmp_path, device="cpu"), ["person"], [image], GRID, cache)

    before = targets().table
    Image.new("RGB", Image.open(image).size, (255, 0, 0)).save(image)  # red everywhere: one class
    os.utime(image, ns=(1, 1))  # an older time than before, and another size: the identity changes anyway
    after = targets().table
    want = hand_target(colour_labels(image, 0.485, 0.229), [3, 4, 5], GRID)
    np.testing.assert_allclose(after[0].numpy(), want, atol=1e-5)
    assert not torch.equal(before, after) and len(list(cache.glob("*.npy"))) == 2


def test_auto_guidance_takes_a_given_mask_dir_over_the_citys_own_labels(tiny_city, tmp_path):
    (tmp_path / "masks").mkdir()
    source = build_label_source({"source": "auto", "mask_dir": str(tmp_path / "masks")}, tiny_city, device="cpu")
    assert isinstance(source, MaskDirLabels)
    assert build_label_source({"source": "auto"}, tiny_city, device="cpu").name == "synthetic"


@pytest.mark.ddp
@pytest.mark.parametrize("holder", [0, 1], ids=["rank0-has-it", "rank1-has-it"])
def test_ranks_that_see_different_caches_follow_rank_0(tmp_path, mask_dir, holder):
    """Each rank with a cache folder of its own (node-local disks), only one holding the targets: the ranks do as
    rank 0 found (load, or compute shares and add them up) instead of waiting in different collectives."""
    root, masks, images, labels = mask_dir
    caches = [tmp_path / "cache0", tmp_path / "cache1"]
    GuidanceTargets(MaskDirLabels(masks, root, None), ["person"], images, GRID, caches[holder])
    (cached,) = caches[holder].glob("*.npy")
    np.save(cached, np.load(cached) * 0 + 0.5)  # marked: a table that came from the cache reads 0.5 everywhere
    out = _two_ranks(tmp_path, mask_dir, caches=caches)
    assert not list(out.glob("*.json")), [p.read_text() for p in out.glob("*.json")]
    for rank in range(2):
        table = np.load(out / f"rank{rank}.npy")
        if holder == 0 and rank == 0:
            assert np.all(table == 0.5)  # rank 0 loaded it
        else:
            for i, ids in enumerate(labels):
                np.testing.assert_allclose(table[i], hand_target(ids, PERSON, GRID), atol=1e-6)


def test_a_networks_targets_of_a_photo_with_an_exif_orientation_are_those_of_the_upright_photo(tmp_path, tiny_city):
    """Training reads a photo upright (EXIF orientation 6: turn its pixels 90 degrees clockwise); its guidance
    targets must be computed on the same upright pixels, not on the stored sideways ones."""
    export(ColourSegmenter(), tmp_path / "seg.pt")
    with Image.open(sorted(tiny_city.rglob("*.jpg"))[0]) as im:
        upright = np.asarray(im.convert("RGB"))
    Image.fromarray(upright).save(tmp_path / "upright.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(np.rot90(upright, k=1))).save(tmp_path / "phone.png", exif=exif)
    guidance = {"source": "torchscript", "model": str(tmp_path / "seg.pt"), "class_groups": {"person": [3, 4, 5]}}
    source = build_label_source(guidance, tmp_path, device="cpu")
    table = compute_targets(source, [tmp_path / "phone.png"], [3, 4, 5], GRID)
    want = hand_target(colour_labels(tmp_path / "upright.png", 0.485, 0.229), [3, 4, 5], GRID)
    np.testing.assert_allclose(table[0], want, atol=1e-5)
    assert 0.0 < float(want.mean()) < 1.0
