"""Tests for vpr/data/mat.py: the Pittsburgh dbStruct reader/writer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from tests.data.spec_files import spec_fields, write_v73
from vpr.data import mat as mat_module
from vpr.data.mat import DbStruct, dbstruct_from_loadmat, load_dbstruct, save_dbstruct

# The field order of the real NetVLAD dataset specs (pitts30k_train.mat, ...), written out by hand.
PITTS_FIELD_ORDER = (
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
# The names older files (and the PyTorch baseline's variables) use for four of them.
OLD_NAMES = {"dbImageFns": "dbImage", "qImageFns": "qImage", "numImages": "numDb", "numQueries": "numQ"}
OLD_FIELD_ORDER = tuple(OLD_NAMES.get(f, f) for f in PITTS_FIELD_ORDER)

DB_PATHS = ["000/000000_pitch1_yaw1.jpg", "000/000000_pitch1_yaw2.jpg", "001/001234_pitch2_yaw12.jpg"]
Q_PATHS = ["000/000007_pitch1_yaw3.jpg", "003/003001_pitch1_yaw11.jpg"]
UTM_DB = np.array([[584100.25, 4477200.5], [584100.25, 4477200.5], [585001.0, 4478002.75]])
UTM_Q = np.array([[584103.0, 4477190.0], [585010.5, 4478000.0]])


def _example() -> DbStruct:
    return DbStruct("train", DB_PATHS, UTM_DB, Q_PATHS, UTM_Q, 25.0, 625.0, 100.0)


def _matlab_like_record(
    fields: tuple[str, ...] = PITTS_FIELD_ORDER, num_db: float = 3.0, extra: dict | None = None
) -> np.ndarray:
    """A dbStruct built the way MATLAB's own files load: a 1x1 structured array of 1x1-wrapped fields,
    N x 1 object cells whose entries are 1-element char arrays, 2 x N double coordinates. ``fields`` are
    the names to write, real or old (each old name stands for the real field at the same position)."""
    values = {
        "whichSet": np.array(["train"]),
        "dbImageFns": np.empty((3, 1), dtype=object),
        "utmDb": np.array([[584100.25, 584100.25, 585001.0], [4477200.5, 4477200.5, 4478002.75]]),
        "qImageFns": np.empty((2, 1), dtype=object),
        "utmQ": np.array([[584103.0, 585010.5], [4477190.0, 4478000.0]]),
        "numImages": np.array([[num_db]]),
        "numQueries": np.array([[2.0]]),
        "posDistThr": np.array([[25.0]]),
        "posDistSqThr": np.array([[625.0]]),
        "nonTrivPosDistSqThr": np.array([[100.0]]),
    }
    for i, p in enumerate(DB_PATHS):
        values["dbImageFns"][i, 0] = np.array([p])
    for i, p in enumerate(Q_PATHS):
        values["qImageFns"][i, 0] = np.array([p])
    real_of = {OLD_NAMES.get(f, f): f for f in PITTS_FIELD_ORDER}
    values.update(extra or {})
    record = np.empty((1, 1), dtype=[(name, object) for name in fields])
    for name in fields:
        record[0, 0][name] = values[real_of.get(name, name)]
    return record


def _assert_is_example(s: DbStruct) -> None:
    assert s.which_set == "train"
    assert s.db_image == DB_PATHS
    assert s.q_image == Q_PATHS
    assert s.num_db == 3 and s.num_q == 2
    np.testing.assert_array_equal(s.utm_db, UTM_DB)
    np.testing.assert_array_equal(s.utm_q, UTM_Q)
    assert (s.pos_dist_thr, s.pos_dist_sq_thr, s.non_triv_pos_dist_sq_thr) == (25.0, 625.0, 100.0)


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "datasets" / "city_train.mat"  # parent folder does not exist yet
    save_dbstruct(path, _example())
    loaded = load_dbstruct(path)
    _assert_is_example(loaded)
    assert loaded == _example()


def test_saved_layout_matches_matlab(tmp_path: Path) -> None:
    path = tmp_path / "x.mat"
    save_dbstruct(path, _example())
    raw = scipy.io.loadmat(str(path))
    record = raw["dbStruct"]
    assert record.shape == (1, 1)
    assert record.dtype.names == PITTS_FIELD_ORDER
    rec = record[0, 0]
    assert rec["dbImageFns"].shape == (3, 1)  # N x 1 cell
    assert str(rec["dbImageFns"][2, 0][0]) == DB_PATHS[2]
    assert rec["utmDb"].shape == (2, 3)  # 2 x numImages: first row eastings
    np.testing.assert_array_equal(rec["utmDb"][0], UTM_DB[:, 0])
    np.testing.assert_array_equal(rec["utmQ"][1], UTM_Q[:, 1])
    assert rec["numImages"].item() == 3 and rec["numQueries"].item() == 2
    assert rec["numImages"].dtype == np.float64 and rec["posDistThr"].shape == (1, 1)  # MATLAB doubles
    assert str(rec["whichSet"][0]) == "train"


def test_reads_matlab_like_file(tmp_path: Path) -> None:
    path = tmp_path / "matlab_like.mat"
    scipy.io.savemat(str(path), {"dbStruct": _matlab_like_record(), "other": np.eye(2)})
    _assert_is_example(load_dbstruct(path))


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"squeeze_me": True},
        {"struct_as_record": False},
        {"squeeze_me": True, "struct_as_record": False},
        {"simplify_cells": True},
        {"chars_as_strings": False},
        {"chars_as_strings": False, "squeeze_me": True},
    ],
)
def test_parser_accepts_every_loadmat_nesting(tmp_path: Path, options: dict) -> None:
    path = tmp_path / "matlab_like.mat"
    scipy.io.savemat(str(path), {"dbStruct": _matlab_like_record()})
    _assert_is_example(dbstruct_from_loadmat(scipy.io.loadmat(str(path), **options)["dbStruct"], path))


def test_one_entry_cells_survive_squeeze(tmp_path: Path) -> None:
    # squeeze_me collapses a 1x1 cell to its string and a 2x1 matrix to a vector: still one image.
    s = DbStruct("val", ["a/b.jpg"], [[1.0, 2.0]], ["q.jpg"], [[3.0, 4.0]])
    path = tmp_path / "one.mat"
    save_dbstruct(path, s)
    for options in ({"squeeze_me": True}, {"squeeze_me": True, "chars_as_strings": False}):
        got = dbstruct_from_loadmat(scipy.io.loadmat(str(path), **options)["dbStruct"], path)
        assert got.db_image == ["a/b.jpg"] and got.q_image == ["q.jpg"]
        np.testing.assert_array_equal(got.utm_db, [[1.0, 2.0]])


def test_empty_query_list_round_trips(tmp_path: Path) -> None:
    s = DbStruct("test", ["x.jpg"], [[5.0, 6.0]], [], np.zeros((0, 2)))
    save_dbstruct(tmp_path / "e.mat", s)
    got = load_dbstruct(tmp_path / "e.mat")
    assert got.q_image == [] and got.utm_q.shape == (0, 2) and got.num_q == 0


def _write_v73(path: Path, *, with_struct: bool = True, drop: str | None = None, old_names: bool = False) -> None:
    """A MATLAB v7.3-style file (see tests/data/spec_files.py): the example's fields, or no struct at all."""
    if with_struct:
        write_v73(path, {k: v for k, v in _spec(names=OLD_NAMES if old_names else None).items() if k != drop})
        return
    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset("somethingElse", data=np.zeros((2, 2)))
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .")


@pytest.mark.parametrize("old_names", [False, True])
def test_reads_v73_hdf5(tmp_path: Path, old_names: bool) -> None:
    path = tmp_path / "v73.mat"
    _write_v73(path, old_names=old_names)
    _assert_is_example(load_dbstruct(path))


def test_v73_errors_name_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "v73_nostruct.mat"
    _write_v73(path, with_struct=False)
    with pytest.raises(ValueError, match=r"v73_nostruct\.mat.*dbStruct"):
        load_dbstruct(path)
    path = tmp_path / "v73_nofield.mat"
    _write_v73(path, drop="utmQ")
    with pytest.raises(ValueError, match=r"v73_nofield\.mat.*`utmQ`"):
        load_dbstruct(path)


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError, match="does_not_exist.mat"):
        load_dbstruct("/nonexistent_dir/does_not_exist.mat")


def test_not_a_mat_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.mat"
    path.write_text("this is a text file, not MATLAB\n" * 20)
    with pytest.raises(ValueError, match=r"notes\.mat.*not a readable MATLAB"):
        load_dbstruct(path)


def test_no_dbstruct(tmp_path: Path) -> None:
    path = tmp_path / "other.mat"
    scipy.io.savemat(str(path), {"foo": np.arange(3)})
    with pytest.raises(ValueError, match=r"other\.mat.*no variable `dbStruct`.*foo"):
        load_dbstruct(path)


@pytest.mark.parametrize("missing", ["utmQ", "whichSet", "posDistThr", "dbImageFns", "qImageFns"])
def test_missing_field_names_file_and_field(tmp_path: Path, missing: str) -> None:
    fields = tuple(f for f in PITTS_FIELD_ORDER if f != missing)
    full = _matlab_like_record()
    record = np.empty((1, 1), dtype=[(name, object) for name in fields])
    for name in fields:
        record[0, 0][name] = full[0, 0][name]
    path = tmp_path / "partial.mat"
    scipy.io.savemat(str(path), {"dbStruct": record})
    with pytest.raises(ValueError, match=rf"partial\.mat.*`{missing}`"):
        load_dbstruct(path)


def test_inconsistent_counts_in_file(tmp_path: Path) -> None:
    path = tmp_path / "badcount.mat"
    scipy.io.savemat(str(path), {"dbStruct": _matlab_like_record(num_db=4.0)})
    with pytest.raises(ValueError, match=r"badcount\.mat.*numImages = 4 but dbImageFns lists 3"):
        load_dbstruct(path)


def test_utm_shape_mismatch_in_file(tmp_path: Path) -> None:
    record = _matlab_like_record()
    record[0, 0]["utmDb"] = np.zeros((2, 5))
    path = tmp_path / "badutm.mat"
    scipy.io.savemat(str(path), {"dbStruct": record})
    with pytest.raises(ValueError, match=r"badutm\.mat.*utmDb has shape \(2, 5\).*3 images"):
        load_dbstruct(path)


def test_dbstruct_validates_shapes() -> None:
    with pytest.raises(ValueError, match=r"utm_db has shape \(2, 2\).*3 images"):
        DbStruct("train", DB_PATHS, np.zeros((2, 2)), Q_PATHS, UTM_Q)
    with pytest.raises(ValueError, match=r"utm_q has shape \(2, 3\)"):
        DbStruct("train", DB_PATHS, UTM_DB, Q_PATHS, np.zeros((2, 3)))


def test_dbstruct_is_frozen_and_read_only() -> None:
    s = _example()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.which_set = "val"  # type: ignore[misc]
    with pytest.raises(ValueError):
        s.utm_db[0, 0] = 0.0
    assert s.utm_db.dtype == np.float64


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "city_val.mat"
    save_dbstruct(path, _example())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["city_val.mat"]  # no temp file left behind
    before = path.read_bytes()

    def broken_savemat(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(mat_module.scipy.io, "savemat", broken_savemat)
    with pytest.raises(OSError, match="disk full"):
        save_dbstruct(path, DbStruct("val", ["z.jpg"], [[0.0, 0.0]], [], []))
    assert path.read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["city_val.mat"]


def test_save_is_reproducible(tmp_path: Path) -> None:
    save_dbstruct(tmp_path / "a.mat", _example())
    save_dbstruct(tmp_path / "b.mat", _example())
    a = (tmp_path / "a.mat").read_bytes()
    assert a == (tmp_path / "b.mat").read_bytes()  # no creation time in the header
    assert a.startswith(b"MATLAB 5.0 MAT-file") and a[126:128] in (b"IM", b"MI")


# ---------------------------------------------------------------------------------------------------------
# Files as the NetVLAD dataset specs hold them, written with scipy.io.savemat from the format's description
# (a struct `dbStruct`; cells N x 1 of char; utmDb/utmQ 2 x N double; counts and thresholds 1 x 1 double).
# ---------------------------------------------------------------------------------------------------------


def _cell(items: list[str]) -> np.ndarray:
    c = np.empty((len(items), 1), dtype=object)
    for i, text in enumerate(items):
        c[i, 0] = text
    return c


def _spec(names: dict[str, str] | None = None, drop: tuple[str, ...] = (), **changes) -> dict:
    """The dbStruct fields in the real files' order; ``names`` renames fields, ``changes`` replaces values."""
    fields = {
        "whichSet": "train",
        "dbImageFns": _cell(DB_PATHS),
        "utmDb": UTM_DB.T.copy(),
        "qImageFns": _cell(Q_PATHS),
        "utmQ": UTM_Q.T.copy(),
        "numImages": np.array([[3.0]]),
        "numQueries": np.array([[2.0]]),
        "posDistThr": np.array([[25.0]]),
        "posDistSqThr": np.array([[625.0]]),
        "nonTrivPosDistSqThr": np.array([[100.0]]),
    }
    fields.update(changes)
    return {(names or {}).get(k, k): v for k, v in fields.items() if k not in drop}


def _savemat(path: Path, struct: dict) -> Path:
    scipy.io.savemat(str(path), {"dbStruct": struct})
    return path


def test_reads_real_field_names(tmp_path: Path) -> None:
    path = _savemat(tmp_path / "pitts30k_train.mat", _spec())
    assert scipy.io.loadmat(str(path))["dbStruct"].dtype.names == PITTS_FIELD_ORDER  # the file is as specified
    s = load_dbstruct(path)
    _assert_is_example(s)
    assert s.db_time_stamp is None and s.q_time_stamp is None


def test_reads_old_field_names(tmp_path: Path) -> None:
    path = _savemat(tmp_path / "old.mat", _spec(names=OLD_NAMES))
    assert scipy.io.loadmat(str(path))["dbStruct"].dtype.names == OLD_FIELD_ORDER
    _assert_is_example(load_dbstruct(path))


def test_reads_old_names_through_every_loadmat_nesting(tmp_path: Path) -> None:
    path = tmp_path / "old_like.mat"
    scipy.io.savemat(str(path), {"dbStruct": _matlab_like_record(OLD_FIELD_ORDER)})
    for options in ({}, {"squeeze_me": True}, {"simplify_cells": True}, {"struct_as_record": False}):
        _assert_is_example(dbstruct_from_loadmat(scipy.io.loadmat(str(path), **options)["dbStruct"], path))


def test_reads_tokyo247_style_file(tmp_path: Path) -> None:
    # One test split, no training radius, database listed as .jpg.
    db = ["03814/381408_W_000.jpg", "03814/381408_W_030.jpg"]
    q = ["00001.jpg"]
    path = _savemat(
        tmp_path / "tokyo247.mat",
        _spec(
            drop=("nonTrivPosDistSqThr",),
            whichSet="test",
            dbImageFns=_cell(db),
            qImageFns=_cell(q),
            utmDb=np.array([[381408.5, 381408.5], [3950000.25, 3950000.25]]),
            utmQ=np.array([[381410.0], [3950001.0]]),
            numImages=np.array([[2.0]]),
            numQueries=np.array([[1.0]]),
        ),
    )
    s = load_dbstruct(path)
    assert s.which_set == "test" and s.db_image == db and s.q_image == q
    np.testing.assert_array_equal(s.utm_db, [[381408.5, 3950000.25], [381408.5, 3950000.25]])
    np.testing.assert_array_equal(s.utm_q, [[381410.0, 3950001.0]])
    assert s.pos_dist_thr == 25.0 and s.pos_dist_sq_thr == 625.0
    assert s.non_triv_pos_dist_sq_thr is None


def test_reads_tokyotm_time_stamps(tmp_path: Path) -> None:
    path = _savemat(
        tmp_path / "tokyoTM_train.mat",
        {
            **_spec(),
            "dbTimeStamp": np.array([[200907.0, 201102.0, 200907.0]]),
            "qTimeStamp": np.array([[201102.0], [200907.0]]),
        },
    )
    s = load_dbstruct(path)
    np.testing.assert_array_equal(s.db_time_stamp, [200907, 201102, 200907])
    np.testing.assert_array_equal(s.q_time_stamp, [201102, 200907])


def test_reads_v73_without_optional_fields(tmp_path: Path) -> None:
    path = tmp_path / "v73_tokyo.mat"
    _write_v73(path, drop="nonTrivPosDistSqThr")
    s = load_dbstruct(path)
    assert s.db_image == DB_PATHS and s.non_triv_pos_dist_sq_thr is None


def test_missing_field_names_both_spellings(tmp_path: Path) -> None:
    path = _savemat(tmp_path / "nodb.mat", _spec(drop=("dbImageFns",)))
    with pytest.raises(ValueError, match=r"nodb\.mat.*no field `dbImageFns` \(or the older `dbImage`\)"):
        load_dbstruct(path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"numQueries": np.array([[7.0]])}, r"numQueries = 7 but qImageFns lists 2"),
        ({"posDistSqThr": np.array([[100.0]])}, r"posDistSqThr = 100 is not posDistThr\^2 = 625"),
        ({"posDistThr": np.array([[-1.0]])}, r"posDistThr = -1"),
        ({"utmQ": np.array([[1.0, np.nan], [2.0, 3.0]])}, r"utmQ has 1 images without finite coordinates.*image 2"),
        ({"utmDb": np.zeros((3, 3))}, r"utmDb has shape \(3, 3\) but dbImageFns lists 3"),
        ({"dbImageFns": np.array([[1.0, 2.0, 3.0]])}, r"dbImageFns should be a cell array of char"),
        ({"numImages": np.array([[1.0, 2.0]])}, r"numImages should be a scalar"),
    ],
)
def test_malformed_fields_name_file_and_field(tmp_path: Path, changes: dict, message: str) -> None:
    path = _savemat(tmp_path / "bad.mat", _spec(**changes))
    with pytest.raises(ValueError, match=r"bad\.mat.*" + message):
        load_dbstruct(path)


def test_time_stamps_of_wrong_length(tmp_path: Path) -> None:
    path = _savemat(
        tmp_path / "badtime.mat",
        {**_spec(), "dbTimeStamp": np.array([[1.0, 2.0]]), "qTimeStamp": np.array([[1.0, 2.0]])},
    )
    with pytest.raises(ValueError, match=r"badtime\.mat.*dbTimeStamp has shape \(1, 2\) but dbImageFns lists 3"):
        load_dbstruct(path)


def test_writer_uses_real_names_and_optional_fields(tmp_path: Path) -> None:
    s = DbStruct(
        "test", DB_PATHS, UTM_DB, Q_PATHS, UTM_Q, 25.0, 625.0, None, db_time_stamp=[1, 2, 3], q_time_stamp=[4, 5]
    )
    save_dbstruct(tmp_path / "t.mat", s)
    rec = scipy.io.loadmat(str(tmp_path / "t.mat"))["dbStruct"]
    names = [f for f in PITTS_FIELD_ORDER if f != "nonTrivPosDistSqThr"] + ["dbTimeStamp", "qTimeStamp"]
    assert rec.dtype.names == tuple(names)
    assert load_dbstruct(tmp_path / "t.mat") == s


def test_a_truncated_v73_file_is_called_truncated(tmp_path):
    from tests.data.spec_files import pittsburgh_like
    from vpr.data.mat import load_dbstruct

    pittsburgh_like(tmp_path, fmt="v73", num_places=2)
    mat = tmp_path / "datasets" / "pitts30k_test.mat"
    mat.write_bytes(mat.read_bytes()[:4000])  # an interrupted copy
    with pytest.raises(ValueError, match=r"pitts30k_test\.mat: could not read .* truncated \(an interrupted copy"):
        load_dbstruct(mat)


def test_a_2_x_2_coordinate_matrix_is_read_as_matlabs_layout_with_a_warning(tmp_path: Path, caplog) -> None:
    """Two images: 2 x N and N x 2 have the same shape; MATLAB's layout (row 1 eastings) is the one taken."""
    import logging

    from tests.data.spec_files import spec_fields, write_v5

    path = tmp_path / "two.mat"
    utm_db = np.array([[100.0, 200.0], [300.0, 400.0]])  # image 1 at (100, 200), image 2 at (300, 400)
    write_v5(path, spec_fields("test", ["a.jpg", "b.jpg"], utm_db, ["q.jpg"], np.array([[150.0, 250.0]])))
    with caplog.at_level(logging.WARNING, logger="vpr.data.mat"):
        s = load_dbstruct(path)
    np.testing.assert_array_equal(s.utm_db, utm_db)
    assert "dbStruct.utmDb is 2 x 2: read as MATLAB's layout" in caplog.text
    assert "utmQ" not in caplog.text  # one query: 2 x 1, no doubt


def _matlab_v73_char(parent: h5py.Group, name: str, utf16_units: list[int]) -> h5py.Dataset:
    """A 1 x L MATLAB char as ``save -v7.3`` stores it: UTF-16 code units as uint16, dimensions reversed (L, 1)."""
    ds = parent.create_dataset(name, data=np.array(utf16_units, dtype=np.uint16).reshape(-1, 1))
    ds.attrs["MATLAB_class"] = np.bytes_("char")
    ds.attrs["MATLAB_int_decode"] = np.int32(2)
    return ds


def test_v73_names_beyond_the_basic_multilingual_plane_read_as_one_character(tmp_path: Path) -> None:
    """MATLAB's char is UTF-16: U+1F600 (an emoji) is stored as the surrogate pair 0xD83D 0xDE00."""
    path = tmp_path / "emoji.mat"
    # "000/a" + U+1F600 + ".jpg", "b.jpg" and the query "q.jpg" as code units, spelled out.
    db_units = [[0x30, 0x30, 0x30, 0x2F, 0x61, 0xD83D, 0xDE00, 0x2E, 0x6A, 0x70, 0x67], [0x62, 0x2E, 0x6A, 0x70, 0x67]]
    q_units = [[0x71, 0x2E, 0x6A, 0x70, 0x67]]
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        g = f.create_group("dbStruct")
        g.attrs["MATLAB_class"] = np.bytes_("struct")
        _matlab_v73_char(g, "whichSet", [ord(c) for c in "test"])
        for field, cells in (("dbImageFns", db_units), ("qImageFns", q_units)):
            column = np.empty((1, len(cells)), dtype=h5py.ref_dtype)  # an N x 1 cell, dimensions reversed
            for i, units in enumerate(cells):
                column[0, i] = _matlab_v73_char(refs, f"{field}{i}", units).ref
            g.create_dataset(field, data=column).attrs["MATLAB_class"] = np.bytes_("cell")
        doubles = {"utmDb": [[10.0, 20.0], [0.0, 0.0]], "utmQ": [[12.0], [0.0]], "posDistThr": [[25.0]]}
        for field, value in doubles.items():  # MATLAB shapes (2 x N), stored transposed
            g.create_dataset(field, data=np.array(value).T).attrs["MATLAB_class"] = np.bytes_("double")
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .")

    s = load_dbstruct(path)
    assert s.db_image == ["000/a\U0001f600.jpg", "b.jpg"]
    assert len(s.db_image[0]) == 10  # the pair is one character
    assert s.q_image == ["q.jpg"]

    with h5py.File(path, "r+") as f:  # an unpaired high surrogate is not text: one error naming the field
        del f["#refs#/qImageFns0"]
        f["dbStruct/qImageFns"][0, 0] = _matlab_v73_char(f["#refs#"], "qImageFns0", [0x71, 0xD83D]).ref
    with pytest.raises(ValueError, match=r"emoji\.mat: dbStruct\.qImageFns holds character codes that are not UTF-16"):
        load_dbstruct(path)


@pytest.mark.parametrize("kept", ["dbTimeStamp", "qTimeStamp"])
def test_capture_times_of_only_the_database_or_only_the_queries_are_refused(tmp_path: Path, kept: str) -> None:
    """Without the other side's times, no database image can be told to share a query's capture time: read on, a
    Tokyo Time Machine query would rank its own panorama's images (and its recall come out inflated)."""
    struct = spec_fields("val", ["a.jpg", "b.jpg"], [[0.0, 0.0], [50.0, 0.0]], ["q.jpg"], [[1.0, 0.0]])
    struct[kept] = np.array([[201005.0, 201101.0]]) if kept == "dbTimeStamp" else np.array([[201005.0]])
    scipy.io.savemat(str(tmp_path / "tokyoTM_val.mat"), {"dbStruct": struct})
    other = "qTimeStamp" if kept == "dbTimeStamp" else "dbTimeStamp"
    with pytest.raises(ValueError, match=rf"tokyoTM_val\.mat: dbStruct has {kept} but no {other}"):
        load_dbstruct(tmp_path / "tokyoTM_val.mat")


@pytest.mark.parametrize("code", [0x110000, -1])
def test_character_codes_that_are_no_character_are_refused_naming_the_field(tmp_path: Path, code: int) -> None:
    """An image name stored as raw integer codes (a writer other than MATLAB's char) holding a code no character
    has: one error naming the file and the field, as for an unpaired surrogate."""
    struct = spec_fields("test", ["a?.jpg", "b.jpg"], [[0.0, 0.0], [50.0, 0.0]], ["q.jpg"], [[1.0, 0.0]])
    struct["dbImageFns"][0, 0] = np.array([[0x61, code, 0x2E, 0x6A, 0x70, 0x67]], dtype=np.int32)  # "a?.jpg"
    scipy.io.savemat(str(tmp_path / "codes.mat"), {"dbStruct": struct})
    with pytest.raises(ValueError, match=r"codes\.mat: dbStruct\.dbImageFns holds character codes that are not UTF-16"):
        load_dbstruct(tmp_path / "codes.mat")
