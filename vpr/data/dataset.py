"""Place-recognition splits (database + queries with UTM positions) and the image datasets built on them.

A :class:`PlaceSplit` is everything a split's `.mat` file says, resolved to image paths on disk, plus the
ground truth derived from the UTM positions (see :mod:`vpr.data.ground_truth`) and how the split is evaluated
(spatial non-maximum suppression, images of the query's own capture time left out). Two on-disk layouts read
into it:

- NetVLAD dataset specs (Pittsburgh 30k/250k, Tokyo 24/7, Tokyo Time Machine, the synthetic city): one
  ``dbStruct`` .mat file per split under ``root/datasets/``; database images under ``root/<db_dir>``, queries
  under ``root/<query_dir>`` (Pittsburgh: the root itself and ``queries_real/``).
- Folder layout of the deep-visual-geo-localization benchmark: ``root/<split>/database/*.jpg`` and
  ``root/<split>/queries/*.jpg`` with file names ``@<utm_east>@<utm_north>@...@.jpg``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

from vpr.data.ground_truth import positives_within
from vpr.data.mat import load_dbstruct
from vpr.errors import DataError

log = logging.getLogger(__name__)

DATASET_HELP = {
    "pitts": (
        "Pittsburgh 30k/250k: the images (Pittsburgh 250k, Torii et al., CVPR 2013) are granted on request by "
        "their authors; the split files (netvlad_v100_datasets.tar.gz, Arandjelovic et al., CVPR 2016) come from "
        "the NetVLAD project page and unpack into <root>/datasets/."
    ),
    "tokyo247": (
        "Tokyo 24/7 (Torii et al., CVPR 2015): database images database_gsv_vga/ and queries 247query_subset_v2/ "
        "from its authors; the split file tokyo247.mat is in the NetVLAD project page's datasets archive."
    ),
    "tokyoTM": (
        "Tokyo Time Machine (Arandjelovic et al., CVPR 2016): images from its authors on request; the split files "
        "tokyoTM_train.mat and tokyoTM_val.mat are in the NetVLAD project page's datasets archive."
    ),
}
#: The environment variable each data config reads its root from.
ROOT_ENV = {"pitts": "VPR_PITTSBURGH_ROOT", "tokyo247": "VPR_TOKYO247_ROOT", "tokyoTM": "VPR_TOKYOTM_ROOT"}
CITY_HINT = (
    "To run without downloads, generate the synthetic city: `python -m vpr.data.synthetic --out DIR --preset "
    "default` and use data=synthetic."
)


def _by_prefix(table: dict[str, str], name: str) -> str | None:
    return next((text for prefix, text in table.items() if str(name).startswith(prefix)), None)


def dataset_help(name: str) -> str:
    """Where the files of dataset ``name`` come from, and the offline alternative."""
    text = _by_prefix(DATASET_HELP, name)
    return f"{text} {CITY_HINT}" if text else CITY_HINT


@dataclass(frozen=True)
class PlaceSplit:
    """One split: database and query images with UTM positions (metres).

    Attributes:
        dataset: dataset name, e.g. ``pitts30k`` or ``city``.
        split: ``train``, ``val`` or ``test`` (always recorded with results: peers confuse val and test).
        db_paths / q_paths: absolute image paths.
        db_utm: (num_db, 2) easting, northing. q_utm: (num_q, 2).
        eval_radius_m: a database image within this distance is a true match (25 m).
        train_radius_m: a "non-trivial positive" for training lies within this distance (10 m).
        train_min_distance_m: and farther than this (0: none). Tokyo Time Machine's protocol uses 1 m: a
            database image closer than that shows the query's own spot from the query's own panorama position.
        db_time / q_time: capture time of each image, or None. When given (Tokyo Time Machine, whose queries
            are cut from the database's own panoramas), a query's training positives and its ranked database
            leave out the images of its own capture time.
        spatial_nms: rank places, not images: of database images of one place (see :meth:`nms_groups`) only
            the best ranked is kept (Tokyo 24/7's protocol).
        nms_group_size: with spatial_nms, consecutive runs of this many database images form one place (Tokyo
            24/7: the 12 cutouts of a panorama); None groups images by identical position instead.
    """

    dataset: str
    split: str
    db_paths: list[Path]
    q_paths: list[Path]
    db_utm: np.ndarray
    q_utm: np.ndarray
    eval_radius_m: float = 25.0
    train_radius_m: float = 10.0
    train_min_distance_m: float = 0.0
    db_time: np.ndarray | None = None
    q_time: np.ndarray | None = None
    spatial_nms: bool = False
    nms_group_size: int | None = None
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.db_time is None) != (self.q_time is None):
            raise ValueError(f"{self.dataset}/{self.split}: capture times given for only one of database/queries")
        if self.nms_group_size is not None and int(self.nms_group_size) < 1:
            raise ValueError(f"nms_group_size must be >= 1, got {self.nms_group_size}")

    @property
    def num_db(self) -> int:
        return len(self.db_paths)

    @property
    def num_q(self) -> int:
        return len(self.q_paths)

    @property
    def image_paths(self) -> list[Path]:
        """Database images first, then queries: index i < num_db is a database image."""
        return list(self.db_paths) + list(self.q_paths)

    def eval_positives(self) -> list[np.ndarray]:
        """Per query, the database indices within ``eval_radius_m``, nearest first (own capture time left out)."""
        key = ("eval", self.eval_radius_m)
        if key not in self._cache:
            self._cache[key] = self._other_times(positives_within(self.db_utm, self.q_utm, self.eval_radius_m))
        return self._cache[key]

    def train_positives(self) -> list[np.ndarray]:
        """Per query, the database indices within ``train_radius_m`` (non-trivial positives), nearest first.

        With capture times, images taken at the query's own time are not positives (they are the query's own
        panorama: nothing to learn from them). With ``train_min_distance_m``, neither are images that close.
        """
        key = ("train", self.train_radius_m, self.train_min_distance_m)
        if key not in self._cache:
            positives = self._other_times(positives_within(self.db_utm, self.q_utm, self.train_radius_m))
            if self.train_min_distance_m > 0:
                positives = [
                    p[np.linalg.norm(self.db_utm[p] - self.q_utm[q], axis=1) > self.train_min_distance_m]
                    for q, p in enumerate(positives)
                ]
            self._cache[key] = positives
        return self._cache[key]

    def _other_times(self, positives: list[np.ndarray]) -> list[np.ndarray]:
        if self.db_time is None:
            return positives
        return [p[self.db_time[p] != self.q_time[q]] for q, p in enumerate(positives)]

    def nms_groups(self) -> np.ndarray | None:
        """(num_db,) place id of every database image when ``spatial_nms`` is on, else None."""
        if not self.spatial_nms:
            return None
        if self.nms_group_size is not None:
            return np.arange(self.num_db, dtype=np.int64) // int(self.nms_group_size)
        return np.unique(np.asarray(self.db_utm), axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)

    def describe(self) -> str:
        return f"{self.dataset}/{self.split}: {self.num_db} database, {self.num_q} queries"


def load_mat_split(
    root: str | Path | None,
    name: str,
    split: str,
    *,
    split_file: str = "{name}_{split}.mat",
    db_dir: str = "",
    query_dir: str = "queries_real",
    eval_radius_m: float | None = None,
    train_radius_m: float | None = None,
    train_min_distance_m: float = 0.0,
    spatial_nms: bool = False,
    nms_group_size: int | None = None,
) -> PlaceSplit:
    """Read ``root/datasets/<split_file>`` (a NetVLAD dataset spec) and resolve its image paths.

    Args:
        split_file: file name under ``root/datasets/``; ``{name}`` and ``{split}`` are filled in.
        db_dir / query_dir: folders of the database and query images, relative to ``root`` (or absolute).
            Where the files on disk carry another image extension than the .mat lists (Tokyo 24/7's database:
            .jpg listed, .png on disk), the one on disk is used.
        eval_radius_m / train_radius_m: default to the file's ``posDistThr`` (25 m) and
            ``sqrt(nonTrivPosDistSqThr)`` (10 m; 10 m too when the file has none, as Tokyo 24/7).
        train_min_distance_m: training positives lie farther than this (Tokyo Time Machine: 1 m).
    """
    if root is None or str(root) in ("", "None", "???"):
        env = _by_prefix(ROOT_ENV, name)
        where = f"data.root=/path/to/dataset or the {env} environment variable" if env else "data.root=/path/to/dataset"
        raise DataError(
            f"data.root is not set for {name}: point it at the dataset folder ({where}). {dataset_help(name)}"
        )
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset root {root} does not exist (setting data.root). {dataset_help(name)}")
    try:
        file_name = split_file.format(name=name, split=split)
    except (KeyError, IndexError) as e:
        raise DataError(f"data.split_file={split_file!r} may only use {{name}} and {{split}} ({e})") from None
    mat_path = root / "datasets" / file_name
    if not mat_path.is_file():
        found = sorted(p.name for p in (root / "datasets").glob("*.mat")) if (root / "datasets").is_dir() else []
        hint = f" Files there: {', '.join(found)}." if found else ""
        if root.name == "datasets" and (root / file_name).is_file():  # data.root one level too deep
            hint += f" {file_name} is in {root} itself: set data.root={root.parent} (the folder holding datasets/)."
        else:
            hint += _root_nearby(root, f"datasets/{file_name}")
        raise DataError(
            f"split file {mat_path} not found (settings data.root={root}, data.name={name}, split={split}, "
            f"data.split_file={split_file}).{hint} {dataset_help(name)}"
        )
    try:
        s = load_dbstruct(mat_path)
    except ValueError as e:  # malformed file: the message names the file and the field
        raise DataError(_with_city_fix(str(e), root)) from None
    if s.which_set and split in ("train", "val", "test") and s.which_set.strip().lower() != split:
        log.warning(
            "%s says whichSet=%r but is read as the %s split (data.split_file / data.splits): is it the right file?",
            mat_path,
            s.which_set,
            split,
        )
    if s.num_db == 0 or s.num_q == 0:
        raise DataError(
            f"{mat_path}: the {split} split lists {s.num_db} database images and {s.num_q} queries; "
            "a split needs both (wrong file, or data.splits names the wrong split)"
        )
    try:
        db_paths = _image_paths(root / db_dir, s.db_image, mat_path, "data.db_dir")
        q_paths = _image_paths(root / query_dir, s.q_image, mat_path, "data.query_dir")
    except DataError as e:  # a synthetic city's images went missing after it was generated
        raise DataError(_with_city_fix(str(e), root)) from None
    if train_radius_m is None:
        if s.non_triv_pos_dist_sq_thr is None:
            train_radius_m = 10.0
            log.info("%s has no nonTrivPosDistSqThr: training positives within 10 m", mat_path.name)
        else:
            train_radius_m = float(np.sqrt(s.non_triv_pos_dist_sq_thr))
    return PlaceSplit(
        dataset=name,
        split=split,
        db_paths=db_paths,
        q_paths=q_paths,
        db_utm=np.asarray(s.utm_db, dtype=np.float64),
        q_utm=np.asarray(s.utm_q, dtype=np.float64),
        eval_radius_m=float(eval_radius_m if eval_radius_m is not None else s.pos_dist_thr),
        train_radius_m=float(train_radius_m),
        train_min_distance_m=float(train_min_distance_m),
        db_time=None if s.db_time_stamp is None or s.q_time_stamp is None else s.db_time_stamp,
        q_time=None if s.db_time_stamp is None or s.q_time_stamp is None else s.q_time_stamp,
        spatial_nms=bool(spatial_nms),
        nms_group_size=None if nms_group_size is None else int(nms_group_size),
    )


#: How many subfolders of a data.root that holds no split file are looked into for one (a root one level too high).
_ROOT_PROBE = 1000


def _root_nearby(root: Path, holds: str) -> str:
    """The hint for a data.root one level off: the folders above it (an image folder such as ``000/`` or
    ``queries_real/000/`` given as the root) or below it (the folder above the root) that hold the file or folder
    ``holds`` (a path under a root), as ``set data.root=...``; "" when none does. One stat per folder looked at."""
    for above in list(Path(os.path.abspath(root)).parents)[:2]:
        if (above / holds).exists():
            return f" {above} holds {holds}: set data.root={above} (data.root is the dataset's top folder)."
    below = []
    try:
        with os.scandir(root) as entries:
            for i, entry in enumerate(entries):
                if i >= _ROOT_PROBE:
                    break
                if entry.is_dir() and (Path(entry.path) / holds).exists():
                    below.append(Path(entry.path))
    except OSError:  # unreadable: no hint
        return ""
    if len(below) == 1:
        return f" {below[0]} holds {holds}: set data.root={below[0]} (data.root is the dataset's top folder)."
    if below:
        return f" Folders in it that hold {holds}: {', '.join(map(str, sorted(below)))}: set data.root to one."
    return ""


def _with_city_fix(message: str, root: Path) -> str:
    """``message`` about a file of ``root``, with the fix when ``root`` is a generated synthetic city (its manifest
    ``city.json``): a file of it damaged or deleted after it was generated (a copy cut short) is generated again."""
    if not (root / "city.json").is_file():
        return message
    return (
        f"{message.rstrip('.')}. {root} is a generated synthetic city: delete the folder and the next run generates it again "
        "(or python -m vpr.data.synthetic --out ... --force)"
    )


IMAGE_EXTENSIONS = (".jpg", ".png", ".jpeg", ".JPG", ".PNG", ".JPEG")


def _image_paths(folder: Path, names: Sequence[str], mat_path: Path, setting: str) -> list[Path]:
    """``folder / name`` for every listed image, each checked to exist (before any training or evaluation).

    When the listed file is missing but one with another image extension is there (Tokyo 24/7's database
    is listed as .jpg and unpacks as .png), every path takes the extension found on disk.
    """
    paths = [folder / n for n in names]
    if not paths:
        return paths
    first = paths[0]
    if _extension_on_disk(first) is None and "\\" in names[0]:
        # Written on Windows: 000\000000_pitch1_yaw1.jpg names a file in the folder 000, as / does. The first
        # listed image may be the one that is missing: the images listed next tell the separators too.
        slashed = [folder / n.replace("\\", "/") for n in names]
        if any(_extension_on_disk(p) is not None for p in slashed[:_ANCHOR_PROBE]):
            log.info("%s lists image paths with Windows separators (\\); reading them as folders", mat_path.name)
            paths = slashed
            first = paths[0]
    found = _extension_on_disk(first)
    anchor = first
    if found is None:
        # The first listed image is missing: the folder is the wrong one, unless the images listed next are there.
        anchor = next((p for p in paths[1:_ANCHOR_PROBE] if _extension_on_disk(p) is not None), None)
        if anchor is None and Path(names[0]).is_absolute():
            field = "dbImageFns" if setting == "data.db_dir" else "qImageFns"
            raise DataError(
                f"{mat_path} lists absolute image paths ({field}: {names[0]}), which are not on this machine; "
                f"{setting} places only relative ones: the split file's {field} must name the images relative "
                "to their folder, as the NetVLAD dataset specs do (000/000000_pitch1_yaw1.jpg)"
            )
        if anchor is None:
            raise DataError(
                f"image {first} listed in {mat_path} is missing (under any of the extensions "
                f"{'/'.join(e for e in IMAGE_EXTENSIONS if e.islower())}): the images must sit under "
                f"{folder} exactly as the .mat lists them; if they were unpacked elsewhere, set {setting} "
                f"(relative to data.root, or absolute){_sibling_holding(folder, first, setting)}"
            )
        found = _extension_on_disk(anchor)
    if found != anchor.suffix:
        log.info(
            "%s lists %s images; reading the %s files found in %s",
            mat_path.name,
            anchor.suffix or "(none)",
            found,
            folder,
        )
        paths = [p.with_suffix(found) for p in paths]
        anchor = anchor.with_suffix(found)
    missing = [p for p in paths if not p.is_file()]  # one stat per image: 0.3 s per 100k images here (warm cache)
    if missing:
        listed = [p.relative_to(folder) if p.is_relative_to(folder) else p for p in missing[:3]]
        shown = ", ".join(map(str, listed)) + (", ..." if len(missing) > 3 else "")
        raise DataError(
            f"{len(missing)} of the {len(paths)} images listed in {mat_path} are missing under {folder} ({shown}) "
            f"while {anchor.name} is there: the image folder is incomplete (re-extract it, or fix {setting})"
        )
    return paths


#: How many listed images are looked for when the first is missing, before the folder is taken for the wrong one.
_ANCHOR_PROBE = 1000


def _extension_on_disk(path: Path) -> str | None:
    """The extension under which ``path``'s image is on disk: its own, another image extension, or None."""
    if path.is_file():
        return path.suffix
    return next((ext for ext in IMAGE_EXTENSIONS if path.with_suffix(ext).is_file()), None)


def _sibling_holding(folder: Path, first: Path, setting: str) -> str:
    """A folder beside ``folder`` in the same dataset root that holds the first listed image (Tokyo 24/7's queries
    unpack as 247query_subset_v2 or 247query_v3), as a hint naming the setting; "" when there is none. Only inside
    a root: the folders beside a root are other datasets (Pittsburgh 30k and 250k share image names)."""
    if not folder.parent.is_dir() or not (folder.parent / "datasets").is_dir() or not first.is_relative_to(folder):
        return ""
    relative = first.relative_to(folder)
    for sibling in sorted(d for d in folder.parent.iterdir() if d.is_dir() and d != folder):
        if any((sibling / relative).with_suffix(ext).is_file() for ext in IMAGE_EXTENSIONS):
            return f". It is in {sibling}: set {setting}={sibling.name}"
    return ""


def parse_utm_filename(path: Path) -> tuple[float, float]:
    """``@<east>@<north>@...@.jpg`` -> (east, north), finite numbers."""
    parts = path.name.split("@")
    try:
        east, north = float(parts[1]), float(parts[2])
        if not (np.isfinite(east) and np.isfinite(north)):
            raise ValueError("not finite")
        return east, north
    except (IndexError, ValueError):
        raise DataError(
            f"{path}: file name does not carry UTM coordinates as '@<east>@<north>@...@.jpg' "
            "(folder layout of the deep-visual-geo-localization benchmark)"
        ) from None


#: Mean Earth radius (metres): latitude/longitude to local metres.
EARTH_RADIUS_M = 6_371_008.8
COORDINATES = ("utm", "latlon")


def latlon_to_local_metres(latlon: np.ndarray) -> np.ndarray:
    """(N, 2) latitude, longitude in degrees -> (N, 2) east, north in metres from their mean (an equirectangular
    projection about the mean: within 0.1 % of the true distances over tens of kilometres)."""
    lat, lon = np.radians(latlon[:, 0]), np.radians(latlon[:, 1])
    lat0, lon0 = lat.mean(), lon.mean()
    return np.stack([(lon - lon0) * np.cos(lat0), lat - lat0], axis=1) * EARTH_RADIUS_M


def _look_like_degrees(xy: np.ndarray) -> bool:
    """Positions a UTM reading could not mean: all within +-180 and spread over less than one unit (1 m in
    metres, 100 km in degrees)."""
    return bool(np.all(np.abs(xy) <= 180.0) and np.all(np.ptp(xy, axis=0) < 1.0)) and len(xy) > 1


def files_under(folder: Path) -> Iterator[Path]:
    """Every file under ``folder``, recursively, through linked folders too (``Path.rglob`` does not enter them, so
    the images of a folder linked into an image folder were left out without a word), each real folder once (a
    link back up the tree is not followed again)."""
    seen: set[str] = set()
    for here, folders, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(here)
        if real in seen:
            folders[:] = []
            continue
        seen.add(real)
        for name in files:
            yield Path(here) / name


def is_hidden(path: Path, folder: Path) -> bool:
    """Whether ``path``, found under ``folder``, is hidden there: a name starting with a dot on the way (the
    ``._<name>`` file macOS writes beside every file copied to a USB disk or a network share, ``.DS_Store``,
    ``.thumbnails/``) or the ``__MACOSX/`` folder of a zip made on macOS. Such files are never photos, even when
    their names end in ``.jpg``, and reading one as an image fails."""
    return any(part.startswith(".") or part == "__MACOSX" for part in path.relative_to(folder).parts)


def load_folder_split(
    root: str | Path,
    split: str,
    name: str = "folder",
    eval_radius_m: float = 25.0,
    train_radius_m: float = 10.0,
    spatial_nms: bool = False,
    train_min_distance_m: float = 0.0,
    coordinates: str = "utm",
) -> PlaceSplit:
    """Read ``root/<split>/{database,queries}/*`` whose names carry UTM coordinates (``@east@north@``), or with
    ``coordinates="latlon"`` latitude and longitude in degrees (``@lat@lon@``), turned into local metres."""
    if coordinates not in COORDINATES:
        raise DataError(
            f"data.coordinates={coordinates}: choose utm (@east@north@ in metres) or latlon (@lat@lon@ in degrees)"
        )
    if root is None or str(root) in ("", "None"):
        raise DataError(
            f"data.root is not set for {name} (data=folder): point it at the folder holding "
            f"<split>/database/ and <split>/queries/, e.g. data.root=/data/{name}"
        )
    base = Path(root).expanduser() / split
    if not (base / "database").is_dir() or not (base / "queries").is_dir():
        root_itself = (Path(root).expanduser() / "database").is_dir() and (Path(root).expanduser() / "queries").is_dir()
        hint = (
            (
                f"; {root} itself holds them: one split without a split folder is data.splits.{split}=. "
                "(e.g. eval.py data=folder data.root=... data.splits.test=.)"
            )
            if root_itself
            else "; "
            + (_root_nearby(Path(root).expanduser(), f"{split}/database").strip().rstrip(".") or "check data.root")
        )
        raise DataError(
            f"{base} must hold 'database/' and 'queries/' folders (data=folder layout: "
            f"<root>/<split>/database, <root>/<split>/queries){hint}"
        )
    exts = {".jpg", ".jpeg", ".png"}
    db_paths, q_paths = (
        sorted(p for p in files_under(base / sub) if p.suffix.lower() in exts and not is_hidden(p, base / sub))
        for sub in ("database", "queries")
    )
    if not db_paths or not q_paths:
        raise DataError(f"{base}: no images found under database/ or queries/")
    positions = np.array([parse_utm_filename(p) for p in db_paths + q_paths], dtype=np.float64)
    if coordinates == "latlon":
        outside = np.flatnonzero((np.abs(positions[:, 0]) > 90.0) | (np.abs(positions[:, 1]) > 180.0))
        if outside.size:
            first = (db_paths + q_paths)[outside[0]]
            raise DataError(
                f"{base}: data.coordinates=latlon, but {outside.size} of the {len(positions)} file names carry no "
                f"latitude (-90 to 90) and longitude (-180 to 180) in degrees, e.g. {first.name}: UTM names "
                "(@<east>@<north>@ in metres) need data.coordinates=utm"
            )
        positions = latlon_to_local_metres(positions)
    elif _look_like_degrees(positions):
        raise DataError(
            f"{base}: the positions in the file names all lie within {np.ptp(positions, axis=0).max():.3g} of each "
            f"other, e.g. {db_paths[0].name}: latitude and longitude in degrees, read as metres, would make every "
            "database image a match. For @<lat>@<lon>@ names set data.coordinates=latlon; UTM names carry metres "
            "(@<east>@<north>@)"
        )
    return PlaceSplit(
        dataset=name,
        split=split,
        db_paths=db_paths,
        q_paths=q_paths,
        db_utm=positions[: len(db_paths)],
        q_utm=positions[len(db_paths) :],
        eval_radius_m=eval_radius_m,
        train_radius_m=train_radius_m,
        train_min_distance_m=float(train_min_distance_m),
        spatial_nms=spatial_nms,
    )


def load_image(path: Path) -> Image.Image:
    """Open an image as RGB, upright as its EXIF orientation says (a phone's photo is stored sideways with a tag
    that viewers, and hloc's image reader, apply), 16-bit images scaled to 8 bits (a plain conversion clips them
    to white); a missing, corrupt or oversized file is one error naming it."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
                values = np.asarray(im, dtype=np.float64)
                top = 65535.0 if values.max(initial=0) > 255 or im.mode != "I" else 255.0
                return Image.fromarray(np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
            return im.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"image {path} not found") from None
    except Image.DecompressionBombError as e:
        raise DataError(f"image {path} is too large to decode safely ({e}); resize it") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"image {path} is corrupt or not an image ({e}); re-extract or regenerate it") from None


class ImageDataset(Dataset):
    """Images by index, transformed. Item: (image (3, H, W), index)."""

    def __init__(self, paths: Sequence[Path], transform: Callable[[Image.Image], torch.Tensor]):
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(load_image(self.paths[index])), index
