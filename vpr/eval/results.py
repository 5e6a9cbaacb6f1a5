"""The recall tables printed at the end of a run (results.json is written by vpr.io.write_json_atomic)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


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
