"""data=folder: <root>/<split>/{database,queries}/ with UTM coordinates in the file names, as the benchmark's
downloaders name them ('@<east>@<north>@<zone>@...@.jpg'); files written here by hand from that scheme."""

from __future__ import annotations

import numpy as np
import pytest

from vpr.data.dataset import load_folder_split, parse_utm_filename
from vpr.errors import DataError


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_coordinates_come_from_the_names(tmp_path):
    touch(tmp_path / "test" / "database" / "@585001.50@4477002.25@17@T@40.44@-79.99@@@@@@pitts@.jpg")
    touch(tmp_path / "test" / "database" / "@585100.00@4477000.00@17@T@@@@@@@@.jpg")
    touch(tmp_path / "test" / "queries" / "@585001.00@4477001.00@17@T@@@@@@@@.jpg")
    split = load_folder_split(tmp_path, "test", name="mine")
    np.testing.assert_array_equal(split.db_utm, [[585001.50, 4477002.25], [585100.00, 4477000.00]])
    np.testing.assert_array_equal(split.q_utm, [[585001.0, 4477001.0]])
    assert split.dataset == "mine" and split.num_db == 2 and split.num_q == 1


@pytest.mark.parametrize("name", ["@1.0@nan@.jpg", "@inf@2.0@.jpg", "photo.jpg", "@east@north@.jpg"])
def test_names_without_finite_coordinates_are_named(tmp_path, name):
    with pytest.raises(DataError, match=name.replace(".", r"\.")):
        parse_utm_filename(tmp_path / name)


def test_root_not_set_or_without_the_folders(tmp_path):
    with pytest.raises(DataError, match="data.root is not set"):
        load_folder_split(None, "test")
    with pytest.raises(DataError, match="must hold 'database/' and 'queries/'"):
        load_folder_split(tmp_path, "test")
    # database/ and queries/ directly under the root: the split setting that reads them is named
    touch(tmp_path / "database" / "@585001.0@4477001.0@.jpg")
    touch(tmp_path / "queries" / "@585002.0@4477001.0@.jpg")
    with pytest.raises(DataError, match=r"itself holds them: .*data\.splits\.test=\."):
        load_folder_split(tmp_path, "test")
    assert load_folder_split(tmp_path, ".").num_db == 1


def test_a_root_one_level_off_names_the_folder_holding_the_splits(tmp_path):
    """The benchmark unpacks as <dataset>/images/<split>/{database,queries}: data.root=<dataset> (one level too
    high) or data.root=<dataset>/images/test/database (too low) named no folder; the error names images/."""
    images = tmp_path / "pitts30k" / "images"
    touch(images / "test" / "database" / "@585001.0@4477001.0@.jpg")
    touch(images / "test" / "queries" / "@585002.0@4477001.0@.jpg")
    fix = rf"; {images} holds test/database: set data\.root={images} \(data\.root is the dataset's top folder\)$"
    for wrong in (tmp_path / "pitts30k", images / "test" / "database", images / "test" / "queries"):
        with pytest.raises(DataError, match=fix):
            load_folder_split(wrong, "test")
    with pytest.raises(DataError, match="; check data.root$"):
        load_folder_split(tmp_path / "pitts30k", "val")  # no val split anywhere near
    assert load_folder_split(images, "test").num_db == 1


def _haversine_m(a, b):
    """Great-circle distance in metres between (lat, lon) degree pairs, the textbook formula."""
    import math

    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(math.sqrt(h))


def test_gps_names_are_refused_as_metres_and_read_with_coordinates_latlon(tmp_path):
    places = {
        "database": [(40.4404491, -79.9871271), (40.4406000, -79.9869000), (40.4500000, -79.9700000)],
        "queries": [(40.4405500, -79.9871000)],
    }
    for folder, points in places.items():
        for i, (lat, lon) in enumerate(points):
            touch(tmp_path / "test" / folder / f"@{lat}@{lon}@{i:04d}@.jpg")
    with pytest.raises(DataError, match=r"latitude and longitude in degrees.*data\.coordinates=latlon"):
        load_folder_split(tmp_path, "test")
    split = load_folder_split(tmp_path, "test", coordinates="latlon")
    db_names = sorted(p.name for p in (tmp_path / "test" / "database").iterdir())
    db_points = [next(pt for i, pt in enumerate(places["database"]) if f"@{i:04d}@" in n) for n in db_names]
    for d, point in enumerate(db_points):
        want = _haversine_m(places["queries"][0], point)
        assert np.linalg.norm(split.db_utm[d] - split.q_utm[0]) == pytest.approx(want, rel=1e-3)
    assert [len(p) for p in split.eval_positives()] == [2]  # 11.5 m and 17.8 m away; the third 1.8 km
    with pytest.raises(DataError, match="data.coordinates=gps: choose utm"):
        load_folder_split(tmp_path, "test", coordinates="gps")


def test_utm_names_are_refused_as_degrees(tmp_path):
    """data.coordinates=latlon on the benchmark's UTM names: 585001 is no latitude, so no distance can be computed
    from them (read on, every query would be kilometres from every database image and every recall 0)."""
    touch(tmp_path / "test" / "database" / "@585001.50@4477002.25@17@T@40.44@-79.99@@@@@@pitts@.jpg")
    touch(tmp_path / "test" / "database" / "@585101.50@4477002.25@17@T@40.44@-79.99@@@@@@pitts@.jpg")
    touch(tmp_path / "test" / "queries" / "@585004.00@4477006.00@17@T@40.44@-79.99@@@@@@pitts@.jpg")
    with pytest.raises(DataError, match=r"data\.coordinates=latlon.*3 of the 3 file names.*data\.coordinates=utm"):
        load_folder_split(tmp_path, "test", coordinates="latlon")
    # Tokyo's longitude (139.7) read as a latitude: names with longitude first
    touch(tmp_path / "tokyo" / "database" / "@139.7000@35.6900@.jpg")
    touch(tmp_path / "tokyo" / "queries" / "@35.6901@139.7001@.jpg")
    with pytest.raises(DataError, match=r"1 of the 2 file names .* e\.g\. @139\.7000@35\.6900@\.jpg"):
        load_folder_split(tmp_path, "tokyo", coordinates="latlon")
    # lat/lon on both ends of their ranges are degrees
    touch(tmp_path / "edge" / "database" / "@-90@180@.jpg")
    touch(tmp_path / "edge" / "queries" / "@90@-180@.jpg")
    assert load_folder_split(tmp_path, "edge", coordinates="latlon").num_q == 1


def test_hidden_files_beside_the_photos_are_not_read(tmp_path):
    """macOS writes ``._<name>`` beside every file it copies to a disk without its metadata, so each photo of a
    copied benchmark has a twin whose name carries the same coordinates; a zip made there holds them under
    ``__MACOSX/``. They are not images and are left out, as are other hidden files and folders."""
    touch(tmp_path / "test" / "database" / "@585001.00@4477002.00@17@T@@@@@@@@.jpg")
    touch(tmp_path / "test" / "database" / "._@585001.00@4477002.00@17@T@@@@@@@@.jpg")
    touch(tmp_path / "test" / "database" / "__MACOSX" / "._@585001.00@4477002.00@17@T@@@@@@@@.jpg")
    touch(tmp_path / "test" / "queries" / "@585003.00@4477001.00@17@T@@@@@@@@.jpg")
    touch(tmp_path / "test" / "queries" / ".cache" / "@585003.00@4477001.00@17@T@@@@@@@@.jpg")
    split = load_folder_split(tmp_path, "test")
    assert [p.name for p in split.db_paths] == ["@585001.00@4477002.00@17@T@@@@@@@@.jpg"]
    assert [p.relative_to(tmp_path).as_posix() for p in split.q_paths] == [
        "test/queries/@585003.00@4477001.00@17@T@@@@@@@@.jpg"
    ]


def test_photos_in_linked_folders_are_read(tmp_path):
    """database/ holding links to folders on another disk: their photos are read (``Path.rglob`` did not enter
    them, and they were left out without a word)."""
    elsewhere = tmp_path / "disk2" / "part2"
    touch(elsewhere / "@585101.00@4477000.00@17@T@@@@@@@@.jpg")
    touch(tmp_path / "test" / "database" / "part1" / "@585001.00@4477002.00@17@T@@@@@@@@.jpg")
    (tmp_path / "test" / "database" / "part2").symlink_to(elsewhere, target_is_directory=True)
    touch(tmp_path / "test" / "queries" / "@585003.00@4477001.00@17@T@@@@@@@@.jpg")
    split = load_folder_split(tmp_path, "test")
    assert [p.relative_to(tmp_path / "test" / "database").as_posix() for p in split.db_paths] == [
        "part1/@585001.00@4477002.00@17@T@@@@@@@@.jpg",
        "part2/@585101.00@4477000.00@17@T@@@@@@@@.jpg",
    ]
    np.testing.assert_array_equal(split.db_utm, [[585001.0, 4477002.0], [585101.0, 4477000.0]])
