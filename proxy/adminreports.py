"""The dashboard's report API: a user's activity report and the subject search, live.

The same report module as `oversight report` (proxy/reports/api.py) answers,
on a worker thread (DuckDB and the chain walk block). The admin server checks
the token before any of this runs.

The subject search comes as a POST with a JSON body, never in the address:
a subject's key or SSN must not land in an access log, a proxy's log or the
browser history. Nothing here logs a request, and no error message repeats
the value searched for. A value goes in, its ledger hashes are computed
here, and only matching audit lines go out.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from proxy.reports.api import ReportConfig, run_subject, run_user
from proxy.reports.errors import ReportError
from proxy.reports.layout import SUBJECT_COLUMNS, USER_SECTIONS, USER_TOTALS

log = logging.getLogger("oversight.admin")

MAX_BODY = 4096  # a subject id, a key or column=value, a since: small
MAX_VALUE = 1024
SINCE_DEFAULT = {"user": "7d", "subject": "30d"}

# What the page draws a user report with: the text and HTML reports' layout.
LAYOUT = {
    "totals": [list(t) for t in USER_TOTALS],
    "sections": [[title, key, [list(c) for c in cols]] for title, key, cols in USER_SECTIONS],
    "subject_columns": [list(c) for c in SUBJECT_COLUMNS],
}

Answer = tuple[int, Any]  # HTTP status and a JSON-ready body


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_VALUE:
        raise ReportError(f"{name}: a string of at most {MAX_VALUE} characters")
    return value


class ReportRoutes:
    """/api/report/*: the answers, as (status, JSON body); None config: reports are off."""

    def __init__(self, config: ReportConfig | None) -> None:
        self.config = config
        # One report at a time: a dashboard user (or a script with the token) clicking
        # repeatedly over gigabytes queues, rather than piling scans onto the proxy's CPU.
        self._one = asyncio.Lock()

    async def get(self, path: str, query: dict[str, list[str]]) -> Answer:
        config = self.config
        if config is None:
            return 404, {"error": "reports are off: the audit log is not written to a file"}
        if path == "/api/report/subjects":
            return 200, await asyncio.to_thread(self._subjects, config)
        if path == "/api/report/user":
            user = query.get("user", [""])[0]
            since = query.get("since", [SINCE_DEFAULT["user"]])[0]
            if not user:
                return 400, {"error": "user: required"}
            return await self._run(run_user, config, user, _since(since))
        return 404, {"error": "no such report"}

    async def post(self, path: str, body: bytes) -> Answer:
        config = self.config
        if config is None:
            return 404, {"error": "reports are off: the audit log is not written to a file"}
        if path != "/api/report/subject":
            return 404, {"error": "no such report"}
        try:
            form = orjson.loads(body)
            if not isinstance(form, dict):
                raise ReportError("the body is a JSON object")
            subject = _text(form.get("subject", ""), "subject")
            key = form.get("key")
            lookup = None
            if form.get("column") is not None:
                column, value = _text(form["column"], "column"), _text(form.get("value"), "value")
                lookup = f"{column}={value}"
            key = None if key in (None, "") else _text(key, "key")
            since = _since(_text(form.get("since", SINCE_DEFAULT["subject"]), "since"))
        except orjson.JSONDecodeError:
            return 400, {"error": "the body is not JSON"}
        except ReportError as e:
            return 400, {"error": str(e)}
        answer = await self._run(run_subject, config, subject, key, lookup, since)
        if answer[0] != 200:
            return answer
        return 200, {"lines": answer[1]}

    @staticmethod
    def _subjects(config: ReportConfig) -> dict[str, Any]:
        try:
            rules = config.rules()
        except ReportError as e:
            return {"subjects": [], "error": str(e), "layout": LAYOUT}
        subjects = [
            {
                "id": s.id,
                "key": s.key,
                "columns": list(dict.fromkeys([c for _, c in s.key_columns()] + s.lookups)),
            }
            for s in rules.subjects
        ]
        return {"subjects": subjects, "layout": LAYOUT}

    async def _run(self, fn: Any, *args: Any) -> Answer:
        try:
            async with self._one:
                return 200, await asyncio.to_thread(fn, *args)
        except ReportError as e:
            return 400, {"error": str(e)}
        except Exception as e:  # unreadable files, a DuckDB failure: say so, keep serving
            log.error("dashboard report failed: %s", type(e).__name__)
            return 500, {"error": f"the report failed ({type(e).__name__}); see the server log"}


def _since(text: str) -> str | None:
    return None if text.strip().lower() in ("", "all") else text
