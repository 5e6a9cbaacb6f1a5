"""Ranked database lists under a dataset's evaluation protocol.

Plain datasets rank database images by L2 distance (exact faiss search). Two protocols change the list:

- spatial non-maximum suppression (Tokyo 24/7): the ranking holds places, not images. Of the database
  images of one place (for Tokyo 24/7 the 12 consecutive cutouts of one panorama) only the best ranked one
  stays, so the top N are N different places;
- capture times (Tokyo Time Machine): database images taken at the query's own time are left out, because
  the queries are cut from the database's own panoramas.

Both keep the exact order of the remaining images. A query whose filtered list came out shorter than ``k``
is searched again deeper (up to the whole database), so the result is exact, never an estimate.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vpr.eval.search import knn_search

Search = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


def _faiss_indices(db: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return knn_search(db, queries, k)[1]


def rank_database(
    db: np.ndarray,
    queries: np.ndarray,
    k: int,
    *,
    groups: np.ndarray | None = None,
    db_time: np.ndarray | None = None,
    q_time: np.ndarray | None = None,
    search: Search = _faiss_indices,
) -> np.ndarray:
    """The top ``k`` database indices of every query, nearest first: (Nq, min(k, Nd)) int64, -1 where fewer.

    Args:
        db / queries: (Nd, D) / (Nq, D) descriptors.
        groups: (Nd,) place id per database image: only the best ranked image of each place is kept.
        db_time / q_time: (Nd,) / (Nq,) capture times: database images of the query's own time are left out.
        search: (db, queries, k) -> (Nq, k) nearest indices; exact faiss search by default.
    """
    num_db = len(db)
    k = min(int(k), num_db)
    if groups is None and db_time is None:
        return np.asarray(search(db, queries, k), dtype=np.int64)
    if (db_time is None) != (q_time is None):
        raise ValueError("rank_database: give capture times for both the database and the queries, or neither")
    if groups is not None:
        groups = np.asarray(groups).reshape(-1)
        if groups.shape != (num_db,):
            raise ValueError(f"rank_database: groups holds {groups.size} ids for {num_db} database images")
    out = np.full((len(queries), k), -1, dtype=np.int64)
    per_place = int(np.bincount(np.unique(groups, return_inverse=True)[1]).max()) if groups is not None else 1
    fetch = min(num_db, k * per_place * (2 if db_time is not None else 1))
    todo = np.arange(len(queries))
    while todo.size:
        ranked = np.asarray(search(db, queries[todo], fetch), dtype=np.int64)
        short = []
        for q, row in zip(todo, ranked):
            row = row[row >= 0]
            if db_time is not None:
                row = row[db_time[row] != q_time[q]]
            if groups is not None:
                _, first = np.unique(groups[row], return_index=True)
                row = row[np.sort(first)]
            if len(row) >= k or fetch == num_db:
                out[q, : min(k, len(row))] = row[:k]
            else:
                short.append(q)
        todo = np.asarray(short, dtype=np.int64)
        fetch = min(num_db, 2 * fetch)
    return out


def rank_split(split, db: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """:func:`rank_database` under the protocol of ``split`` (a :class:`vpr.data.dataset.PlaceSplit`)."""
    return rank_database(db, queries, k, groups=split.nms_groups(), db_time=split.db_time, q_time=split.q_time)
