"""Markdown tables of Recall@N: the runs' end-of-test tables, the test-sets table, and the one primitive they
(and the sweep report, :mod:`vpr.report`) share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str] | None = None) -> str:
    """``| a | b |`` lines: the header, the alignment row (``---`` by default; ``---:`` right-aligns), the rows."""
    align = list(align) if align is not None else ["---"] * len(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _recall_ns(results: Sequence[Mapping[str, Any]]) -> list[str]:
    return sorted({n for r in results for n in r["recall_at"]}, key=int)


def _percent(result: Mapping[str, Any], n: str) -> str:
    return f"{100 * result['recall_at'][n]:.1f}" if n in result["recall_at"] else ""


def format_recall_table(columns: Mapping[str, Mapping[str, Any]], title: str = "") -> str:
    """Recall@N of results on one split (e.g. untrained / trained): a column per result, a row per N."""
    names = list(columns)
    first = columns[names[0]]
    head = f"{title}\n" if title else ""
    head += f"{first['dataset']} / {first['split']} split: {first['num_queries']} queries, {first['num_database']} database\n"
    rows = [[f"R@{n}", *(_percent(columns[c], n) for c in names)] for n in _recall_ns(list(columns.values()))]
    return head + markdown_table(["Recall", *names], rows)


def format_sets_table(results: Mapping[str, Mapping[str, Any]], title: str = "") -> str:
    """Recall@N on several test sets: a column per set, a row per N, then the split, its sizes and spatial NMS."""
    labels = list(results)
    rows = [[f"R@{n}", *(_percent(results[c], n) for c in labels)] for n in _recall_ns(list(results.values()))]
    rows.append(["split", *(f"{results[c]['dataset']}/{results[c]['split']}" for c in labels)])
    rows.append(
        ["queries / database", *(f"{results[c]['num_queries']} / {results[c]['num_database']}" for c in labels)]
    )
    rows.append(["spatial NMS", *("yes" if results[c].get("spatial_nms") else "no" for c in labels)])
    table = markdown_table(["Recall (%)", *labels], rows)
    return f"{title}\n\n{table}" if title else table
