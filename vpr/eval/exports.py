"""Files that other tools read: ranked retrievals (CSV, JSON), global descriptors and retrieval pairs in the
layout of hloc (Hierarchical-Localization), and per-query predictions of an evaluation.

hloc's layout: one HDF5 file with a group per image, named by the image's path relative to the image root
(slashes make nested groups), holding the dataset ``global_descriptor`` (1-D float); pairs as a text file with
one ``query_name database_name`` line per retrieved pair. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vpr.io import atomic_path, write_text_atomic


def write_global_features(path: str | os.PathLike, names: Sequence[str], descriptors: np.ndarray) -> Path:
    """``descriptors[i]`` (float32) under ``<names[i]>/global_descriptor``, hloc's global-feature layout."""
    import h5py

    if len(names) != len(descriptors):
        raise ValueError(f"{len(names)} names for {len(descriptors)} descriptors")
    if len(set(names)) != len(names):
        raise ValueError("image names must be unique in one feature file")
    with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        for name, d in zip(names, descriptors):
            f.create_group(name).create_dataset("global_descriptor", data=np.asarray(d, dtype=np.float32))
    return Path(path)


def write_pairs(
    path: str | os.PathLike, query_names: Sequence[str], db_names: Sequence[str], indices: np.ndarray
) -> Path:
    """hloc's retrieval pairs: ``query database`` per line, each query's retrievals nearest first."""
    lines = [f"{query_names[q]} {db_names[i]}" for q in range(len(query_names)) for i in indices[q] if i >= 0]
    return write_text_atomic(path, "\n".join(lines) + ("\n" if lines else ""))


def write_rankings(
    out_dir: Path,
    query_names: Sequence[str],
    db_names: Sequence[str],
    indices: np.ndarray,
    distances: np.ndarray,
    correct: np.ndarray | None = None,
    stem: str = "retrievals",
) -> list[Path]:
    """``<stem>.csv`` (query, rank, database, distance[, correct]: one line per retrieved image) and ``<stem>.json``
    (per query, its ranked list). Ranks start at 1; distances are L2 between the descriptors searched."""
    header = ["query", "rank", "database", "distance"] + (["correct"] if correct is not None else [])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    ranked: dict[str, list[dict]] = {}
    for q, name in enumerate(query_names):
        ranked[name] = []
        for r, i in enumerate(indices[q]):
            if i < 0:
                continue
            row = {"rank": r + 1, "database": db_names[i], "distance": float(f"{float(distances[q, r]):.7g}")}
            if correct is not None:
                row["correct"] = bool(correct[q, r])
            ranked[name].append(row)
            writer.writerow([name, *row.values()])
    write_text_atomic(out_dir / f"{stem}.csv", buf.getvalue())
    write_text_atomic(out_dir / f"{stem}.json", json.dumps(ranked, indent=1) + "\n")
    return [out_dir / f"{stem}.csv", out_dir / f"{stem}.json"]


def pair_distances(db: np.ndarray, queries: np.ndarray, indices: np.ndarray, chunk: int = 64) -> np.ndarray:
    """L2 distance of each query to each of its ranked database descriptors (NaN where the index is -1), computed
    in chunks of queries so that 32768-d descriptors never need a (Nq, k, D) array."""
    out = np.full(indices.shape, np.nan, dtype=np.float32)
    for s in range(0, len(queries), chunk):
        idx = indices[s : s + chunk]
        diff = db[np.maximum(idx, 0)].astype(np.float32) - queries[s : s + chunk, None, :].astype(np.float32)
        d = np.sqrt((diff * diff).sum(-1))
        out[s : s + chunk] = np.where(idx >= 0, d, np.nan)
    return out


def write_split_predictions(
    out_dir: Path, split, predictions: np.ndarray, distances: np.ndarray, stem: str = "predictions"
) -> list[Path]:
    """Per-query predictions of an evaluated split (a :class:`vpr.data.dataset.PlaceSplit`): each query's ranked
    database images with distances and whether each lies within the evaluation radius. Names are relative to the
    folder holding all the split's images."""
    paths = [os.fspath(p) for p in (*split.db_paths, *split.q_paths)]
    root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    rel = lambda p: Path(os.path.relpath(os.fspath(p), root)).as_posix()  # noqa: E731
    positives = split.eval_positives()
    correct = np.stack([np.isin(predictions[q], positives[q]) & (predictions[q] >= 0) for q in range(len(predictions))])
    return write_rankings(
        out_dir,
        [rel(p) for p in split.q_paths],
        [rel(p) for p in split.db_paths],
        predictions,
        distances,
        correct=correct,
        stem=stem,
    )


def worst_failures(
    predictions: np.ndarray, distances: np.ndarray, positives: Sequence[np.ndarray], n: int
) -> list[int]:
    """The ``n`` queries whose top-1 is wrong, worst first: the true match ranked lowest (or not retrieved at
    all), then the most confident mistakes (smallest top-1 distance)."""
    failed = []
    for q, row in enumerate(predictions):
        hits = np.flatnonzero(np.isin(row, positives[q]) & (row >= 0))
        if len(hits) and hits[0] == 0:
            continue
        first_hit = int(hits[0]) if len(hits) else len(row)
        failed.append((-first_hit, float(distances[q, 0]), q))
    return [q for *_, q in sorted(failed)[:n]]
