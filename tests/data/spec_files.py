"""Small datasets in the real files' on-disk layout, written from the format's description, not by vpr.

Split files are built with ``scipy.io.savemat`` (MATLAB v5) or h5py (MATLAB v7.3 layout: a 512-byte header,
dimensions reversed, cells as object references), with the real field names or the older ones. Images are
PNG/JPEG files written with PIL: every place has its own random texture, its images are noisy copies of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from PIL import Image

REAL_NAMES = (
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
OLD_NAMES = {"dbImageFns": "dbImage", "qImageFns": "qImage", "numImages": "numDb", "numQueries": "numQ"}


@dataclass
class SpecDataset:
    """What a fixture wrote: the root, the listed names, positions (N, 2), the image folders."""

    root: Path
    db_names: list[str]
    q_names: list[str]
    utm_db: np.ndarray
    utm_q: np.ndarray
    db_dir: Path
    q_dir: Path
    db_suffix_on_disk: str | None = None  # the extension the database files really have, when not the listed one


def _write_image(path: Path, base: np.ndarray, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.clip(base + rng.normal(scale=25, size=base.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(pixels).save(path)


def _cell(items: list[str]) -> np.ndarray:
    c = np.empty((len(items), 1), dtype=object)
    for i, text in enumerate(items):
        c[i, 0] = text
    return c


def spec_fields(
    which_set: str,
    db_names: list[str],
    utm_db: np.ndarray,
    q_names: list[str],
    utm_q: np.ndarray,
    non_triv_sq: float | None = None,
) -> dict:
    """The dbStruct fields in the real files' order: N x 1 cells, 2 x N UTM, 1 x 1 doubles (no training radius
    when ``non_triv_sq`` is None, as in Tokyo 24/7)."""
    fields = {
        "whichSet": which_set,
        "dbImageFns": _cell(db_names),
        "utmDb": np.asarray(utm_db).T.copy(),
        "qImageFns": _cell(q_names),
        "utmQ": np.asarray(utm_q).T.copy(),
        "numImages": np.array([[float(len(db_names))]]),
        "numQueries": np.array([[float(len(q_names))]]),
        "posDistThr": np.array([[25.0]]),
        "posDistSqThr": np.array([[625.0]]),
    }
    if non_triv_sq is not None:
        fields["nonTrivPosDistSqThr"] = np.array([[float(non_triv_sq)]])
    return fields


def write_v5(path: Path, fields: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"dbStruct": fields})


def write_v73(path: Path, fields: dict) -> None:
    """The struct as MATLAB's ``save -v7.3`` lays it out in HDF5."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        g = f.create_group("dbStruct")
        g.attrs["MATLAB_class"] = np.bytes_("struct")

        def char(parent, name: str, text: str):
            ds = parent.create_dataset(name, data=np.array([[ord(c)] for c in text], dtype=np.uint16))
            ds.attrs["MATLAB_class"] = np.bytes_("char")
            return ds

        for name, value in fields.items():
            if isinstance(value, str):
                char(g, name, value)
            elif isinstance(value, np.ndarray) and value.dtype == object:  # N x 1 cell -> HDF5 (1, N) references
                ref_arr = np.empty((1, value.size), dtype=h5py.ref_dtype)
                for i, text in enumerate(value.reshape(-1)):
                    ref_arr[0, i] = char(refs, f"{name}{i}", str(text)).ref
                g.create_dataset(name, data=ref_arr).attrs["MATLAB_class"] = np.bytes_("cell")
            else:
                g.create_dataset(name, data=np.asarray(value, dtype=np.float64).T).attrs["MATLAB_class"] = np.bytes_(
                    "double"
                )
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .")


def _layout(num_places: int, per_place: int, seed: int, spacing_m: float = 100.0):
    rng = np.random.default_rng(seed)
    centres = np.stack([584000.0 + spacing_m * np.arange(num_places), np.full(num_places, 4477000.0)], axis=1)
    textures = rng.uniform(0, 255, size=(num_places, 48, 64, 3))
    return rng, centres, textures


def pittsburgh_like(
    root: Path, *, name: str = "pitts30k", split: str = "test", fmt: str = "v5", num_places: int = 8, seed: int = 0
) -> SpecDataset:
    """Pittsburgh's layout: ``datasets/<name>_<split>.mat``, database under the root, queries in queries_real/.

    fmt: ``v5`` (real names), ``v73`` (real names, HDF5) or ``old`` (v5 with dbImage/qImage/numDb/numQ).
    Three database images per place (2 m apart), one query per place 4 m from it.
    """
    rng, centres, textures = _layout(num_places, 3, seed)
    db_names, utm_db, q_names, utm_q = [], [], [], []
    for p in range(num_places):
        for yaw in range(3):
            db_names.append(f"{p // 4:03d}/{p:06d}_pitch1_yaw{yaw + 1}.jpg")
            utm_db.append(centres[p] + [2.0 * yaw, 0.0])
            _write_image(root / db_names[-1], textures[p], rng)
        q_names.append(f"{p // 4:03d}/{p:06d}_pitch2_yaw1.jpg")
        utm_q.append(centres[p] + [0.0, 4.0])
        _write_image(root / "queries_real" / q_names[-1], textures[p], rng)
    utm_db, utm_q = np.array(utm_db), np.array(utm_q)
    fields = spec_fields(split, db_names, utm_db, q_names, utm_q, non_triv_sq=100.0)
    path = root / "datasets" / f"{name}_{split}.mat"
    if fmt == "v5":
        write_v5(path, fields)
    elif fmt == "v73":
        write_v73(path, fields)
    elif fmt == "old":
        write_v5(path, {OLD_NAMES.get(k, k): v for k, v in fields.items()})
    else:
        raise ValueError(fmt)
    return SpecDataset(root, db_names, q_names, utm_db, utm_q, root, root / "queries_real")


def tokyo247_like(root: Path, *, num_places: int = 5, seed: int = 1) -> SpecDataset:
    """Tokyo 24/7's layout: ``datasets/tokyo247.mat`` (test, no nonTrivPosDistSqThr), 12 cutouts per panorama
    listed as .jpg but stored as .png under database_gsv_vga/, queries as .jpg in 247query_subset_v2/.

    Panoramas lie 30 m apart and each query 8 m from its own, so a query's true matches are the 12 cutouts of
    one panorama (the next is 31 m away): without spatial NMS they could fill its whole top 10.
    """
    rng, centres, textures = _layout(num_places, 12, seed, spacing_m=30.0)
    db_names, utm_db, q_names, utm_q = [], [], [], []
    for p in range(num_places):
        for cut in range(12):
            db_names.append(f"{p:05d}/{p:06d}_W_{30 * cut:03d}.jpg")
            utm_db.append(centres[p])  # the 12 cutouts share their panorama's position
            _write_image((root / "database_gsv_vga" / db_names[-1]).with_suffix(".png"), textures[p], rng)
        q_names.append(f"{p + 1:05d}.jpg")
        utm_q.append(centres[p] + [0.0, 8.0])
        _write_image(root / "247query_subset_v2" / q_names[-1], textures[p], rng)
    utm_db, utm_q = np.array(utm_db), np.array(utm_q)
    write_v5(root / "datasets" / "tokyo247.mat", spec_fields("test", db_names, utm_db, q_names, utm_q))
    return SpecDataset(
        root,
        db_names,
        q_names,
        utm_db,
        utm_q,
        root / "database_gsv_vga",
        root / "247query_subset_v2",
        db_suffix_on_disk=".png",
    )
