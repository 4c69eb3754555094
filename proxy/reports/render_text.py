"""Reports as terminal text: aligned tables, every value stripped of control characters.

SQL text and user names come from clients, so an escape sequence in them
must not reach the terminal: control characters are shown escaped.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any

from proxy.reports.layout import (
    SUBJECT_COLUMNS,
    USER_SECTIONS,
    USER_TOTALS,
    cell,
    chain_summary,
    subjects_figure,
)

_CHAIN = {True: "intact", False: "BROKEN", None: "not verified (--no-verify)"}
WIDTH = 60  # longest cell shown (the --json output has every value whole)


def clean(text: str, width: int = WIDTH) -> str:
    """One line of printable text, at most `width` characters."""
    out = "".join(
        ch if unicodedata.category(ch)[0] != "C" else ch.encode("unicode_escape").decode()
        for ch in " ".join(text.split())
    )
    return out if len(out) <= width else out[: width - 1] + "…"


def table(columns: Sequence[tuple[str, str]], rows: Sequence[dict[str, Any]]) -> list[str]:
    head = [label for _, label in columns]
    body = [[clean(cell(row.get(key))) for key, _ in columns] for row in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head).rstrip(), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r).rstrip() for r in body]
    return lines


def subject_text(lines: Sequence[dict[str, Any]], title: str) -> str:
    if not lines:
        return f"{clean(title, 200)}: no statement received or searched for it\n"
    users = sorted({str(line["user"]) for line in lines})
    head = [
        clean(title, 200),
        f"{len(lines)} disclosures by {len(users)} users: {clean(', '.join(users), 200)}",
        "",
    ]
    return "\n".join(head + table(SUBJECT_COLUMNS, lines)) + "\n"


def user_text(report: dict[str, Any]) -> str:
    since = report.get("since") or "the start of the files"
    out = [
        f"Activity of {clean(str(report['user']), 200)} since {since}",
        f"records from {report.get('first') or '-'} to {report.get('last') or '-'}",
        "",
    ]
    for key, label in USER_TOTALS:
        value = subjects_figure(report, key) if key.startswith("subjects_") else cell(report[key])
        out.append(f"  {label:<20} {value}")
    hours = report["hours"]
    peak = max(hours) or 1
    out += ["", "Statements by hour of day (UTC)"]
    out += [f"  {h:02d}  {'#' * round(30 * n / peak):<30} {n}" for h, n in enumerate(hours) if n]
    for title, key, columns in USER_SECTIONS:
        rows = report.get(key) or []
        out += ["", f"{title} ({len(rows)})"]
        out += ["  " + line for line in table(columns, rows)] if rows else ["  none"]
    out += ["", "Audit chain: " + _CHAIN[report["chain_ok"]]]
    out += ["  " + clean(line, 400) for line in chain_summary(report)]
    return "\n".join(out) + "\n"
