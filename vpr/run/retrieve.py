"""retrieve.py's work: the top-k database images of each query image, for folders of one's own images.

No coordinates are needed: this is what a trained VPR model is for in a localisation pipeline (retrieve
candidates, then match local features). The outputs follow hloc's file layout (vpr/eval/exports.py).
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from PIL import Image, UnidentifiedImageError

from vpr.build import check_common_settings, command_line_overrides, whole_number
from vpr.checkpoints import network_of_checkpoint, resolve_ckpt_path
from vpr.data.dataset import ImageDataset, files_under, is_hidden
from vpr.data.transforms import eval_transform
from vpr.devices import reuse_freed_memory
from vpr.errors import ConfigError, DataError, stop_if_sigterm_was_swallowed
from vpr.eval.exports import write_global_features, write_pairs, write_rankings
from vpr.eval.pca import check_pca_dim, load_or_fit_pca
from vpr.eval.search import knn_search
from vpr.io import path_under, write_json_atomic
from vpr.run import set_aside_earlier_outputs, single_log_stream

log = logging.getLogger(__name__)

#: What retrieve.py writes in its run folder (shell patterns): an earlier run's are set aside before it starts.
RETRIEVAL_OUTPUTS = (
    "retrievals.csv",
    "retrievals.json",
    "global-feats.h5",
    "pairs-top*.txt",
    "retrieve.json",
    "pca.npz",
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def list_images(folder: Any, setting: str, exclude: Sequence[str] = ()) -> list[Path]:
    """Every image file under ``folder`` (recursively, linked folders included) whose name matches none of the
    ``exclude`` patterns (shell wildcards; a pattern holding ``/`` is matched against the path under ``folder``),
    sorted by path. Hidden files and folders (:func:`vpr.data.dataset.is_hidden`: macOS's ``._*`` copies beside
    each photo, ``__MACOSX/``) are left out, with a log line counting them; so are files of other types, counted by
    suffix (photos in a format that is not read, such as an iPhone's HEIC, with the conversion to make)."""
    if folder in (None, ""):
        raise ConfigError(f"{setting}=DIR is required: the folder of {setting} images")
    path = Path(str(folder)).expanduser()
    if path.is_file():
        raise ConfigError(f"{setting}={folder} is a file: give the folder holding the {setting} images")
    if not path.is_dir():
        raise ConfigError(f"{setting}={folder}: no such folder")
    everything = [f for f in files_under(path) if f.is_file()]
    found = [f for f in everything if f.suffix.lower() in IMAGE_SUFFIXES]
    hidden = [f for f in found if is_hidden(f, path)]
    if hidden:
        log.info(
            "%s=%s: %d hidden files left out (names starting with a dot or under __MACOSX/, e.g. %s)",
            setting,
            folder,
            len(hidden),
            min(hidden).relative_to(path).as_posix(),
        )
    others = Counter(
        f.suffix.lower() or "(no suffix)"
        for f in everything
        if f.suffix.lower() not in IMAGE_SUFFIXES and not is_hidden(f, path)
    )
    if others:
        counts = ", ".join(f"{suffix} ({n})" for suffix, n in sorted(others.items(), key=lambda c: (-c[1], c[0])))
        photos = sorted(s for s in others if s in UNREAD_PHOTO_SUFFIXES)
        (log.warning if photos else log.info)(
            "%s=%s: %d files of other types left out: %s%s",
            setting,
            folder,
            sum(others.values()),
            counts,
            f" ({unread_photos_hint(photos)})" if photos else "",
        )
    files = sorted(
        f for f in found if not is_hidden(f, path) and not any(excluded(f, path, pattern) for pattern in exclude)
    )
    if not files:
        left_out = f"; {len(hidden)} hidden files left out" if hidden else ""
        photos = sorted(s for s in others if s in UNREAD_PHOTO_SUFFIXES)
        if photos:
            left_out += f"; {sum(others[s] for s in photos)} photos of other formats: {unread_photos_hint(photos)}"
        raise ConfigError(
            f"{setting}={folder}: no images in it or its subfolders ({' '.join(IMAGE_SUFFIXES)}){left_out}"
        )
    return files


#: Photo formats the image reader (PIL without plugins) does not read: counted apart, with the conversion to make.
UNREAD_PHOTO_SUFFIXES = {
    ".heic": "HEIC",
    ".heif": "HEIF",
    ".avif": "AVIF",
    ".jxl": "JPEG XL",
    ".dng": "DNG raw",
    ".cr2": "Canon raw",
    ".cr3": "Canon raw",
    ".nef": "Nikon raw",
    ".arw": "Sony raw",
}


def unread_photos_hint(suffixes: Sequence[str]) -> str:
    """Which of ``suffixes`` are photos that are not read, and the conversion that makes them readable."""
    kinds = ", ".join(f"{UNREAD_PHOTO_SUFFIXES[s]} ({s})" for s in suffixes)
    return (
        f"{kinds} photos are not read: convert them to JPEG first, e.g. with ImageMagick "
        "(magick mogrify -format jpg *.heic) or libheif's heif-convert"
    )


def excluded(f: Path, folder: Path, pattern: str) -> bool:
    """Whether ``pattern`` leaves ``f`` (found under ``folder``) out: a pattern holding ``/`` is matched against
    the path under ``folder`` (``query/*``), any other against the file's name (``*_labels.png``)."""
    if "/" in pattern:
        return fnmatch.fnmatch(f.relative_to(folder).as_posix(), pattern)
    return fnmatch.fnmatch(f.name, pattern)


#: How many unreadable images an error names before "and N more".
SHOWN_BAD_IMAGES = 5


def check_image_headers(files: Sequence[Path], folder: Any, setting: str) -> None:
    """Read every image's header (PIL reads only the first bytes: about 0.1 ms per file): a file that is not an
    image PIL can read, though named like one, is refused here with the others like it, before the network is loaded
    or any image encoded, not in the middle of the encoding. A file cut short after its header still fails there."""
    bad = []
    for f in files:
        try:
            with Image.open(f) as im:
                im.size  # noqa: B018  (the header's size: read by open)
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, ValueError) as e:
            bad.append((f, "not a known image format" if isinstance(e, UnidentifiedImageError) else str(e)))
    if bad:
        path = Path(str(folder)).expanduser()
        shown = "; ".join(f"{f.relative_to(path).as_posix()} ({why})" for f, why in bad[:SHOWN_BAD_IMAGES]) + (
            f"; and {len(bad) - SHOWN_BAD_IMAGES} more" if len(bad) > SHOWN_BAD_IMAGES else ""
        )
        raise DataError(
            f"{setting}={folder}: {len(bad)} of its {len(files)} image files are not images that can be read: "
            f"{shown}. Replace them (a copy cut short: copy them again), delete them, or leave them out with "
            "exclude=[...] (shell wildcards)"
        )


def nested_folders_warning(cfg: DictConfig, db_names: list[str], q_names: list[str]) -> None:
    """Warn when one of the folders lies inside the other (queries=mycity/query inside database=mycity) and its
    images are in both sets: queries are then ranked among each other as database images. The same folder for both
    (retrieval within one set) is no mistake and gets no warning, nor an inner folder that ``exclude`` leaves out."""
    db, q = (Path(os.path.abspath(Path(str(cfg.get(s))).expanduser())) for s in ("database", "queries"))
    both = len(set(db_names) & set(q_names))
    if db == q or not both:
        return
    for inner, outer, inner_setting, outer_setting in ((q, db, "queries", "database"), (db, q, "database", "queries")):
        if inner.is_relative_to(outer):
            log.warning(
                "%s=%s lies inside %s=%s: %d of its images are %s images too (each query is left out of its own "
                "ranking, but the other queries are ranked as database images). If that is not meant, keep the "
                "two sets in separate folders, or leave the inner folder out of the %s with "
                "'exclude=[*_labels.png,%s/*]'",
                inner_setting,
                cfg.get(inner_setting),
                outer_setting,
                cfg.get(outer_setting),
                both,
                outer_setting,
                outer_setting,
                inner.relative_to(outer).as_posix(),
            )


def image_names(files: list[Path], root: Path, setting: str) -> list[str]:
    """The images' paths relative to ``root``, both made absolute without following links (an image linked into
    the folder keeps its name there), resolved only where that is not enough (a root reached through a link)."""
    names = []
    for f in files:
        relative = path_under(f, root)
        if relative is None:
            raise ConfigError(f"image_root={root}: {setting} image {f} is not inside it")
        names.append(relative.as_posix())
    return names


def image_root(cfg: DictConfig) -> Path:
    """The folder image names are relative to: ``image_root``, else the deepest folder holding both sets, made
    absolute without following links."""
    if cfg.get("image_root"):
        return Path(os.path.abspath(Path(str(cfg.image_root)).expanduser()))
    folders = [os.path.abspath(Path(str(cfg.get(s))).expanduser()) for s in ("database", "queries")]
    return Path(os.path.commonpath(folders))


def warn_about_names(db_names: list[str], q_names: list[str], top_k: int) -> None:
    """Warn when ``top_k`` exceeds the database, and when names hold spaces, which hloc's pairs files cannot."""
    if top_k > len(db_names):
        log.warning(
            "top_k=%d but the database has %d images: every query ranks all of them (pairs-top%d.txt)",
            top_k,
            len(db_names),
            len(db_names),
        )
    spaced = sorted({n for n in db_names + q_names if any(c.isspace() for c in n)})
    if spaced:
        log.warning(
            "%d image names contain spaces (e.g. %r): hloc splits pairs-file lines on whitespace, so rename "
            "them (or the folders above them, up to image_root) before giving pairs-top*.txt to hloc",
            len(spaced),
            spaced[0],
        )


def database_index_of_queries(db_names: list[str], q_names: list[str]) -> list[int]:
    """Per query, the database index of the same image (the same name), -1 if it is not in the database."""
    db_index = {n: i for i, n in enumerate(db_names)}
    own_index = [db_index.get(n, -1) for n in q_names]
    if any(i >= 0 for i in own_index):
        log.info(
            "%d queries are database images too: each is left out of its own ranking (no pair of an image with "
            "itself, as hloc's retrieval pairs)",
            sum(i >= 0 for i in own_index),
        )
    return own_index


def rank_without_self(db: np.ndarray, queries: np.ndarray, top_k: int, own: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(distances, indices) of the ``top_k`` nearest database images of each query, leaving out the query's own
    image where it is in the database too (``own[i]``: its database index, -1 if none), as hloc's retrieval pairs
    do: a query paired with itself at distance 0 is no pair."""
    if not any(i >= 0 for i in own):
        return knn_search(db, queries, top_k, squared=False)
    k = min(top_k, len(db) - 1)
    distances, indices = knn_search(db, queries, min(k + 1, len(db)), squared=False)
    keep = np.ones(indices.shape, dtype=bool)
    for row, i in enumerate(own):
        hits = np.flatnonzero(indices[row] == i) if i >= 0 else []
        keep[row, hits[0] if len(hits) else -1] = False  # itself, else the farthest of the k + 1
    return distances[keep].reshape(len(own), -1)[:, :k], indices[keep].reshape(len(own), -1)[:, :k]


def write_retrieval_files(
    out_dir: Path,
    db_names: list[str],
    q_names: list[str],
    db: np.ndarray,
    queries: np.ndarray,
    indices: np.ndarray,
    distances: np.ndarray,
) -> list[Path]:
    """retrievals.csv and .json, global-feats.h5 and pairs-top<k>.txt in ``out_dir``; returns their paths."""
    written = write_rankings(out_dir, q_names, db_names, indices, distances)
    # A name in both sets is one file (names are paths under one root): its descriptor is stored once.
    in_db = set(db_names)
    query_only = [i for i, n in enumerate(q_names) if n not in in_db]
    written.append(
        write_global_features(
            out_dir / "global-feats.h5",
            db_names + [q_names[i] for i in query_only],
            np.concatenate([db, queries[query_only]]),
        )
    )
    written.append(write_pairs(out_dir / f"pairs-top{indices.shape[1]}.txt", q_names, db_names, indices))
    return written


def run_retrieval(cfg: DictConfig) -> dict[str, Any]:
    stop_if_sigterm_was_swallowed()  # a signal during the imports: stop before the work
    reuse_freed_memory()  # the steps' large activations from freed memory, not fresh pages (glibc)
    single_log_stream()
    check_common_settings(cfg, trainer=False)  # no Trainer: the GPU if there is one, else the CPU
    top_k = whole_number(cfg, "top_k", 1)
    pca_dim = whole_number(cfg, "pca_dim", 1)
    if pca_dim and cfg.get("pca_file"):
        raise ConfigError("give pca_file=PATH (use a saved PCA) or pca_dim=N (fit one on this database), not both")
    if not cfg.get("ckpt_path"):
        raise ConfigError(
            "ckpt_path=PATH is required: a checkpoint written by train.py (or ckpt_path=last), or a "
            "released one of the NetVLAD baseline or the paper code"
        )
    # hydra.run.dir given twice: the earlier run's files (another top_k's pairs file, a PCA this run does not use)
    # would pass for this run's; they are moved to .earlier/, except the PCA this run reads (pca_file=<it>).
    out_dir = Path(cfg.paths.output_dir)
    reused = cfg.get("pca_file") and path_under(str(cfg.pca_file), out_dir) == Path("pca.npz")
    set_aside_earlier_outputs(out_dir, keep=("pca.npz",) if reused else (), outputs=RETRIEVAL_OUTPUTS)
    exclude = [str(p) for p in (cfg.get("exclude") or [])]
    db_files = list_images(cfg.get("database"), "database", exclude)
    q_files = list_images(cfg.get("queries"), "queries", exclude)
    root = image_root(cfg)
    db_names, q_names = image_names(db_files, root, "database"), image_names(q_files, root, "queries")
    nested_folders_warning(cfg, db_names, q_names)
    # Every header read before the network is loaded: a file that is no image stops the run now, not mid-encoding.
    check_image_headers(db_files, cfg.get("database"), "database")
    check_image_headers(q_files, cfg.get("queries"), "queries")

    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, cfg.paths.log_dir, "train")
    module, cfg = network_of_checkpoint(cfg, ckpt_path, command_line_overrides())
    size = tuple(int(s) for s in cfg.data.image_size)
    transform = eval_transform(size)
    log.info(
        "retrieval with %s: %d database and %d query images at %dx%d, names relative to %s",
        ckpt_path,
        len(db_files),
        len(q_files),
        size[0],
        size[1],
        root,
    )
    if pca_dim:  # before the encoding: the database's size and the descriptor's are known
        check_pca_dim(pca_dim, len(db_files), int(module.head.out_dim), "database images")
    db = module.encode_dataset(ImageDataset(db_files, transform), "database").cpu().numpy()
    queries = module.encode_dataset(ImageDataset(q_files, transform), "queries").cpu().numpy()

    pca, record = load_or_fit_pca(
        pca_dim,
        cfg.get("pca_file"),
        db.shape[1],
        "database images",
        len(db),
        lambda: db,
        save_to=out_dir / "pca.npz",
    )
    if pca is not None:
        db, queries = pca.transform(db).astype(np.float32), pca.transform(queries).astype(np.float32)
        log.info("PCA-whitening to %d dimensions (%s)", db.shape[1], record.get("pca_file"))

    warn_about_names(db_names, q_names, top_k)
    distances, indices = rank_without_self(db, queries, top_k, database_index_of_queries(db_names, q_names))
    written = write_retrieval_files(out_dir, db_names, q_names, db, queries, indices, distances)
    summary = {
        "checkpoint": ckpt_path,
        "image_root": str(root),
        "num_database": len(db_names),
        "num_queries": len(q_names),
        "top_k": int(indices.shape[1]),
        "descriptor_dim": int(db.shape[1]),
        "pca_file": record.get("pca_file"),
        "image_size": list(size),
    }
    write_json_atomic(out_dir / "retrieve.json", summary)
    print(
        f"\n{len(q_names)} queries x top {indices.shape[1]} of {len(db_names)} database images:\n"
        + "\n".join(f"  {p}" for p in written)
        + "\n",
        flush=True,
    )
    return summary
