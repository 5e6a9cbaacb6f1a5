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
