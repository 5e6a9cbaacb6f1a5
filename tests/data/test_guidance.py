import json

import numpy as np
import pytest
import torch
from PIL import Image

from vpr.data.guidance import GuidanceTargets, LabelSource, MaskDirLabels, SyntheticLabels, area_target
from vpr.errors import DataError


def test_area_target_hand_example():
    # 4x4 labels -> 2x2 grid: kept fraction of each 2x2 block (class 3 suppressed)
    labels = np.array([[3, 3, 1, 1], [3, 1, 1, 1], [0, 0, 3, 3], [0, 0, 3, 3]])
    want = np.array([[1 / 4, 1.0], [1.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(area_target(labels, [3], (2, 2)), want)


def test_area_target_is_not_bicubic():
    # one suppressed pixel in a 4x4 cell: area gives exactly 15/16; values always within [0, 1]
    labels = np.zeros((8, 8), dtype=np.uint8)
    labels[0, 0] = 4
    t = area_target(labels, [4], (2, 2))
    assert t[0, 0] == pytest.approx(15 / 16) and t.min() >= 0 and t.max() <= 1


def test_area_target_non_square_grid_and_nothing_suppressed():
    labels = np.zeros((4, 6), dtype=np.uint8)
    labels[:, 3:] = 10  # right half sky
    labels[0, 0] = 10
    # 2x2 cells: the top-left one has 1 of 4 suppressed, the middle column is split, the right column is sky
    want = np.array([[3 / 4, 1 / 2, 0.0], [1.0, 1 / 2, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(area_target(labels, [10], (2, 3)), want)
    np.testing.assert_allclose(area_target(labels, [], (2, 3)), np.ones((2, 3)))


def test_synthetic_groups_from_classes_json(tiny_city):
    src = SyntheticLabels(tiny_city)
    names = json.loads((tiny_city / "classes.json").read_text())
    ids = {v: int(k) for k, v in names.items()}
    assert src.group_ids("person") == [ids["person"]]
    assert src.group_ids("sky") == [ids["sky"]]
    with pytest.raises(DataError, match="unknown group"):
        src.group_ids("trees")


def test_synthetic_labels_missing_city(tmp_path):
    with pytest.raises(DataError, match="classes.json"):
        SyntheticLabels(tmp_path)


class CountingSource(LabelSource):
    name = "counting"

    def __init__(self):
        self.calls = 0

    def group_ids(self, group):
        return [1]

    def labels(self, path):
        self.calls += 1
        return np.ones((4, 6), dtype=np.uint8) * (int(path.stem) % 2)


def test_targets_computed_once_and_cached_on_disk(tmp_path):
    from pathlib import Path

    paths = [Path(f"{i}.jpg") for i in range(5)]
    src = CountingSource()
    t = GuidanceTargets(src, ["person"], paths, (2, 3), cache_dir=tmp_path)
    assert src.calls == 5
    assert t[1].shape == (1, 2, 3) and torch.all(t[1] == 0) and torch.all(t[2] == 1)
    src2 = CountingSource()
    t2 = GuidanceTargets(src2, ["person"], paths, (2, 3), cache_dir=tmp_path)
    assert src2.calls == 0 and torch.equal(t.table, t2.table)
    GuidanceTargets(src2, ["person"], paths, (1, 3), cache_dir=tmp_path)  # another grid: recomputed
    assert src2.calls == 5


@pytest.mark.parametrize("kept", [0.0, 0.3, 0.9])
def test_an_unreadable_cache_file_is_computed_again_and_replaced(tmp_path, kept):
    """A cache file cut short (a copy of the data folder interrupted) is the project's own file: the targets are
    computed again, as without it, and the file is written whole."""
    from pathlib import Path

    paths = [Path(f"{i}.jpg") for i in range(5)]
    whole = GuidanceTargets(CountingSource(), ["person"], paths, (2, 3), cache_dir=tmp_path)
    (cache,) = tmp_path.glob("guidance_*.npy")
    data = cache.read_bytes()
    cache.write_bytes(data[: int(len(data) * kept)])
    src = CountingSource()
    again = GuidanceTargets(src, ["person"], paths, (2, 3), cache_dir=tmp_path)
    assert src.calls == 5
    assert torch.equal(again.table, whole.table)
    assert torch.all(again[1] == 0) and torch.all(again[2] == 1)  # labels of odd images are all suppressed
    assert cache.read_bytes() == data


def test_mask_dir_reads_relative_paths(tmp_path):
    root, masks = tmp_path / "root", tmp_path / "masks"
    (root / "000").mkdir(parents=True)
    (masks / "000").mkdir(parents=True)
    Image.fromarray(np.full((4, 4), 11, dtype=np.uint8)).save(masks / "000" / "a.png")
    src = MaskDirLabels(masks, root, None)
    assert src.labels(root / "000" / "a.jpg").tolist() == [[11] * 4] * 4
    assert src.group_ids("person") == [11, 12]  # Cityscapes person + rider
    with pytest.raises(DataError, match="missing"):
        src.labels(root / "000" / "b.jpg")
    with pytest.raises(DataError, match="mask_dir"):
        MaskDirLabels(tmp_path / "nope", root, None)


def _mask_dir_targets(masks, root, image, cache):
    return GuidanceTargets(MaskDirLabels(masks, root, None), ["person"], [image], (2, 2), cache_dir=cache)


def test_a_mask_dir_of_other_labels_is_not_served_from_the_cache(tmp_path):
    """Two label folders for the same image: each gets its own targets, and so does a label file rewritten in place."""
    import os

    root, cache = tmp_path / "root", tmp_path / "cache"
    image = root / "000" / "a.jpg"
    image.parent.mkdir(parents=True)
    folders = {}
    for name, class_id in (("people", 11), ("road", 0)):  # 11: Cityscapes person (suppressed), 0: road (kept)
        folders[name] = tmp_path / name
        (folders[name] / "000").mkdir(parents=True)
        Image.fromarray(np.full((4, 4), class_id, dtype=np.uint8)).save(folders[name] / "000" / "a.png")
    assert _mask_dir_targets(folders["people"], root, image, cache)[0].tolist() == [[[0.0, 0.0], [0.0, 0.0]]]
    assert _mask_dir_targets(folders["road"], root, image, cache)[0].tolist() == [[[1.0, 1.0], [1.0, 1.0]]]
    # Labels of the first folder replaced in place by a road map (new contents, new time): recomputed.
    label = folders["people"] / "000" / "a.png"
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(label)
    os.utime(label, ns=(label.stat().st_atime_ns, label.stat().st_mtime_ns + 10**9))
    assert _mask_dir_targets(folders["people"], root, image, cache)[0].tolist() == [[[1.0, 1.0], [1.0, 1.0]]]


@pytest.mark.parametrize("cut", ["truncated", "text"])
def test_a_label_map_cut_short_is_one_error_naming_it_and_the_fix(tmp_path, cut):
    """A label map damaged after it was written (a copy of the city, or of guidance.mask_dir, interrupted): one
    error naming the file and how to get it back, not PIL's traceback."""
    root = tmp_path / "city"
    (root / "000").mkdir(parents=True)
    (root / "classes.json").write_text(json.dumps({"0": "sky", "1": "building", "3": "person", "4": "vehicle"}))
    image = root / "000" / "000000_pitch1_yaw1.jpg"
    Image.fromarray(np.zeros((8, 12, 3), dtype=np.uint8)).save(image)
    labels = root / "000" / "000000_pitch1_yaw1_labels.png"
    Image.fromarray(np.arange(96, dtype=np.uint8).reshape(8, 12) % 5).save(labels)  # random-looking: not tiny
    whole = labels.read_bytes()
    labels.write_bytes(whole[: len(whole) // 2] if cut == "truncated" else b"not a PNG\n")
    with pytest.raises(DataError) as city:
        SyntheticLabels(root).labels(image)
    text = str(city.value)
    assert text.startswith(f"label map {labels} (guidance=synthetic) is corrupt or not an image (")
    assert text.endswith(
        f": the city is damaged; delete {root} and the next run generates it again (or python -m "
        "vpr.data.synthetic --out ... --force)"
    )

    masks = tmp_path / "masks"
    (masks / "000").mkdir(parents=True)
    (masks / "000" / "000000_pitch1_yaw1.png").write_bytes(labels.read_bytes())
    with pytest.raises(
        DataError,
        match=r"^label map .*000000_pitch1_yaw1\.png \(guidance\.mask_dir\) is corrupt or "
        r"not an image \(.*\): write it again$",
    ):
        MaskDirLabels(masks, root, None).labels(image)


@pytest.mark.parametrize("content", ['{"0": "sky", "1": "buil', '["sky", "building"]', ""])
def test_a_damaged_class_list_of_the_city_is_one_error_naming_it_and_the_fix(tmp_path, content):
    """The city's classes.json cut short (a copy interrupted) or not a mapping: one error naming the file and the
    fix, not json's traceback."""
    (tmp_path / "classes.json").write_text(content)
    with pytest.raises(DataError) as damaged:
        SyntheticLabels(tmp_path)
    text = str(damaged.value)
    assert text.startswith(f"{tmp_path / 'classes.json'} is not the synthetic city's class list")
    assert text.endswith(
        f"the city is damaged; delete {tmp_path} and the next run generates it again (or python -m "
        "vpr.data.synthetic --out ... --force)"
    )


def test_a_label_map_with_a_damaged_chunk_is_one_error_naming_it(tmp_path):
    """A PNG damaged inside (the type of its second IDAT chunk no longer four letters, as a flipped bit leaves it):
    PIL raises SyntaxError("broken PNG file") while decoding, which ended the run in a traceback. The file is
    written by hand from the PNG specification: signature, IHDR (8x4, 8-bit grey), the pixels' zlib stream in two
    IDAT chunks, IEND."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = b"".join(b"\x00" + bytes([1] * 8) for _ in range(4))  # filter type 0, then 8 pixels of class 1
    ihdr = struct.pack(">IIBBBBB", 8, 4, 8, 0, 0, 0, 0)
    pixels = zlib.compress(rows, 0)  # stored, not compressed: the first chunk holds too few bytes for the image
    idat = chunk(b"IDAT", pixels[:10]) + chunk(b"ID\x00T", pixels[10:])
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")
    masks = tmp_path / "masks"
    (masks / "000").mkdir(parents=True)
    label = masks / "000" / "000000_pitch1_yaw1.png"
    label.write_bytes(png)
    image = tmp_path / "city" / "000" / "000000_pitch1_yaw1.jpg"
    image.parent.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 8, 3), dtype=np.uint8)).save(image)
    with pytest.raises(DataError, match=r"^label map .* \(guidance\.mask_dir\) is corrupt or not an image \(.*\): "):
        MaskDirLabels(masks, tmp_path / "city", None).labels(image)
