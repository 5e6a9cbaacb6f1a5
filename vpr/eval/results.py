"""The ``results.json`` file and the recall tables printed at the end of a run."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON through a temporary file in the same folder and rename it: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def format_table(columns: Mapping[str, Mapping[str, Any]], title: str = "") -> str:
    """Markdown table of Recall@N: one column per result (e.g. untrained / trained), one row per N."""
    names = list(columns)
    ns = list(next(iter(columns.values()))["recall_at"])
    first = next(iter(columns.values()))
    head = f"{title}\n" if title else ""
    head += f"{first['dataset']} / {first['split']} split: {first['num_queries']} queries, {first['num_database']} database\n"
    lines = ["| Recall | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for n in ns:
        cells = [f"{100 * columns[c]['recall_at'][n]:.1f}" for c in names]
        lines.append(f"| R@{n} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines)
