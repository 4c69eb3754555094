"""What both renderers show, in one place: the sections of a user report and their columns.

render_text and render_html draw the same tables from the same report dict,
so the terminal, the filed page and the dashboard never disagree on what a
report contains.
"""

from __future__ import annotations

from typing import Any

# Columns of one `report subject` line as shown (the --json line has them all).
SUBJECT_COLUMNS = (
    ("ts", "time"),
    ("user", "user"),
    ("session", "session"),
    ("purpose", "purpose"),
    ("how", "how"),
    ("column", "column"),
    ("decision", "decision"),
    ("rows", "rows"),
    ("fingerprint", "fingerprint"),
    ("sql", "statement"),
)

# (title, report key, columns) of the user report's tables, in order.
USER_SECTIONS: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    (
        "Sessions",
        "session_list",
        (
            ("session", "session"),
            ("first", "first"),
            ("last", "last"),
            ("hours", "hours"),
            ("statements", "statements"),
            ("rows", "rows"),
            ("purposes", "purposes"),
        ),
    ),
    (
        "Purposes",
        "purposes",
        (
            ("purpose", "purpose"),
            ("statements", "statements"),
            ("first", "first"),
            ("last", "last"),
        ),
    ),
    ("Tables read", "tables", (("name", "table"), ("statements", "statements"), ("rows", "rows"))),
    (
        "Columns read",
        "columns",
        (("name", "column"), ("statements", "statements"), ("rows", "rows")),
    ),
    (
        "Subjects",
        "subjects",
        (
            ("subject", "subject"),
            ("seen", "distinct seen"),
            ("looked_up", "distinct looked up"),
            ("seen_capped", "seen: at least"),
            ("looked_up_capped", "looked up: at least"),
        ),
    ),
    (
        "Refusals",
        "refusals",
        (
            ("decision", "decision"),
            ("rules", "rules"),
            ("reason", "reason"),
            ("count", "count"),
            ("first", "first"),
            ("last", "last"),
        ),
    ),
    (
        "Detector hits",
        "detectors",
        (
            ("rule", "rule"),
            ("detector", "detector"),
            ("action", "action"),
            ("count", "count"),
            ("first", "first"),
            ("last", "last"),
        ),
    ),
    (
        "Canary events",
        "canary_events",
        (
            ("ts", "time"),
            ("session", "session"),
            ("canary", "canary"),
            ("subject", "subject"),
            ("action", "action"),
        ),
    ),
)

# The headline figures: (report key, label).
USER_TOTALS = (
    ("sessions", "sessions"),
    ("session_hours", "session hours"),
    ("statements", "statements"),
    ("rows", "rows"),
    ("bytes", "bytes"),
    ("refused", "refused"),
    ("throttled", "throttled"),
    ("subjects_seen", "subjects seen"),
    ("subjects_looked_up", "subjects looked up"),
    ("canaries", "canary events"),
)


def cell(value: Any) -> str:
    """A value as table text: lists joined, booleans as yes/no, NULL as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(v) for v in value)
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def subjects_figure(report: dict[str, Any], key: str) -> str:
    """A distinct-subjects total, marked "at least" when a statement's list was capped."""
    prefix = "at least " if report.get("subjects_at_least") else ""
    return f"{prefix}{report[key]}"


def chain_summary(report: dict[str, Any]) -> list[str]:
    """One line per chain verified: intact, or where it breaks."""
    lines = []
    for chain in report.get("chains", []):
        files = ", ".join(chain["files"])
        if chain["ok"]:
            lines.append(f"intact: {chain['records']} records in {files}")
        else:
            lines.append(
                f"BROKEN: {chain['problem']} ({chain['records']} records verify before it)"
            )
    return lines
