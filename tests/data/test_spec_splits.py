"""Splits read from NetVLAD dataset specs on disk: image folders, Tokyo's .jpg/.png, capture times, messages."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from tests.data.spec_files import pittsburgh_like, spec_fields, tokyo247_like, write_v5
from vpr.data.datamodule import PlaceDataModule
from vpr.data.dataset import load_mat_split
from vpr.errors import DataError


def rewrite(mat: Path, source: Path | None = None, **fields) -> None:
    """``mat`` written again (MATLAB v5) with the dbStruct of ``source`` (default: itself), ``fields`` replaced."""
    record = scipy.io.loadmat(str(source or mat))["dbStruct"][0, 0]
    write_v5(mat, {**{f: record[f] for f in record.dtype.names}, **fields})


def test_pittsburgh_layout(tmp_path: Path) -> None:
    ds = pittsburgh_like(tmp_path, num_places=2)
    s = load_mat_split(tmp_path, "pitts30k", "test")
    assert s.db_paths == [tmp_path / n for n in ds.db_names]
    assert s.q_paths == [tmp_path / "queries_real" / n for n in ds.q_names]
    np.testing.assert_array_equal(s.db_utm, ds.utm_db)
    assert (s.eval_radius_m, s.train_radius_m) == (25.0, 10.0)
    assert s.db_time is None and not s.spatial_nms


def test_tokyo_png_on_disk_and_no_training_radius(tmp_path: Path) -> None:
    ds = tokyo247_like(tmp_path, num_places=2)
    s = load_mat_split(
        tmp_path,
        "tokyo247",
        "test",
        split_file="tokyo247.mat",
        db_dir="database_gsv_vga",
        query_dir="247query_subset_v2",
        spatial_nms=True,
        nms_group_size=12,
    )
    assert ds.db_names[0].endswith(".jpg")
    assert s.db_paths == [tmp_path / "database_gsv_vga" / Path(n).with_suffix(".png") for n in ds.db_names]
    assert all(p.is_file() for p in s.db_paths + s.q_paths)
    assert s.q_paths[0].suffix == ".jpg"
    assert s.train_radius_m == 10.0  # the file has no nonTrivPosDistSqThr
    np.testing.assert_array_equal(s.nms_groups(), np.repeat([0, 1], 12))


def test_image_folders_are_settings(tmp_path: Path) -> None:
    pittsburgh_like(tmp_path / "root", num_places=2)
    shutil.move(tmp_path / "root" / "queries_real", tmp_path / "elsewhere")
    with pytest.raises(DataError, match=r"queries_real.*listed in .*pitts30k_test\.mat is missing.*data\.query_dir"):
        load_mat_split(tmp_path / "root", "pitts30k", "test")
    s = load_mat_split(tmp_path / "root", "pitts30k", "test", query_dir=str(tmp_path / "elsewhere"))
    assert all(p.is_file() for p in s.q_paths)


def test_incomplete_image_folder(tmp_path: Path) -> None:
    ds = pittsburgh_like(tmp_path, num_places=2)
    (tmp_path / ds.db_names[2]).unlink()  # neither the first nor the last: every image is checked
    with pytest.raises(DataError, match=rf"1 of the 6 images .* are missing .*{ds.db_names[2]}.*incomplete"):
        load_mat_split(tmp_path, "pitts30k", "test")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"numImages": np.array([[5.0]])}, r"pitts30k_test\.mat: dbStruct\.numImages = 5 but dbImageFns lists 6"),
        ({"utmDb": np.zeros((2, 4))}, r"pitts30k_test\.mat: dbStruct\.utmDb has shape \(2, 4\)"),
    ],
)
def test_malformed_spec_is_a_data_error(tmp_path: Path, change: dict, message: str) -> None:
    pittsburgh_like(tmp_path, num_places=2)
    rewrite(tmp_path / "datasets" / "pitts30k_test.mat", **change)
    with pytest.raises(DataError, match=message):
        load_mat_split(tmp_path, "pitts30k", "test")


def test_capture_times_reach_the_split(tmp_path: Path) -> None:
    pittsburgh_like(tmp_path, name="tokyoTM", split="train", num_places=2)
    times = {
        "dbTimeStamp": np.array([[2009.0, 2011.0, 2009.0, 2009.0, 2011.0, 2011.0]]),
        "qTimeStamp": np.array([[2009.0, 2011.0]]),
    }
    rewrite(tmp_path / "datasets" / "tokyoTM_train.mat", **times)
    s = load_mat_split(tmp_path, "tokyoTM", "train")
    np.testing.assert_array_equal(s.db_time, times["dbTimeStamp"][0])
    np.testing.assert_array_equal(s.q_time, times["qTimeStamp"][0])
    # query 0 (time 2009) at place 0 (database 0, 1, 2 within 10 m): only database 1 was taken at another time.
    assert list(s.train_positives()[0]) == [1]
    assert list(s.train_positives()[1]) == [3]


def test_evaluation_only_datamodule(tmp_path: Path) -> None:
    tokyo247_like(tmp_path, num_places=2)
    dm = PlaceDataModule(
        str(tmp_path),
        "tokyo247",
        splits={"train": None, "val": None, "test": "test"},
        split_file="tokyo247.mat",
        db_dir="database_gsv_vga",
        query_dir="247query_subset_v2",
        num_workers=0,
    )
    dm.setup("test")
    assert dm.test_split.num_db == 24
    with pytest.raises(DataError, match=r"tokyo247 has no train split.*evaluation-only"):
        dm.setup("fit")


def test_a_file_whose_whichset_is_another_split_is_read_with_a_warning(tmp_path, caplog):
    import logging

    pittsburgh_like(tmp_path, split="train", num_places=2)
    (tmp_path / "datasets" / "pitts30k_train.mat").rename(tmp_path / "datasets" / "pitts30k_test.mat")
    with caplog.at_level(logging.WARNING, logger="vpr.data.dataset"):
        load_mat_split(tmp_path, "pitts30k", "test")
    assert "says whichSet='train' but is read as the test split" in caplog.text
    caplog.clear()
    pittsburgh_like(tmp_path / "right", split="test", num_places=2)
    with caplog.at_level(logging.WARNING, logger="vpr.data.dataset"):
        load_mat_split(tmp_path / "right", "pitts30k", "test")
    assert "whichSet" not in caplog.text


def test_a_root_one_level_too_deep_names_its_parent(tmp_path):
    pittsburgh_like(tmp_path, num_places=2)
    with pytest.raises(DataError, match=rf"set data.root={tmp_path} \(the folder holding datasets/\)"):
        load_mat_split(tmp_path / "datasets", "pitts30k", "test")


def test_a_root_one_level_off_names_the_folder_holding_the_split_files(tmp_path):
    """data.root given as the folder above the dataset (/data for /data/pittsburgh) or as one of its image folders
    (000/, queries_real/, queries_real/000/): the error named only the file it looked for; it names the root."""
    root = tmp_path / "pittsburgh"
    pittsburgh_like(root, num_places=2)
    (tmp_path / "tokyo").mkdir()  # another dataset beside it: not a candidate, not looked into
    fix = rf"{root} holds datasets/pitts30k_test\.mat: set data\.root={root} \(data\.root is the dataset's top folder\)"
    for wrong in (tmp_path, root / "000", root / "queries_real", root / "queries_real" / "000"):
        with pytest.raises(DataError, match=fix):
            load_mat_split(wrong, "pitts30k", "test")
    # two copies below: both named
    pittsburgh_like(tmp_path / "copy", num_places=2)
    with pytest.raises(
        DataError, match=rf"Folders in it that hold datasets/pitts30k_test\.mat: {tmp_path / 'copy'}, {root}:"
    ):
        load_mat_split(tmp_path, "pitts30k", "test")
    # nothing above or below: no folder named
    with pytest.raises(DataError) as e:
        load_mat_split(tmp_path / "tokyo", "pitts30k", "test")
    assert "set data.root" not in str(e.value) and "holds datasets" not in str(e.value)


def test_images_in_a_sibling_folder_are_pointed_at(tmp_path):
    """Tokyo 24/7's queries unpack as 247query_subset_v2 in some copies and 247query_v3 in others."""
    tokyo247_like(tmp_path)
    (tmp_path / "247query_subset_v2").rename(tmp_path / "247query_v3")
    with pytest.raises(DataError, match=r"It is in .*247query_v3: set data\.query_dir=247query_v3"):
        load_mat_split(
            tmp_path,
            "tokyo247",
            "test",
            split_file="tokyo247.mat",
            db_dir="database_gsv_vga",
            query_dir="247query_subset_v2",
        )


def test_tokyotm_training_positives_lie_more_than_a_metre_away(tmp_path: Path) -> None:
    """NetVLAD's TokyoTM protocol: a non-trivial positive is at another capture time AND more than 1 m away."""
    from hydra.utils import instantiate

    from tests.conftest import compose_script

    pittsburgh_like(tmp_path, name="tokyoTM", split="train", num_places=2)
    mat = tmp_path / "datasets" / "tokyoTM_train.mat"
    rewrite(mat.with_name("tokyoTM_val.mat"), source=mat, whichSet="val")  # setup("fit") reads val too
    record = scipy.io.loadmat(str(mat))["dbStruct"][0, 0]
    utm_q = record["utmQ"].astype(float)
    utm_db = record["utmDb"].astype(float)  # 2 x 6: place 0 = database 0, 1, 2; query 0 is 4 m from database 0
    utm_db[:, 0] = utm_q[:, 0] + [0.5, 0.0]  # 0.5 m from query 0: too close to be non-trivial
    utm_db[:, 1] = utm_q[:, 0] + [0.0, 1.0]  # exactly 1 m: not more than 1 m, also out
    utm_db[:, 2] = utm_q[:, 0] + [3.0, 0.0]  # 3 m: a positive
    rewrite(mat, dbTimeStamp=np.array([[2011.0] * 6]), qTimeStamp=np.array([[2009.0, 2009.0]]), utmDb=utm_db)

    cfg = compose_script(
        "train",
        "data=tokyotm",
        f"data.root={tmp_path}",
        "data.num_workers=0",
        "data.db_dir=''",
        "data.query_dir=queries_real",
    )
    assert cfg.data.train_min_distance_m == 1
    dm = instantiate(cfg.data, _convert_="object")
    dm.setup("fit")
    assert list(dm.train_split.train_positives()[0]) == [2]
    # Without the bound (Pittsburgh's setting), all three are positives, nearest first.
    s = load_mat_split(tmp_path, "tokyoTM", "train")
    assert list(s.train_positives()[0]) == [0, 1, 2]


def test_image_paths_with_windows_separators_name_folders(tmp_path: Path) -> None:
    """A split file written on Windows lists 000\\a.jpg: the image a.jpg in the folder 000, as the / spelling."""
    from PIL import Image

    for rel in ("000/a.jpg", "001/b.jpg", "queries_real/000/q.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / rel)

    fields = spec_fields(
        "test", ["000\\a.jpg", "001\\b.jpg"], [[0.0, 0.0], [100.0, 0.0]], ["000\\q.jpg"], [[3.0, 4.0]], 100.0
    )
    write_v5(tmp_path / "datasets" / "pitts30k_test.mat", fields)
    s = load_mat_split(tmp_path, "pitts30k", "test")
    assert s.db_paths == [tmp_path / "000" / "a.jpg", tmp_path / "001" / "b.jpg"]
    assert s.q_paths == [tmp_path / "queries_real" / "000" / "q.jpg"]
    assert [p.tolist() for p in s.eval_positives()] == [[0]]  # 5 m from a.jpg, 100 m from b.jpg


def _first_of_three_images_missing(root: Path, sep: str) -> None:
    """A Pittsburgh test split listing 000<sep>a.jpg (absent), 000<sep>b.jpg and 001<sep>c.jpg (present)."""
    from PIL import Image

    for rel in ("000/b.jpg", "001/c.jpg", "queries_real/000/q.jpg"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(root / rel)
    fields = spec_fields(
        "test",
        [f"000{sep}a.jpg", f"000{sep}b.jpg", f"001{sep}c.jpg"],
        [[0.0, 0.0], [5.0, 0.0], [100.0, 0.0]],
        [f"000{sep}q.jpg"],
        [[3.0, 4.0]],
        100.0,
    )
    write_v5(root / "datasets" / "pitts30k_test.mat", fields)


@pytest.mark.parametrize("sep", ["/", "\\"])
def test_a_missing_first_image_is_one_missing_image_not_a_wrong_folder(tmp_path: Path, sep: str) -> None:
    """Of three listed database images the first is gone, the other two are there: the folder is right and one
    image is missing, which the message counts and names (not advice to point data.db_dir elsewhere). With
    Windows separators (000\\a.jpg) the images listed next tell that they are folders."""
    _first_of_three_images_missing(tmp_path, sep)
    with pytest.raises(
        DataError, match=r"^1 of the 3 images listed in .* \(000/a\.jpg\) while b\.jpg is there: .*incomplete"
    ):
        load_mat_split(tmp_path, "pitts30k", "test")
    (tmp_path / "000" / "b.jpg").rename(tmp_path / "000" / "a.jpg")  # now the second is missing, the first there
    with pytest.raises(DataError, match=r"^1 of the 3 images listed in .* \(000/b\.jpg\) while a\.jpg is there"):
        load_mat_split(tmp_path, "pitts30k", "test")


@pytest.mark.parametrize("db_dir", ["", "database_gsv_vga"])
def test_absolute_image_paths_of_another_machine_are_named(tmp_path: Path, db_dir: str) -> None:
    """A converter wrote the images' absolute paths on its own machine: they are not here, and no data.db_dir
    can place them; the message says so (with data.db_dir set it was a traceback of Path.relative_to)."""
    (tmp_path / "database_gsv_vga").mkdir()
    absolute = ["/home/someone/tokyo/database_gsv_vga/a.jpg", "/home/someone/tokyo/database_gsv_vga/b.jpg"]
    fields = spec_fields("test", absolute, [[0.0, 0.0], [50.0, 0.0]], ["q.jpg"], [[1.0, 0.0]])
    write_v5(tmp_path / "datasets" / "tokyo247.mat", fields)
    with pytest.raises(
        DataError,
        match=r"tokyo247\.mat lists absolute image paths \(dbImageFns: /home/someone/tokyo/database_gsv_vga/a\.jpg\)",
    ):
        load_mat_split(tmp_path, "tokyo247", "test", split_file="tokyo247.mat", db_dir=db_dir)


def test_a_damaged_split_file_of_a_generated_city_says_how_to_generate_it_again(tmp_path: Path) -> None:
    """A split file cut short after the city was generated (a copy of the data folder interrupted): the city counts
    as complete (its manifest and split files are there), so the error names the file and the fix, delete the
    folder to have it generated again. A dataset that is not a generated city gets no such advice."""
    pittsburgh_like(tmp_path / "pitts", num_places=2)
    mat = tmp_path / "pitts" / "datasets" / "pitts30k_test.mat"
    mat.write_bytes(mat.read_bytes()[:300])
    with pytest.raises(DataError, match=r"pitts30k_test\.mat is not a readable MATLAB") as plain:
        load_mat_split(tmp_path / "pitts", "pitts30k", "test")
    assert "synthetic city" not in str(plain.value)

    (tmp_path / "pitts" / "city.json").write_text('{"format_version": 1, "generator": "vpr.data.synthetic"}')
    with pytest.raises(DataError) as city:
        load_mat_split(tmp_path / "pitts", "pitts30k", "test")
    text = str(city.value)
    assert "pitts30k_test.mat is not a readable MATLAB" in text
    assert f"{tmp_path / 'pitts'} is a generated synthetic city: delete the folder" in text
    assert f".. {tmp_path}" not in text  # one full stop between the two
