"""Place-recognition splits (database + queries with UTM positions) and the image datasets built on them.

A :class:`PlaceSplit` is everything a split's `.mat` file says, resolved to image paths on disk, plus the
ground truth derived from the UTM positions (see :mod:`vpr.data.ground_truth`). Two on-disk layouts read into it:

- Pittsburgh (also written by the synthetic city): ``root/datasets/<name>_<split>.mat`` holding ``dbStruct``,
  database images under ``root``, queries under ``root/queries_real``.
- Folder layout of the deep-visual-geo-localization benchmark: ``root/<split>/database/*.jpg`` and
  ``root/<split>/queries/*.jpg`` with file names ``@<utm_east>@<utm_north>@...@.jpg``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from vpr.data.ground_truth import positives_within
from vpr.data.mat import load_dbstruct

PITTSBURGH_HELP = (
    "Pittsburgh 30k/250k: the images (Pittsburgh 250k, Torii et al., CVPR 2013) are granted on request by their "
    "authors; the split files (netvlad_v100_datasets.tar.gz, Arandjelovic et al., CVPR 2016) come from the NetVLAD "
    "project page and unpack into <root>/datasets/. To run without them, generate the synthetic city: "
    "`python -m vpr.data.synthetic --out DIR --preset default` and use data=synthetic."
)


class DataError(RuntimeError):
    """A dataset problem the user must fix (missing file, malformed split, corrupt image)."""


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
    """

    dataset: str
    split: str
    db_paths: list[Path]
    q_paths: list[Path]
    db_utm: np.ndarray
    q_utm: np.ndarray
    eval_radius_m: float = 25.0
    train_radius_m: float = 10.0
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

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
        """Per query, the database indices within ``eval_radius_m``, nearest first."""
        key = ("eval", self.eval_radius_m)
        if key not in self._cache:
            self._cache[key] = positives_within(self.db_utm, self.q_utm, self.eval_radius_m)
        return self._cache[key]

    def train_positives(self) -> list[np.ndarray]:
        """Per query, the database indices within ``train_radius_m`` (non-trivial positives), nearest first."""
        key = ("train", self.train_radius_m)
        if key not in self._cache:
            self._cache[key] = positives_within(self.db_utm, self.q_utm, self.train_radius_m)
        return self._cache[key]

    def describe(self) -> str:
        return f"{self.dataset}/{self.split}: {self.num_db} database, {self.num_q} queries"


def load_pittsburgh_split(
    root: str | Path,
    name: str,
    split: str,
    eval_radius_m: float | None = None,
    train_radius_m: float | None = None,
    check_images: bool = True,
) -> PlaceSplit:
    """Read ``root/datasets/<name>_<split>.mat`` and resolve its image paths.

    Radii default to the file's ``posDistThr`` (25 m) and ``sqrt(nonTrivPosDistSqThr)`` (10 m).
    """
    if root is None or str(root) in ("", "None", "???"):
        raise DataError(
            "data.root is not set: point it at the dataset folder (data.root=/path/to/pittsburgh or the "
            f"VPR_PITTSBURGH_ROOT environment variable). {PITTSBURGH_HELP}"
        )
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset root {root} does not exist (setting data.root). {PITTSBURGH_HELP}")
    mat_path = root / "datasets" / f"{name}_{split}.mat"
    if not mat_path.is_file():
        found = sorted(p.name for p in (root / "datasets").glob("*.mat")) if (root / "datasets").is_dir() else []
        hint = f" Files there: {', '.join(found)}." if found else ""
        raise DataError(
            f"split file {mat_path} not found (settings data.root={root}, data.name={name}, split={split}).{hint} "
            f"{PITTSBURGH_HELP}"
        )
    try:
        s = load_dbstruct(mat_path)
    except ValueError as e:  # malformed file: the message names the file and the field
        raise DataError(str(e)) from None
    db_paths = [root / p for p in s.db_image]
    q_paths = [root / "queries_real" / p for p in s.q_image]
    if check_images:
        _check_exists(db_paths[:1] + db_paths[-1:] + q_paths[:1] + q_paths[-1:], mat_path)
    return PlaceSplit(
        dataset=name,
        split=split,
        db_paths=db_paths,
        q_paths=q_paths,
        db_utm=np.asarray(s.utm_db, dtype=np.float64),
        q_utm=np.asarray(s.utm_q, dtype=np.float64),
        eval_radius_m=float(eval_radius_m if eval_radius_m is not None else s.pos_dist_thr),
        train_radius_m=float(
            train_radius_m if train_radius_m is not None else np.sqrt(s.non_triv_pos_dist_sq_thr)
        ),
    )


def parse_utm_filename(path: Path) -> tuple[float, float]:
    """``@<east>@<north>@...@.jpg`` -> (east, north)."""
    parts = path.name.split("@")
    try:
        return float(parts[1]), float(parts[2])
    except (IndexError, ValueError):
        raise DataError(
            f"{path}: file name does not carry UTM coordinates as '@<east>@<north>@...@.jpg' "
            "(folder layout of the deep-visual-geo-localization benchmark)"
        ) from None


def load_folder_split(
    root: str | Path, split: str, name: str = "folder", eval_radius_m: float = 25.0, train_radius_m: float = 10.0
) -> PlaceSplit:
    """Read ``root/<split>/{database,queries}/*`` whose names carry UTM coordinates."""
    base = Path(root).expanduser() / split
    if not (base / "database").is_dir() or not (base / "queries").is_dir():
        raise DataError(
            f"{base} must hold 'database/' and 'queries/' folders (data=folder layout); check data.root"
        )
    exts = {".jpg", ".jpeg", ".png"}
    db_paths = sorted(p for p in (base / "database").rglob("*") if p.suffix.lower() in exts)
    q_paths = sorted(p for p in (base / "queries").rglob("*") if p.suffix.lower() in exts)
    if not db_paths or not q_paths:
        raise DataError(f"{base}: no images found under database/ or queries/")
    return PlaceSplit(
        dataset=name,
        split=split,
        db_paths=db_paths,
        q_paths=q_paths,
        db_utm=np.array([parse_utm_filename(p) for p in db_paths], dtype=np.float64),
        q_utm=np.array([parse_utm_filename(p) for p in q_paths], dtype=np.float64),
        eval_radius_m=eval_radius_m,
        train_radius_m=train_radius_m,
    )


def _check_exists(paths: Sequence[Path], mat_path: Path) -> None:
    for p in paths:
        if not p.is_file():
            raise DataError(
                f"image {p} listed in {mat_path} is missing: the images must sit under data.root exactly as "
                "the .mat lists them (database images under the root, queries under queries_real/)"
            )


def load_image(path: Path) -> Image.Image:
    """Open an image as RGB, naming the file in the error if it is missing or corrupt."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"image {path} not found") from None
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
