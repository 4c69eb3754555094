"""Turns what the session saw into audit records, hook callbacks and metrics.

One Recorder per process; one `Tally` per client session for the
`disconnect` record's totals. Records follow DESIGN.md, "Audit log".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from proxy import metrics
from proxy.actions import Running
from proxy.audit import AuditLog, redact_sql
from proxy.errors import AuditUnavailable
from proxy.hooks import Hooks, StatementResult
from proxy.identity import SessionFacts

log = logging.getLogger("oversight.audit")


@lru_cache(maxsize=4096)
def _redacted(sql: str) -> str:
    return redact_sql(sql)


@dataclass(slots=True)
class Tally:
    statements: int = 0
    blocked: int = 0
    rows: int = 0
    bytes: int = 0


class Recorder:
    def __init__(self, audit: AuditLog, hooks: Hooks, *, redact: bool = True) -> None:
        self.audit = audit
        self.hooks = hooks
        self.redact = redact

    def base(self, facts: SessionFacts, groups: list[str] | None = None) -> dict[str, Any]:
        return {
            "session": facts.session_id,
            "user": facts.user,
            "groups": groups or [],
            "client": facts.client,
            "application": facts.application,
            "database": facts.database,
        }

    async def statement(self, facts: SessionFacts, stmt: Running, tally: Tally) -> None:
        adm = stmt.plan.admission
        if stmt.blocked is None:
            result = StatementResult(stmt.rows, stmt.bytes, stmt.duration, stmt.error, stmt.cutoff)
            try:
                await self.hooks.finished(facts, adm.token, result)
            except Exception:  # a broken hook must not lose the audit record
                log.exception("statement hook failed")
        info = dict(adm.statements[stmt.index]) if stmt.index < len(adm.statements) else {}
        decision = "block" if stmt.blocked else "cutoff" if stmt.cutoff else adm.action
        if stmt.paused > 0 and decision in ("allow", "rewrite"):
            decision = "throttle"
        rules, reason = list(adm.rules), adm.reason
        sql = str(info.pop("sql", stmt.plan.sql))
        redacted = info.pop("redacted", None)
        rewritten = adm.sql if adm.sql is not None and adm.sql != stmt.plan.sql else None
        if self.redact:
            sql = str(redacted) if redacted is not None else _redacted(sql)
            rewritten = _redacted(rewritten) if rewritten else rewritten
        duration = stmt.duration
        record: dict[str, Any] = {
            "ts": self.audit.now(ago=duration),  # when the statement started
            "event": "statement",
            **self.base(facts, adm.audit.get("groups")),
            "sql": sql,
            "fingerprint": info.pop("fingerprint", None),
            "kind": info.pop("kind", None),
            "tables": info.pop("tables", []),
            "columns": info.pop("columns", []),
            "decision": decision,
            "rules": rules,
            "reason": reason or (stmt.blocked.message if stmt.blocked else ""),
            "rewritten": rewritten,
            "rows": stmt.rows,
            "bytes": stmt.bytes,
            "duration_ms": round(duration * 1000, 3),
            "error": stmt.error,
        }
        extra = {k: v for k, v in adm.audit.items() if k != "groups"}
        if extra:
            record.update(extra)
        if info:
            record["detail"] = info
        tally.statements += 1
        tally.rows += stmt.rows
        tally.bytes += stmt.bytes
        tally.blocked += decision == "block"
        metrics.statement_done(
            facts.user, decision, adm.rules, stmt.rows, stmt.bytes, duration, stmt.plan.decide_s
        )
        if decision in ("block", "cutoff"):
            metrics.blocked(record)
        await self._write(record)

    async def event(self, kind: str, facts: SessionFacts, **extra: Any) -> None:
        record = {"event": kind, **self.base(facts), **extra}
        await self._write(record)

    async def _write(self, record: dict[str, Any]) -> None:
        try:
            await self.audit.write(record)
        except AuditUnavailable as e:
            # The statement has already run: say so loudly; new ones are refused
            # by check_writable() before they reach the upstream.
            log.error("audit record lost: %s", e.message)
