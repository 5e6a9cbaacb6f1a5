"""Tests for vpr/data/synthetic/: the procedural city generator."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.spatial.distance import cdist

from vpr.data import synthetic
from vpr.data.mat import load_dbstruct
from vpr.data.synthetic import (
    CityConfig,
    build_textures,
    build_world,
    generate_city,
    get_preset,
    raycast_facades,
    render_view,
)
from vpr.errors import DataError

SPLITS = ("train", "val", "test")
NAME_RE = re.compile(r"^(\d{3})/(\d{6})_pitch1_yaw(\d+)\.jpg$")


def _small(**changes) -> CityConfig:
    """An even smaller city than "tiny", for tests that generate several cities."""
    counts = dict(num_db_train=8, num_q_train=4, num_db_val=8, num_q_val=4, num_db_test=8, num_q_test=4)
    counts.update(changes)
    return dataclasses.replace(get_preset("tiny"), **counts)


def _digest_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny_city(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("city") / "tiny"
    return generate_city(root, "tiny", seed=0, progress=False, workers=1)


@pytest.fixture(scope="module")
def structs(tiny_city: Path) -> dict:
    return {split: load_dbstruct(tiny_city / "datasets" / f"city_{split}.mat") for split in SPLITS}


@pytest.fixture(scope="module")
def textures():
    return build_textures(0)


# ---------------------------------------------------------------------------------------------------------
# Layout and ground truth
# ---------------------------------------------------------------------------------------------------------


def test_layout_and_mat_files(tiny_city: Path, structs: dict) -> None:
    cfg = get_preset("tiny")
    assert json.loads((tiny_city / "classes.json").read_text()) == {
        "0": "sky",
        "1": "building",
        "2": "road",
        "3": "person",
        "4": "vehicle",
        "5": "sidewalk",
        "6": "vegetation",
    }
    manifest = json.loads((tiny_city / "city.json").read_text())
    assert manifest["seed"] == 0 and manifest["format_version"] == synthetic.FORMAT_VERSION
    assert manifest["config"]["image_width_px"] == 64
    all_names = []
    for split, s in structs.items():
        assert s.which_set == split
        assert (s.num_db, s.num_q) == (40, 20) == cfg.split_counts(split)
        assert (s.pos_dist_thr, s.pos_dist_sq_thr, s.non_triv_pos_dist_sq_thr) == (25.0, 625.0, 100.0)
        for name in s.db_image + s.q_image:
            m = NAME_RE.match(name)
            assert m, name
            assert int(m.group(1)) == int(m.group(2)) // 1000  # Pittsburgh: folder = index // 1000
            assert 1 <= int(m.group(3)) <= cfg.db_headings
        all_names += s.db_image + ["queries_real/" + q for q in s.q_image]
        # UTM-like coordinates (Pittsburgh is near 584000 E, 4477000 N)
        utm = np.concatenate([s.utm_db, s.utm_q])
        assert np.all((utm[:, 0] > 5.8e5) & (utm[:, 0] < 6.0e5) & (utm[:, 1] > 4.47e6) & (utm[:, 1] < 4.49e6))
    assert len(set(all_names)) == len(all_names)  # no two images share a file


def test_mat_files_carry_the_real_field_names(tiny_city: Path) -> None:
    import scipy.io

    record = scipy.io.loadmat(str(tiny_city / "datasets" / "city_train.mat"))["dbStruct"]
    assert record.dtype.names == (
        "whichSet",
        "dbImageFns",
        "utmDb",
        "qImageFns",
        "utmQ",
        "numImages",
        "numQueries",
        "posDistThr",
        "posDistSqThr",
        "nonTrivPosDistSqThr",
    )


def test_every_image_and_label_map_exists_with_the_right_size(tiny_city: Path, structs: dict) -> None:
    for s in structs.values():
        paths = [tiny_city / p for p in s.db_image] + [tiny_city / "queries_real" / q for q in s.q_image]
        for path in paths:
            with Image.open(path) as img:
                assert img.format == "JPEG" and img.mode == "RGB" and img.size == (64, 48)
            label_path = path.with_name(path.stem + "_labels.png")
            with Image.open(label_path) as lab:
                assert lab.format == "PNG" and lab.mode == "L" and lab.size == (64, 48)


def test_database_views_of_a_place_share_a_position(structs: dict) -> None:
    s = structs["train"]
    by_place: dict[str, list[int]] = {}
    for i, name in enumerate(s.db_image):
        by_place.setdefault(NAME_RE.match(name).group(2), []).append(i)
    assert len(by_place) == 40 // get_preset("tiny").db_headings
    for rows in by_place.values():
        assert np.ptp(s.utm_db[rows], axis=0).max() == 0.0


def test_splits_are_disjoint(structs: dict) -> None:
    points = {split: np.concatenate([s.utm_db, s.utm_q]) for split, s in structs.items()}
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert cdist(points[a], points[b]).min() > 50.0, (a, b)


def test_queries_have_a_nearby_database_image(structs: dict) -> None:
    for split, s in structs.items():
        radius = 10.0 if split == "train" else 25.0
        for q in s.utm_q:
            nearest = min(math.hypot(*(q - d)) for d in s.utm_db)  # plain loop, independent of the generator
            assert nearest <= radius, (split, q, nearest)


def test_queries_are_not_copies_of_database_views(structs: dict) -> None:
    s = structs["train"]
    d = cdist(s.utm_q, s.utm_db).min(axis=1)
    assert np.median(d) > 0.5  # queries stand elsewhere (offsets along and across the street)


def test_label_maps_contain_the_scene_classes(tiny_city: Path, structs: dict) -> None:
    seen: set[int] = set()
    with_objects = 0
    paths = [tiny_city / p for s in structs.values() for p in s.db_image]
    paths += [tiny_city / "queries_real" / q for s in structs.values() for q in s.q_image]
    for path in paths:
        lab = np.asarray(Image.open(path.with_name(path.stem + "_labels.png")))
        ids = set(np.unique(lab).tolist())
        seen |= ids
        with_objects += bool(ids & {3, 4})
    assert {0, 1, 2} <= seen  # sky, building, road
    assert {3, 4} <= seen  # people and vehicles appear somewhere
    assert seen <= set(range(7))
    assert 0.1 * len(paths) < with_objects < len(paths)  # dynamic objects in some images, not all


# ---------------------------------------------------------------------------------------------------------
# Geometry of the ray caster
# ---------------------------------------------------------------------------------------------------------


def test_raycast_against_hand_computation() -> None:
    # camera at the origin looking north (yaw 90 deg): forward = +y, right = +x
    p0 = np.array([[-4.0, 10.0]])
    p1 = np.array([[6.0, 10.0]])
    slope = np.array([-0.3, 0.0, 0.25, 0.7])  # x / f per column
    depth, seg, s = raycast_facades(np.zeros(2), math.pi / 2, p0, p1, slope)
    # a wall parallel to the image plane has the same depth 10 in every column that hits it;
    # the hit lies at x = slope * 10, i.e. s = (x + 4) / 10 along the segment
    np.testing.assert_allclose(depth[:3], 10.0)
    np.testing.assert_allclose(s[:3], [(-3.0 + 4) / 10, 0.4, 0.65])
    assert list(seg) == [0, 0, 0, -1] and math.isinf(depth[3])  # x = 7 misses the wall (ends at 6)
    # the nearer of two walls wins; a wall behind the camera is never hit
    p0b, p1b = np.array([[-4.0, 10.0], [-4.0, 5.0], [-4.0, -3.0]]), np.array([[6.0, 10.0], [6.0, 5.0], [6.0, -3.0]])
    depth, seg, _ = raycast_facades(np.zeros(2), math.pi / 2, p0b, p1b, np.array([0.0]))
    assert seg[0] == 1 and depth[0] == pytest.approx(5.0)


@pytest.mark.parametrize("supersample", [1, 2])
def test_facade_pixel_height_is_f_times_h_over_d(textures, supersample: int) -> None:
    cfg = dataclasses.replace(get_preset("default"), supersample=supersample)
    height_m = 6.0
    focal_px = (cfg.image_width_px / 2) / math.tan(math.radians(cfg.hfov_deg) / 2)  # pinhole focal length
    horizon_row = cfg.horizon_frac * cfg.image_height_px
    rows_per_depth = {}
    for d in (20.0, 10.0):
        world = build_world(
            np.array([[-30.0, d, 30.0, d + 10.0]]), np.array([height_m]), cfg, textures, np.random.default_rng(0)
        )
        _, labels = render_view(world, textures, cfg, (0.0, 0.0), math.pi / 2, with_objects=False)
        column = labels[:, cfg.image_width_px // 2]
        rows = np.nonzero(column == 1)[0]
        assert len(rows) == rows[-1] - rows[0] + 1  # one contiguous run
        assert abs(len(rows) - focal_px * height_m / d) <= 1.0
        # the facade's foot lies camera_height * f / d below the horizon
        assert abs((rows[-1] + 1) - (horizon_row + focal_px * cfg.camera_height_m / d)) <= 1.0
        assert np.all(column[: rows[0]] == 0) and np.all(column[rows[-1] + 1 :] == 6)  # sky above, ground below
        rows_per_depth[d] = len(rows)
    assert rows_per_depth[10.0] > 1.8 * rows_per_depth[20.0]  # a camera twice as close sees it twice as big


def test_facade_texture_coordinate_grows_to_the_right() -> None:
    # the south face of a counter-clockwise box runs west -> east: seen from the south, s grows rightwards
    slope = np.linspace(-0.3, 0.3, 7)
    _, seg, s = raycast_facades(
        np.array([0.0, -10.0]), math.pi / 2, np.array([[-20.0, 0.0]]), np.array([[20.0, 0.0]]), slope
    )
    assert np.all(seg == 0) and np.all(np.diff(s) > 0)


def test_objects_are_occluded_by_nearer_facades(textures) -> None:
    cfg = dataclasses.replace(get_preset("tiny"), persons_per_image=30.0, vehicles_per_image=0.0)
    # a wall 2 m in front of the camera hides everything; objects spawn at >= 3 m
    world = build_world(
        np.array([[-50.0, 2.0, 50.0, 12.0]]),
        np.array([30.0]),
        cfg,
        textures,
        np.random.default_rng(0),
        street_xs=[0.0],
        street_ys=[0.0],
    )
    _, labels = render_view(world, textures, cfg, (0.0, 0.0), math.pi / 2, rng=np.random.default_rng(1))
    assert not np.isin(labels, [3, 4]).any()
    # without the wall the same draw shows people
    open_world = build_world(
        np.array([[-50.0, 200.0, 50.0, 210.0]]),
        np.array([30.0]),
        cfg,
        textures,
        np.random.default_rng(0),
        street_xs=[0.0],
        street_ys=[0.0],
    )
    _, labels = render_view(open_world, textures, cfg, (0.0, 0.0), math.pi / 2, rng=np.random.default_rng(1))
    assert (labels == 3).any()


# ---------------------------------------------------------------------------------------------------------
# Determinism, idempotency, manifest
# ---------------------------------------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    cfg = _small()
    a = generate_city(tmp_path / "a", cfg, seed=3, progress=False, workers=1)
    # b starts as an interrupted run (its marker, a stale file, no manifest): it must be regenerated, with 2 workers
    (tmp_path / "b" / "000").mkdir(parents=True)
    (tmp_path / "b" / "000" / "000000_pitch1_yaw1.jpg").write_bytes(b"partial")
    (tmp_path / "b" / synthetic.writer.MARKER_NAME).write_text("{}")
    b = generate_city(tmp_path / "b", cfg, seed=3, progress=False, workers=2)
    digest_a, digest_b = _digest_tree(a), _digest_tree(b)
    assert digest_a == digest_b
    assert sum(n.endswith(".jpg") for n in digest_a) == 3 * (8 + 4)
    c = generate_city(tmp_path / "c", cfg, seed=4, progress=False, workers=1)
    digest_c = _digest_tree(c)
    assert digest_c["datasets/city_train.mat"] != digest_a["datasets/city_train.mat"]
    common_images = [n for n in digest_a if n.endswith(".jpg") and n in digest_c]
    assert common_images and all(digest_a[n] != digest_c[n] for n in common_images)


def test_replacing_a_city_of_other_settings_says_what_changes(tmp_path: Path, caplog) -> None:
    import dataclasses
    import logging

    cfg = _small()
    root = generate_city(tmp_path / "c", cfg, seed=3, progress=False, workers=1)
    with caplog.at_level(logging.WARNING, logger="vpr.data.synthetic"):
        generate_city(root, cfg, seed=3, progress=False, workers=1)  # the same city: nothing to say
        assert caplog.records == []
        generate_city(root, dataclasses.replace(cfg, num_q_val=cfg.num_q_val + 1), seed=4, progress=False, workers=1)
    (record,) = caplog.records
    assert "holds a synthetic city of other settings" in record.getMessage()
    assert f"num_q_val {cfg.num_q_val} -> {cfg.num_q_val + 1}" in record.getMessage()
    assert "seed 3 -> 4" in record.getMessage()


def _listed_and_written(root: Path) -> tuple[set[str], set[str]]:
    """(images the split files list, read with scipy as NetVLAD's spec lays them out; JPEGs on disk)."""
    import scipy.io

    listed = set()
    for split in SPLITS:
        s = scipy.io.loadmat(root / "datasets" / f"city_{split}.mat")["dbStruct"][0, 0]
        listed |= {str(c[0]) for c in s["dbImageFns"].ravel()}
        listed |= {"queries_real/" + str(c[0]) for c in s["qImageFns"].ravel()}
    written = {str(p.relative_to(root)) for p in root.rglob("*.jpg")}
    return listed, written


@pytest.mark.parametrize("interrupted", [False, True])
def test_a_smaller_city_replacing_a_bigger_one_leaves_none_of_its_images(tmp_path: Path, interrupted: bool) -> None:
    """The replaced city's images that the new one does not overwrite are gone: the folder holds the images its
    split files list and no others (and every listed one has its label map)."""
    big = _small(num_db_train=24, num_q_train=12, num_db_val=16, num_q_val=8)
    root = generate_city(tmp_path / "c", big, seed=0, progress=False, workers=1)
    if interrupted:  # as a run stopped before its manifest: the marker stays, the manifest is gone
        (root / "city.json").unlink()
        (root / "city.generating").write_text("{}")
    generate_city(root, _small(), seed=0, progress=False, workers=1)
    listed, written = _listed_and_written(root)
    assert len(listed) == 3 * (8 + 4) and written == listed
    labels = {str(p.relative_to(root)) for p in root.rglob("*_labels.png")}
    assert labels == {name[: -len(".jpg")] + "_labels.png" for name in listed}


def test_a_city_someone_pointed_data_root_at_is_not_replaced(tiny_city: Path, tmp_path: Path) -> None:
    """data=synthetic's replace=auto: in a folder not named for the asked-for settings the city is the user's; the
    refusal names the settings that read it as it is (the tiny preset, seed 0) and nothing is written."""
    import shutil

    mine = tmp_path / "my_city"
    shutil.copytree(tiny_city, mine)
    before = _digest_tree(mine)
    with pytest.raises(DataError) as refused:
        generate_city(mine, "default", seed=0, progress=False, replace="auto")
    message = str(refused.value)
    assert f"data.root={mine} holds a synthetic city of other settings" in message
    assert "add data.prepare.preset=tiny data.prepare.seed=0" in message
    assert _digest_tree(mine) == before


def test_the_folder_named_for_the_settings_is_replaced_with_a_warning(tiny_city: Path, tmp_path: Path, caplog) -> None:
    """There a city of other settings is one an older generator wrote (here: a manifest of another seed)."""
    import logging
    import shutil

    named = tmp_path / "city_tiny_seed1"
    shutil.copytree(tiny_city, named)
    with caplog.at_level(logging.WARNING, logger="vpr.data.synthetic"):
        generate_city(named, "tiny", seed=1, progress=False, workers=1, replace="auto")
    assert "holds a synthetic city of other settings (seed 0 -> 1): replacing it" in caplog.text
    assert json.loads((named / "city.json").read_text())["seed"] == 1


def test_second_call_is_fast_and_does_not_rewrite(tiny_city: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in tiny_city.rglob("*") if p.is_file()}
    start = time.perf_counter()
    assert generate_city(tiny_city, "tiny", seed=0, progress=False) == tiny_city
    assert time.perf_counter() - start < 0.5
    assert {p: p.stat().st_mtime_ns for p in tiny_city.rglob("*") if p.is_file()} == before


def test_manifest_is_written_last(tiny_city: Path) -> None:
    manifest_time = (tiny_city / "city.json").stat().st_mtime_ns
    others = [p.stat().st_mtime_ns for p in tiny_city.rglob("*") if p.is_file() and p.name != "city.json"]
    assert manifest_time >= max(others)


def test_interrupted_generation_leaves_no_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _small()
    root = generate_city(tmp_path / "c", cfg, seed=0, progress=False, workers=1)
    assert (root / "city.json").exists()

    def crash(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(synthetic.writer, "save_dbstruct", crash)  # looked up in the writer module
    with pytest.raises(RuntimeError, match="killed"):
        generate_city(root, cfg, seed=1, progress=False, workers=1)  # another seed: must regenerate
    assert not (root / "city.json").exists()  # the half-written city does not look complete


def test_interrupted_generation_is_resumed_by_the_next_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _small()

    def crash(*args, **kwargs):
        raise RuntimeError("killed")

    with monkeypatch.context() as m:
        m.setattr(synthetic.writer, "save_dbstruct", crash)
        with pytest.raises(RuntimeError, match="killed"):
            generate_city(tmp_path / "c", cfg, seed=0, progress=False, workers=1)
    assert (tmp_path / "c" / synthetic.writer.MARKER_NAME).exists()  # the folder says it is ours
    root = generate_city(tmp_path / "c", cfg, seed=0, progress=False, workers=1)
    assert (root / "city.json").exists() and not (root / synthetic.writer.MARKER_NAME).exists()


def test_refuses_a_folder_of_other_files_and_touches_nothing(tmp_path: Path) -> None:
    root = tmp_path / "pittsburgh"
    (root / "000").mkdir(parents=True)
    (root / "000" / "000000_pitch1_yaw1.jpg").write_bytes(b"a real image")
    (root / "notes.txt").write_text("mine")
    before = _digest_tree(root)
    with pytest.raises(DataError, match=r"refusing to write the synthetic city into .*pittsburgh.*notes\.txt"):
        generate_city(root, _small(), seed=0, progress=False, workers=1)
    assert _digest_tree(root) == before and sorted(p.name for p in root.iterdir()) == ["000", "notes.txt"]
    assert synthetic.main(["--out", str(root), "--preset", "tiny", "--quiet"]) == 2
    assert _digest_tree(root) == before


def test_a_city_whose_manifest_was_cut_short_is_refused_with_the_fix_and_touched_nowhere(tmp_path: Path) -> None:
    """A city copied with an interrupted copy: its city.json cut short. The folder is not provably this generator's,
    so nothing is replaced, and the refusal says what the folder's own city.json is and how to have the city
    generated again (it said the folder held no city.json, listing city.json among its files)."""
    root = tmp_path / "city_tiny_seed0"
    (root / "000").mkdir(parents=True)
    (root / "000" / "000000_pitch1_yaw1.jpg").write_bytes(b"an image of the city")
    manifest = json.dumps({"format_version": 1, "generator": "vpr.data.synthetic", "seed": 0, "config": {}})
    (root / "city.json").write_text(manifest[:25])
    before = _digest_tree(root)
    with pytest.raises(DataError) as refused:
        generate_city(root, "tiny", seed=0, progress=False, workers=1)
    assert str(refused.value) == (
        f"refusing to write the synthetic city into {root}: its city.json is not the manifest of a city of this "
        "generator (cut short by an interrupted copy?). Nothing was written. If the folder is a synthetic city, "
        "delete it and the next run generates it again; otherwise point data.root (or paths.data_dir, or --out) at "
        "an empty or new folder."
    )
    assert _digest_tree(root) == before


def test_cli_is_idempotent_on_an_existing_city(tiny_city: Path) -> None:
    assert synthetic.main(["--out", str(tiny_city), "--preset", "tiny", "--seed", "0", "--quiet"]) == 0
    with pytest.raises(SystemExit):
        synthetic.main(["--out", str(tiny_city), "--preset", "huge"])


def test_a_negative_seed_is_refused_before_anything_is_written(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        synthetic.main(["--out", str(tmp_path / "city"), "--preset", "tiny", "--seed", "-3"])
    assert "'-3' is not a whole number >= 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"data.prepare.seed=-3"):
        generate_city(tmp_path / "city", "tiny", seed=-3, progress=False)
    assert not (tmp_path / "city").exists()


@pytest.mark.parametrize("replace", ["maybe", "flase", ""])
def test_a_replace_that_is_no_switch_is_refused_before_anything_is_written(tmp_path: Path, replace) -> None:
    """data.prepare.replace=flase was taken as true: a city of other settings in the folder would be replaced."""
    from vpr.errors import ConfigError

    with pytest.raises(
        ConfigError, match=rf"^data\.prepare\.replace={re.escape(repr(replace))}: choose auto .*, true or false$"
    ):
        generate_city(tmp_path / "city", "tiny", seed=0, progress=False, replace=replace)
    assert not (tmp_path / "city").exists()


@pytest.mark.parametrize(
    ("option", "value", "says"), [("--workers", "0", ">= 1"), ("--workers", "-3", ">= 1"), ("--seed", "\u00b2", ">= 0")]
)
def test_a_bad_number_is_refused_before_anything_is_written(tmp_path: Path, capsys, option, value, says) -> None:
    with pytest.raises(SystemExit) as exit_:
        synthetic.main(["--out", str(tmp_path / "city"), "--preset", "tiny", "--quiet", f"{option}={value}"])
    assert exit_.value.code == 2 and f"{value!r} is not a whole number {says}" in capsys.readouterr().err
    assert not (tmp_path / "city").exists()


def test_a_preview_name_without_an_image_extension_is_refused_before_generating(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        synthetic.main(["--out", str(tmp_path / "city"), "--preset", "tiny", "--quiet", "--preview", "sheet.txt"])
    assert exit_.value.code == 2 and "--preview sheet.txt" in capsys.readouterr().err
    assert not (tmp_path / "city").exists()


def test_a_preview_that_cannot_be_written_is_one_error_line(tiny_city: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "a_file").write_text("x")
    sheet = tmp_path / "a_file" / "sheet.png"  # below a regular file
    assert synthetic.main(["--out", str(tiny_city), "--preset", "tiny", "--quiet", "--preview", str(sheet)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: --preview {sheet}") and not any("Traceback" in line for line in err)


def test_an_unwritable_out_ends_with_one_error_line(tmp_path: Path, capsys) -> None:
    """A folder that cannot be made (here: below a regular file) is exit status 2 and one error line naming it."""
    (tmp_path / "a_file").write_text("x")
    out = tmp_path / "a_file" / "city"
    assert synthetic.main(["--out", str(out), "--preset", "tiny", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(out) in err[0]


def test_a_write_failing_during_generation_ends_with_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A disk that fills up while the images are written: exit status 2, one error line naming the folder and the
    cause; the city stays marked incomplete."""
    import errno

    from vpr.data.synthetic import writer

    def full(state, task):
        raise OSError(errno.ENOSPC, "No space left on device", str(state["root"] / task[-1]))

    monkeypatch.setattr(writer, "_render_task", full)
    out = tmp_path / "city"
    assert synthetic.main(["--out", str(out), "--preset", "tiny", "--quiet", "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --out {out}") and "No space left on device" in err[0]
    assert (out / writer.MARKER_NAME).exists() and not (out / "city.json").exists()


# ---------------------------------------------------------------------------------------------------------
# Presets, config, preview
# ---------------------------------------------------------------------------------------------------------


def test_presets() -> None:
    default, large = get_preset("default"), get_preset("large")
    assert (default.image_width_px, default.image_height_px) == (160, 120)
    assert default.split_counts("train") == (1200, 600) and default.split_counts("val") == (400, 200)
    assert (large.image_width_px, large.image_height_px) == (640, 480)
    assert large.split_counts("test") == (10000, 7500)
    with pytest.raises(ValueError, match="unknown synthetic city preset"):
        get_preset("huge")


def test_large_preset_works_with_reduced_counts(tmp_path: Path) -> None:
    cfg = dataclasses.replace(
        get_preset("large"), num_db_train=4, num_q_train=2, num_db_val=4, num_q_val=2, num_db_test=4, num_q_test=2
    )
    root = generate_city(tmp_path / "large", cfg, seed=0, progress=False, workers=1)
    s = load_dbstruct(root / "datasets" / "city_val.mat")
    with Image.open(root / "queries_real" / s.q_image[0]) as img:
        assert img.size == (640, 480)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"hfov_deg": 200.0}, "hfov_deg"),
        ({"num_db_val": 0}, "num_db_val"),
        ({"block_min_m": 20.0}, "block_min_m"),
        ({"district_gap_m": 30.0}, "district_gap_m"),
    ],
)
def test_invalid_config_names_the_setting(tmp_path: Path, change: dict, field: str) -> None:
    cfg = dataclasses.replace(get_preset("tiny"), **change)
    with pytest.raises(ValueError, match=rf"CityConfig\.{field}"):
        generate_city(tmp_path / "bad", cfg, progress=False)
    assert not (tmp_path / "bad").exists()


def test_preview_contact_sheet(tiny_city: Path, tmp_path: Path) -> None:
    out = synthetic.make_preview(tiny_city, tmp_path / "sheet.png", split="val", pairs=3, scale=1)
    with Image.open(out) as sheet:
        assert sheet.size == (4 * 64 + 3 * 4, 3 * 48 + 2 * 4)  # 4 tiles per row, 4 px gaps


SIGNALLED_CLI = """
import os, signal, sys
from vpr.data.synthetic import cli, writer
render, done = writer._render_task, []
def render_then_signal(state, task):  # the signal arrives while the images are rendered
    render(state, task)
    done.append(task)
    if len(done) == 5:
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
writer._render_task = render_then_signal
sys.exit(cli.main(["--out", sys.argv[2], "--preset", "tiny", "--workers", "1", "--quiet"]))
"""


@pytest.mark.parametrize(("sig", "status", "says"), [("SIGTERM", 143, "stopped by SIGTERM"), ("SIGINT", 130, "")])
def test_a_signal_during_generation_ends_with_one_line_and_the_next_run_generates_it(
    tmp_path: Path, sig: str, status: int, says: str
) -> None:
    """SIGTERM (a scheduler's time limit, ``kill``) during the generation ends it as Ctrl-C does: one error line,
    its own exit status (128 + 15), the folder marked incomplete; it ended the process with no word. The same
    command then generates the city."""
    import subprocess
    import sys

    out = tmp_path / "city"
    proc = subprocess.run(
        [sys.executable, "-c", SIGNALLED_CLI, sig, str(out)], capture_output=True, text=True, timeout=120
    )
    says = says or "interrupted (Ctrl-C)"
    assert proc.returncode == status, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        f"error: {says}: {out} stays marked incomplete and is generated again by the next run of this command (or "
        "of a script that uses it)"
    ]
    assert (out / synthetic.writer.MARKER_NAME).exists() and not (out / "city.json").exists()
    assert synthetic.main(["--out", str(out), "--preset", "tiny", "--quiet"]) == 0
    assert (out / "city.json").exists() and not (out / synthetic.writer.MARKER_NAME).exists()
