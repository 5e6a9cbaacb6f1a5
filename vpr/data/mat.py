"""Read and write the ``dbStruct`` .mat files of the NetVLAD dataset specifications.

Pittsburgh 30k/250k, Tokyo 24/7 and Tokyo Time Machine describe each split with one MATLAB struct
``dbStruct``. The real files name its fields, in this order::

    whichSet, dbImageFns, utmDb, qImageFns, utmQ, numImages, numQueries, posDistThr, posDistSqThr,
    nonTrivPosDistSqThr

``dbImageFns``/``qImageFns`` are N x 1 cell arrays of char (image paths relative to the database / query
image folder), ``utmDb``/``utmQ`` are 2 x N double (UTM easting; northing in metres), the counts and
thresholds 1 x 1 double. Tokyo 24/7 lacks ``nonTrivPosDistSqThr``; Tokyo Time Machine adds ``dbTimeStamp``
and ``qTimeStamp`` (one number per image: when its panorama was captured).

Older files written by this project (and some third-party converters) use ``dbImage``, ``qImage``,
``numDb`` and ``numQ`` instead: the variable names a popular PyTorch reader gives the fields while reading
them by position. They are accepted too, field by field.

MATLAB v5 files (the real ones) are read with :func:`scipy.io.loadmat`, MATLAB v7.3 files (HDF5) with h5py.
Whatever the layout, a problem ends in a ``ValueError`` naming the file and the field.
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from vpr.io import atomic_path

log = logging.getLogger(__name__)

__all__ = ["DBSTRUCT_FIELDS", "LEGACY_FIELD_NAMES", "DbStruct", "load_dbstruct", "save_dbstruct"]

#: The ten dbStruct field names of the real files, in the order they store them.
DBSTRUCT_FIELDS: tuple[str, ...] = (
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

#: Older names accepted for four of them (files written before the real names were adopted).
LEGACY_FIELD_NAMES: dict[str, str] = {
    "dbImageFns": "dbImage",
    "qImageFns": "qImage",
    "numImages": "numDb",
    "numQueries": "numQ",
}

#: Fields a file must hold; the others are optional (the counts and posDistSqThr follow from the rest, Tokyo
#: 24/7 has no training radius) but are checked against the rest when present.
REQUIRED_FIELDS: tuple[str, ...] = ("whichSet", "dbImageFns", "utmDb", "qImageFns", "utmQ", "posDistThr")

#: Optional per-image capture times (Tokyo Time Machine).
TIMESTAMP_FIELDS: tuple[str, ...] = ("dbTimeStamp", "qTimeStamp")

_HEADER_TEXT_BYTES = 116  # MATLAB v5: 116 bytes of text, then subsystem offset, version and endianness
_HEADER_TEXT = b"MATLAB 5.0 MAT-file, Platform: posix, written by vpr.data.mat (NetVLAD dbStruct)"
_RESAVE_HINT = "re-save it in MATLAB with `save(path, 'dbStruct', '-v7')`"


@dataclass(frozen=True)
class DbStruct:
    """One split of a NetVLAD-style place-recognition dataset.

    Attributes:
        which_set: split name ("train", "val" or "test").
        db_image: database image paths (``dbImageFns``), relative to the database image folder.
        utm_db: (num_db, 2) float64 [easting, northing] in metres (read-only array).
        q_image: query image paths (``qImageFns``), relative to the query image folder.
        utm_q: (num_q, 2) float64 [easting, northing] in metres (read-only array).
        pos_dist_thr: evaluation positive radius in metres (25).
        pos_dist_sq_thr: its square (625).
        non_triv_pos_dist_sq_thr: squared radius of training ("non-trivial") positives (100 -> 10 m), or None
            when the file has none (Tokyo 24/7, an evaluation-only set).
        db_time_stamp / q_time_stamp: (num_db,) / (num_q,) capture times, or None (all but Tokyo Time Machine).
    """

    which_set: str
    db_image: list[str]
    utm_db: np.ndarray
    q_image: list[str]
    utm_q: np.ndarray
    pos_dist_thr: float = 25.0
    pos_dist_sq_thr: float = 625.0
    non_triv_pos_dist_sq_thr: float | None = 100.0
    db_time_stamp: np.ndarray | None = None
    q_time_stamp: np.ndarray | None = None

    def __post_init__(self) -> None:
        # Normalise types once so that every consumer sees list[str] and read-only (N, 2) float64 arrays.
        object.__setattr__(self, "which_set", str(self.which_set))
        object.__setattr__(self, "db_image", [str(p) for p in self.db_image])
        object.__setattr__(self, "q_image", [str(p) for p in self.q_image])
        for attr, names in (("utm_db", self.db_image), ("utm_q", self.q_image)):
            utm = np.array(getattr(self, attr), dtype=np.float64)
            if utm.size == 0 and len(names) == 0:
                utm = utm.reshape(0, 2)
            if utm.ndim != 2 or utm.shape != (len(names), 2):
                image_attr = "db_image" if attr == "utm_db" else "q_image"
                raise ValueError(
                    f"DbStruct.{attr} has shape {tuple(utm.shape)} but {image_attr} lists {len(names)} images; "
                    f"expected ({len(names)}, 2) rows of [easting, northing]"
                )
            utm.setflags(write=False)
            object.__setattr__(self, attr, utm)
        for attr, names in (("db_time_stamp", self.db_image), ("q_time_stamp", self.q_image)):
            stamps = getattr(self, attr)
            if stamps is None:
                continue
            stamps = np.array(stamps).reshape(-1)
            if stamps.shape != (len(names),):
                raise ValueError(f"DbStruct.{attr} holds {stamps.size} values for {len(names)} images")
            stamps.setflags(write=False)
            object.__setattr__(self, attr, stamps)
        for attr in ("pos_dist_thr", "pos_dist_sq_thr", "non_triv_pos_dist_sq_thr"):
            value = getattr(self, attr)
            object.__setattr__(self, attr, None if value is None else float(value))

    @property
    def num_db(self) -> int:
        return len(self.db_image)

    @property
    def num_q(self) -> int:
        return len(self.q_image)

    def __eq__(self, other: object) -> bool:
        # Arrays make the generated dataclass __eq__ ambiguous; compare field by field instead.
        if not isinstance(other, DbStruct):
            return NotImplemented

        def same_optional(a: np.ndarray | None, b: np.ndarray | None) -> bool:
            return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))

        return (
            self.which_set == other.which_set
            and self.db_image == other.db_image
            and self.q_image == other.q_image
            and np.array_equal(self.utm_db, other.utm_db)
            and np.array_equal(self.utm_q, other.utm_q)
            and self.pos_dist_thr == other.pos_dist_thr
            and self.pos_dist_sq_thr == other.pos_dist_sq_thr
            and self.non_triv_pos_dist_sq_thr == other.non_triv_pos_dist_sq_thr
            and same_optional(self.db_time_stamp, other.db_time_stamp)
            and same_optional(self.q_time_stamp, other.q_time_stamp)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable-looking contents (lists, arrays): unhashable


# ---------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------


def load_dbstruct(path: str | os.PathLike) -> DbStruct:
    """Load the ``dbStruct`` of a split file (MATLAB v5 or v7.3/HDF5).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a MATLAB .mat file, holds no ``dbStruct``, lacks a field, or has
            inconsistent sizes. The message names the file and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"dbStruct file {path} does not exist; check the dataset root / split name "
            f"(expected e.g. <root>/datasets/pitts30k_train.mat)"
        )
    if _is_hdf5(path):
        return _load_v73(path)
    try:
        mat = scipy.io.loadmat(str(path))
    except NotImplementedError as err:  # scipy's answer to v7.3 files when h5py could not tell
        raise ValueError(f"{path} looks like a MATLAB v7.3 file that could not be read; {_RESAVE_HINT}") from err
    except Exception as err:  # scipy raises a mix of ValueError/TypeError/MatReadError on garbage
        raise ValueError(
            f"{path} is not a readable MATLAB .mat file ({type(err).__name__}: {err}); expected a MATLAB v5 "
            f"file holding a struct `dbStruct`"
        ) from err
    if "dbStruct" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{path} holds no variable `dbStruct` (variables found: {found})")
    return dbstruct_from_loadmat(mat["dbStruct"], path)


def dbstruct_from_loadmat(obj: Any, path: str | os.PathLike = "<memory>") -> DbStruct:
    """Build a :class:`DbStruct` from ``scipy.io.loadmat(...)["dbStruct"]``.

    Accepts every nesting loadmat produces: ``squeeze_me`` on/off, ``struct_as_record`` on/off
    (structured arrays or ``mat_struct`` objects), ``simplify_cells=True`` (dicts and lists) and
    ``chars_as_strings=False`` (char arrays). ``path`` only serves the error messages.
    """
    path = Path(path)
    return _build(_struct_fields(obj, path), path, _Decoder(_to_str, _to_str_list, lambda x: _peel_numeric(x)))


@dataclass(frozen=True)
class _Decoder:
    """How one file format turns a raw field into text, a list of texts, or a numeric array."""

    text: Callable[[Any, Path, str], str]
    texts: Callable[[Any, Path, str], list[str]]
    numbers: Callable[[Any], Any]


def _resolve_names(fields: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The raw fields under their real names, taking the older name where the real one is absent."""
    resolved: dict[str, Any] = {}
    for name in (*DBSTRUCT_FIELDS, *TIMESTAMP_FIELDS):
        legacy = LEGACY_FIELD_NAMES.get(name)
        if name in fields:
            resolved[name] = fields[name]
        elif legacy is not None and legacy in fields:
            resolved[name] = fields[legacy]
        elif name in REQUIRED_FIELDS:
            also = f" (or the older `{legacy}`)" if legacy else ""
            raise ValueError(
                f"{path}: dbStruct has no field `{name}`{also} (fields present: {sorted(fields)}); a NetVLAD "
                f"dataset spec needs {list(REQUIRED_FIELDS)} and may hold "
                f"{[f for f in DBSTRUCT_FIELDS if f not in REQUIRED_FIELDS] + list(TIMESTAMP_FIELDS)}"
            )
    return resolved


def _build(fields: Mapping[str, Any], path: Path, decode: _Decoder) -> DbStruct:
    raw = _resolve_names(fields, path)

    def number(name: str) -> float | None:
        return _to_float(decode.numbers(raw[name]), path, name) if name in raw else None

    db_image = decode.texts(raw["dbImageFns"], path, "dbImageFns")
    q_image = decode.texts(raw["qImageFns"], path, "qImageFns")
    for name, listed, cell in (("numImages", len(db_image), "dbImageFns"), ("numQueries", len(q_image), "qImageFns")):
        count = number(name)
        if count is not None and count != listed:
            raise ValueError(f"{path}: dbStruct.{name} = {count:g} but {cell} lists {listed} images")
    pos_dist_thr = number("posDistThr")
    if not (pos_dist_thr > 0 and math.isfinite(pos_dist_thr)):
        raise ValueError(f"{path}: dbStruct.posDistThr = {pos_dist_thr:g}; expected a positive radius in metres (25)")
    pos_dist_sq_thr = number("posDistSqThr")
    if pos_dist_sq_thr is None:
        pos_dist_sq_thr = pos_dist_thr**2
    elif not math.isclose(pos_dist_sq_thr, pos_dist_thr**2, rel_tol=1e-6):
        raise ValueError(
            f"{path}: dbStruct.posDistSqThr = {pos_dist_sq_thr:g} is not posDistThr^2 = {pos_dist_thr**2:g}"
        )
    non_triv = number("nonTrivPosDistSqThr")
    if non_triv is not None and not (non_triv > 0 and math.isfinite(non_triv)):
        raise ValueError(f"{path}: dbStruct.nonTrivPosDistSqThr = {non_triv:g}; expected a positive squared radius")
    utm_db = _to_utm(decode.numbers(raw["utmDb"]), len(db_image), path, "utmDb", "dbImageFns")
    utm_q = _to_utm(decode.numbers(raw["utmQ"]), len(q_image), path, "utmQ", "qImageFns")
    present = [name for name in TIMESTAMP_FIELDS if name in raw]
    if len(present) == 1:  # the times serve by comparison: a query's own capture time among the database's
        missing = next(name for name in TIMESTAMP_FIELDS if name not in raw)
        raise ValueError(
            f"{path}: dbStruct has {present[0]} but no {missing}; capture times need both (Tokyo Time Machine: a "
            "query's database images of its own time are left out), or neither"
        )
    stamps = {
        name: _to_stamps(decode.numbers(raw[name]), n, path, name, cell)
        for name, n, cell in (("dbTimeStamp", len(db_image), "dbImageFns"), ("qTimeStamp", len(q_image), "qImageFns"))
        if name in raw
    }
    return DbStruct(
        which_set=decode.text(raw["whichSet"], path, "whichSet"),
        db_image=db_image,
        utm_db=utm_db,
        q_image=q_image,
        utm_q=utm_q,
        pos_dist_thr=pos_dist_thr,
        pos_dist_sq_thr=pos_dist_sq_thr,
        non_triv_pos_dist_sq_thr=non_triv,
        db_time_stamp=stamps.get("dbTimeStamp"),
        q_time_stamp=stamps.get("qTimeStamp"),
    )


def _peel(x: Any) -> Any:
    """Remove the 1x1 object-array wrappers loadmat puts around struct and cell contents."""
    while isinstance(x, np.ndarray) and x.dtype == object and x.size == 1:
        x = x.reshape(-1)[0]
    return x


def _peel_numeric(x: Any) -> Any:
    return x if isinstance(x, list) else _peel(x)  # simplify_cells gives plain lists for some matrices


def _struct_fields(obj: Any, path: Path) -> dict[str, Any]:
    obj = _peel(obj)
    if isinstance(obj, dict):  # simplify_cells=True
        return dict(obj)
    if isinstance(obj, scipy.io.matlab.mat_struct):  # struct_as_record=False
        return {name: getattr(obj, name) for name in obj._fieldnames}
    if isinstance(obj, (np.ndarray, np.void)) and obj.dtype.names is not None:  # struct_as_record=True
        if obj.size != 1:
            raise ValueError(f"{path}: dbStruct is a {obj.shape} struct array; expected a single (1x1) struct")
        record = obj.reshape(-1)[0] if isinstance(obj, np.ndarray) else obj
        return {name: record[name] for name in obj.dtype.names}
    raise ValueError(f"{path}: `dbStruct` is not a MATLAB struct (loaded as {type(obj).__name__})")


def _to_str(x: Any, path: Path, field: str) -> str:
    x = _peel(x)
    if isinstance(x, str):
        return x
    if isinstance(x, bytes):
        return x.decode("utf-8")
    if isinstance(x, np.ndarray) and x.dtype.kind == "U":
        if x.size == 0:
            return ""
        if x.size == 1:
            return str(x.reshape(-1)[0])
        if x.dtype.itemsize == 4 and (x.ndim == 1 or min(x.shape) == 1):  # chars_as_strings=False: 1 x L chars
            return "".join(x.reshape(-1).tolist())
    if isinstance(x, np.ndarray) and x.dtype.kind in "ui" and (x.ndim == 1 or min(x.shape) == 1):
        return _from_char_codes(x.reshape(-1).tolist(), path, field)  # raw character codes
    raise ValueError(f"{path}: dbStruct.{field} should be a char string, got {type(x).__name__} {_describe(x)}")


def _from_char_codes(codes: Sequence[int], path: Path, field: str) -> str:
    """The text of MATLAB character codes. A MATLAB char is a UTF-16 code unit: a character beyond U+FFFF (an
    emoji, a rare CJK ideograph) is stored as two of them, a surrogate pair, which make one character here."""
    try:
        return "".join(chr(c) for c in codes).encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    except (UnicodeError, ValueError, OverflowError):  # an unpaired surrogate, a negative code or one above U+10FFFF
        raise ValueError(
            f"{path}: dbStruct.{field} holds character codes that are not UTF-16 text ({list(codes)}); re-save the "
            "file from the image names as they are on disk"
        ) from None


def _to_str_list(x: Any, path: Path, field: str) -> list[str]:
    if isinstance(x, (str, bytes)):  # a one-element cell squeezed away
        return [_to_str(x, path, field)]
    if isinstance(x, (list, tuple)):  # simplify_cells=True
        return [_to_str(e, path, field) for e in x]
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            # order="F": MATLAB's linear order (identical for the N x 1 / 1 x N cells used in practice)
            return [_to_str(e, path, field) for e in x.reshape(-1, order="F")]
        elif x.dtype.kind == "U":
            if x.ndim == 0:
                return [str(x)]
            # chars_as_strings=False: single characters; a squeezed one-entry cell is a 1-D row of chars,
            # a char matrix holds one path per row.
            if x.dtype.itemsize == 4 and x.ndim == 1:
                return ["".join(x.tolist())]
            if x.dtype.itemsize == 4 and x.ndim == 2:
                return ["".join(row).rstrip() for row in x.tolist()]
            # A char matrix (one path per row) loads as an array of strings padded with blanks.
            return [str(s).rstrip() for s in x.reshape(-1)]
    raise ValueError(
        f"{path}: dbStruct.{field} should be a cell array of char (one image path per entry), "
        f"got {type(x).__name__} {_describe(x)}"
    )


def _as_float_array(x: Any, path: Path, field: str, expected: str) -> np.ndarray:
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: dbStruct.{field} should be {expected}, got {_describe(x)}") from err


def _to_float(x: Any, path: Path, field: str) -> float:
    arr = _as_float_array(x, path, field, "a number")
    if arr.size != 1:
        raise ValueError(f"{path}: dbStruct.{field} should be a scalar, got shape {arr.shape}")
    return float(arr.reshape(-1)[0])


def _to_utm(x: Any, n: int, path: Path, field: str, cell: str) -> np.ndarray:
    """MATLAB stores coordinates as 2 x N; return (N, 2). (N, 2) is accepted too (N == 2 reads as 2 x N)."""
    arr = _as_float_array(x, path, field, "a 2 x N double matrix")
    if arr.size == 0 and n == 0:
        return np.zeros((0, 2))
    if arr.ndim == 2 and arr.shape == (2, n):
        out = arr.T.copy()
        if n == 2:
            log.warning(
                "%s: dbStruct.%s is 2 x 2: read as MATLAB's layout (row 1 eastings, row 2 northings); a file that "
                "stores one image per row would read transposed",
                path,
                field,
            )
    elif arr.ndim == 2 and arr.shape == (n, 2):
        out = arr.copy()
    elif arr.ndim == 1 and arr.shape == (2,) and n == 1:  # squeeze_me on a 2 x 1 matrix
        out = arr.reshape(1, 2)
    else:
        raise ValueError(
            f"{path}: dbStruct.{field} has shape {arr.shape} but {cell} lists {n} images; expected 2 x {n} "
            f"(rows easting, northing)"
        )
    bad = np.flatnonzero(~np.isfinite(out).all(axis=1))
    if bad.size:
        raise ValueError(
            f"{path}: dbStruct.{field} has {bad.size} images without finite coordinates (NaN or Inf; first: "
            f"image {bad[0] + 1} in MATLAB's 1-based numbering); every image needs an easting and a northing"
        )
    return out


def _to_stamps(x: Any, n: int, path: Path, field: str, cell: str) -> np.ndarray:
    """One capture time per image, as stored (1 x N or N x 1)."""
    arr = np.asarray(x)
    if arr.dtype == object or arr.dtype.kind not in "uif":
        raise ValueError(f"{path}: dbStruct.{field} should be numeric (one capture time per image), got {_describe(x)}")
    if arr.size != n or (arr.ndim == 2 and min(arr.shape) > 1):
        raise ValueError(f"{path}: dbStruct.{field} has shape {arr.shape} but {cell} lists {n} images")
    return arr.reshape(-1).copy()


def _describe(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return f"(array dtype={x.dtype}, shape={x.shape})"
    return f"({type(x).__name__})"


# ---------------------------------------------------------------------------------------------------------
# MATLAB v7.3 (HDF5)
# ---------------------------------------------------------------------------------------------------------


def _is_hdf5(path: Path) -> bool:
    try:
        import h5py
    except ImportError:  # without h5py a v7.3 file surfaces as scipy's NotImplementedError below
        return False
    try:
        return bool(h5py.is_hdf5(str(path)))
    except OSError:
        return False


def _load_v73(path: Path) -> DbStruct:
    import h5py

    try:
        with h5py.File(str(path), "r") as f:
            if "dbStruct" not in f:
                found = sorted(k for k in f.keys() if not k.startswith("#"))
                raise ValueError(f"{path} (HDF5 / MATLAB v7.3) holds no variable `dbStruct` (found: {found})")
            group = f["dbStruct"]
            if not isinstance(group, h5py.Group):
                raise ValueError(f"{path}: `dbStruct` is not a MATLAB struct in this v7.3 file; {_RESAVE_HINT}")
            decode = _Decoder(_h5_str, lambda ds, p, field: _h5_str_list(f, ds, p, field), _h5_numeric)
            return _build({name: group[name] for name in group.keys()}, path, decode)
    except ValueError:
        raise
    except OSError as err:  # HDF5 could not open or read it: a cut-off copy, most likely
        raise ValueError(
            f"{path}: could not read this MATLAB v7.3 (HDF5) file ({err}): truncated (an interrupted "
            "copy or download?) or damaged; copy it again"
        ) from err
    except Exception as err:  # unexpected v7.3 layouts (sparse, objects, ...): say how to get a v5 file
        raise ValueError(f"{path}: could not read this MATLAB v7.3 (HDF5) file ({err}); {_RESAVE_HINT}") from err


def _is_empty(ds: Any) -> bool:
    # MATLAB writes empty arrays as a small dims vector flagged with MATLAB_empty.
    return bool(ds.attrs.get("MATLAB_empty", 0))


def _h5_numeric(ds: Any) -> np.ndarray:
    if _is_empty(ds):
        return np.zeros((0, 0))
    # HDF5 stores MATLAB's column-major arrays with reversed dimensions: transpose back to MATLAB's shape.
    return np.asarray(ds[()]).T


def _h5_str(ds: Any, path: Path, field: str) -> str:
    import h5py

    if not isinstance(ds, h5py.Dataset):
        raise ValueError(f"{path}: dbStruct.{field} is not a char array in this v7.3 file; {_RESAVE_HINT}")
    if _is_empty(ds):
        return ""
    codes = np.asarray(ds[()]).T
    if codes.dtype.kind not in "ui" or (codes.ndim == 2 and min(codes.shape) > 1):
        raise ValueError(f"{path}: dbStruct.{field} is not a char row vector in this v7.3 file; {_RESAVE_HINT}")
    return _from_char_codes(codes.reshape(-1).tolist(), path, field)


def _h5_str_list(f: Any, ds: Any, path: Path, field: str) -> list[str]:
    import h5py

    if not isinstance(ds, h5py.Dataset):
        raise ValueError(f"{path}: dbStruct.{field} is not a cell array in this v7.3 file; {_RESAVE_HINT}")
    if _is_empty(ds):
        return []
    data = np.asarray(ds[()]).T
    if ds.dtype == h5py.ref_dtype or data.dtype == object:  # cell: one object reference per entry
        return [_h5_str(f[ref], path, field) for ref in data.reshape(-1, order="F")]
    if data.dtype.kind in "ui" and data.ndim == 2:  # char matrix: one path per row
        return [_from_char_codes(row, path, field).rstrip() for row in data.tolist()]
    raise ValueError(f"{path}: dbStruct.{field} has an unsupported v7.3 layout; {_RESAVE_HINT}")


# ---------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------


def _cell_column(items: Sequence[str]) -> np.ndarray:
    cell = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        cell[i, 0] = str(item)
    return cell


def save_dbstruct(path: str | os.PathLike, s: DbStruct) -> None:
    """Write ``s`` as a MATLAB v5 file holding the struct ``dbStruct`` with the real files' field names.

    The ten fields come in the real files' order (``nonTrivPosDistSqThr`` left out when ``s`` has none),
    then ``dbTimeStamp``/``qTimeStamp`` when ``s`` has them. The file is written to a temporary file in the
    same folder and moved into place with ``os.replace``, so readers never see a half-written file. Parent
    folders are created.
    """
    path = Path(path)
    if not isinstance(s, DbStruct):
        raise TypeError(f"save_dbstruct({path}) expects a DbStruct, got {type(s).__name__}")
    path.parent.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {
        "whichSet": s.which_set,
        "dbImageFns": _cell_column(s.db_image),
        "utmDb": np.ascontiguousarray(s.utm_db.T, dtype=np.float64),  # 2 x numImages, as in MATLAB
        "qImageFns": _cell_column(s.q_image),
        "utmQ": np.ascontiguousarray(s.utm_q.T, dtype=np.float64),
        "numImages": np.array([[float(s.num_db)]]),  # MATLAB's default numeric class is double
        "numQueries": np.array([[float(s.num_q)]]),
        "posDistThr": np.array([[s.pos_dist_thr]]),
        "posDistSqThr": np.array([[s.pos_dist_sq_thr]]),
    }
    if s.non_triv_pos_dist_sq_thr is not None:
        values["nonTrivPosDistSqThr"] = np.array([[s.non_triv_pos_dist_sq_thr]])
    for name, stamps in (("dbTimeStamp", s.db_time_stamp), ("qTimeStamp", s.q_time_stamp)):
        if stamps is not None:
            values[name] = np.asarray(stamps).reshape(1, -1)
    record = np.empty((1, 1), dtype=[(name, object) for name in values])
    for name, value in values.items():
        record[0, 0][name] = value

    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"dbStruct": record}, format="5", oned_as="column")
    data = bytearray(buffer.getvalue())
    # The 116-byte descriptive header carries a creation time; a fixed text makes the output reproducible.
    data[:_HEADER_TEXT_BYTES] = _HEADER_TEXT.ljust(_HEADER_TEXT_BYTES)
    with atomic_path(path) as tmp:
        tmp.write_bytes(bytes(data))
