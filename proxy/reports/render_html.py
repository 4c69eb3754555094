"""Reports as one self-contained HTML page: inline CSS, no script, no outside resource.

A supervisor files or prints it, so it must render the same anywhere, years
later, offline. Every value from the audit log (user names, SQL, reasons,
purposes are all client-controlled) goes through `html.escape`; nothing from
a record is ever written as markup or into an attribute unescaped.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from proxy.reports.layout import (
    SUBJECT_COLUMNS,
    USER_SECTIONS,
    USER_TOTALS,
    cell,
    chain_summary,
    subjects_figure,
)

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2330;margin:24px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:15px;margin:22px 0 6px}
.sub{color:#6b7385;margin:0 0 14px}
.tiles{display:flex;flex-wrap:wrap;gap:10px}
.tile{border:1px solid #e2e5eb;border-radius:6px;padding:6px 10px;min-width:110px}
.tile .v{font-size:20px;font-weight:600}.tile .k{color:#6b7385;font-size:12px}
table{border-collapse:collapse;width:100%;font-size:12px}
th{text-align:left;color:#6b7385;font-weight:500;border-bottom:1px solid #c9ced8;padding:3px 6px}
td{border-bottom:1px solid #e2e5eb;padding:3px 6px;vertical-align:top;word-break:break-word}
td.sql{font-family:ui-monospace,Menlo,Consolas,monospace}
.ok{color:#2e8b57;font-weight:600}.bad{color:#c0392b;font-weight:600}
.bar{background:#2f5cc4;height:10px;display:inline-block}
.none{color:#6b7385}
@media print{body{margin:0}.tile{break-inside:avoid}tr{break-inside:avoid}}
"""


_CHAIN = {True: ("ok", "intact"), False: ("bad", "BROKEN"), None: ("none", "not verified")}


def e(value: Any) -> str:
    return html.escape(cell(value), quote=True)


def _page(title: str, body: list[str]) -> str:
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + f'\n<p class="sub">Made by Oversight on {e(made)}.</p>\n</body></html>\n'
    )


def table(columns: Sequence[tuple[str, str]], rows: Sequence[dict[str, Any]], tid: str) -> str:
    if not rows:
        return f'<p class="none" id="{tid}">none</p>'
    head = "".join(f"<th>{e(label)}</th>" for _, label in columns)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=sql' if key == 'sql' else ''}>{e(row.get(key))}</td>"
            for key, _ in columns
        )
        + "</tr>"
        for row in rows
    )
    return f'<table id="{tid}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def subject_html(lines: Sequence[dict[str, Any]], title: str) -> str:
    users = sorted({str(line["user"]) for line in lines})
    body = [
        f"<h1>{e(title)}</h1>",
        f'<p class="sub" id="summary">{len(lines)} disclosures by {len(users)} users'
        + (f": {e(', '.join(users))}" if users else "")
        + "</p>",
        table(SUBJECT_COLUMNS, lines, "lines"),
    ]
    return _page(title, body)


def _hours(hours: list[int]) -> str:
    peak = max(hours) or 1
    rows = "".join(
        f'<tr><td>{h:02d}</td><td><span class="bar" style="width:{round(300 * n / peak)}px">'
        f"</span> {n}</td></tr>"
        for h, n in enumerate(hours)
    )
    return f'<table id="hours" style="width:auto"><tbody>{rows}</tbody></table>'


def user_html(report: dict[str, Any]) -> str:
    title = f"Activity of {report['user']}"
    since = report.get("since") or "the start of the files"
    ok = report["chain_ok"]
    tiles = "".join(
        f'<div class="tile" id="t-{key}"><div class="v">'
        f"{e(subjects_figure(report, key) if key.startswith('subjects_') else report[key])}"
        f'</div><div class="k">{e(label)}</div></div>'
        for key, label in USER_TOTALS
    )
    body = [
        f"<h1>{e(title)}</h1>",
        f'<p class="sub">since {e(since)}; records from {e(report.get("first") or "-")} to '
        f"{e(report.get('last') or '-')}</p>",
        f'<div class="tiles">{tiles}</div>',
        f'<h2>Audit chain: <span id="chain" class="{_CHAIN[ok][0]}">{_CHAIN[ok][1]}</span></h2>',
        "<ul>" + "".join(f"<li>{e(line)}</li>" for line in chain_summary(report)) + "</ul>",
        "<h2>Statements by hour of day (UTC)</h2>",
        _hours(report["hours"]),
    ]
    for heading, key, columns in USER_SECTIONS:
        rows = report.get(key) or []
        body.append(f"<h2>{e(heading)} ({len(rows)})</h2>")
        body.append(table(columns, rows, key))
    return _page(title, body)
