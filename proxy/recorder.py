"""Turns what the session saw into audit records, hook callbacks and metrics.

One Recorder per process; one `Tally` per client session for the
`disconnect` record's totals. Records follow DESIGN.md, "Audit log".

The subject ledger: a statement's `subjects` field joins what its rows
carried with what it searched for (the admission's `looked_up`), and a
canary key among them writes a `canary` event, counts, reaches the alert
destinations through the record's `canaries` field and, for a blocking
canary, trips the session (proxy/ledger/canaries.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from proxy import metrics
from proxy.actions import Running
from proxy.alerts import Alerter
from proxy.audit import AuditLog, redact_sql
from proxy.errors import AuditUnavailable
from proxy.hooks import Hooks, StatementResult
from proxy.identity import SessionFacts
from proxy.ledger.canaries import Canaries, CanaryHit, Tripwire
from proxy.ledger.statement import Looked, statement_tally
from proxy.ledger.tally import Tally as Subjects
from proxy.redact import redact_error
from proxy.statement import StatementRecord

log = logging.getLogger("oversight.audit")


@lru_cache(maxsize=4096)
def _redacted(sql: str) -> str:
    return redact_sql(sql)


# What the policy engine's per-statement info holds besides `detail` material.
_INFO_KEYS = frozenset({"sql", "redacted", "fingerprint", "kind", "tables", "columns"})
_NO_INFO: dict[str, Any] = {}


@dataclass(slots=True)
class Tally:
    statements: int = 0
    blocked: int = 0
    rows: int = 0
    bytes: int = 0


def stated(facts: SessionFacts) -> str | None:
    """The purpose a record shows: the stated one, None for none, "?" when unknown."""
    if not facts.purpose_known:
        return "?"
    return facts.purpose or None


class Recorder:
    def __init__(
        self,
        audit: AuditLog,
        hooks: Hooks,
        *,
        redact: bool = True,
        alerts: Alerter | None = None,
        canaries: Canaries | None = None,
        tripwire: Tripwire | None = None,
    ) -> None:
        self.audit = audit
        self.hooks = hooks
        self.redact = redact
        self.alerts = alerts
        self.canaries = canaries
        self.tripwire = tripwire

    def base(self, facts: SessionFacts, groups: list[str] | None = None) -> dict[str, Any]:
        return {
            "session": facts.session_id,
            "user": facts.user,
            "groups": groups or [],
            "client": facts.client,
            "application": facts.application,
            "database": facts.database,
            "purpose": stated(facts),
        }

    async def statement(self, facts: SessionFacts, stmt: Running, tally: Tally) -> None:
        adm = stmt.plan.admission
        # The ledger: whose rows it received (the stream's tally) and whom it searched for.
        looked = adm.looked_up.get(stmt.index, ()) if adm.looked_up else ()
        subjects = statement_tally(stmt.subjects, looked)
        late: Sequence[dict[str, Any]] = ()
        if stmt.blocked is None:
            result = StatementResult(
                stmt.rows, stmt.bytes, stmt.duration, stmt.error, stmt.cutoff, subjects
            )
            try:
                late = await self.hooks.finished(facts, adm.token, result)
            except Exception:  # a broken hook must not lose the audit record
                log.exception("statement hook failed")
        info = adm.statements[stmt.index] if stmt.index < len(adm.statements) else _NO_INFO
        decision = "block" if stmt.blocked else "cutoff" if stmt.cutoff else adm.action
        if stmt.paused > 0 and decision in ("allow", "rewrite"):
            decision = "throttle"
        sql = str(info.get("sql", stmt.plan.sql))
        redacted = info.get("redacted")
        rewritten = adm.sql if adm.sql is not None and adm.sql != stmt.plan.sql else None
        error = stmt.error
        if self.redact:
            sql = str(redacted) if redacted is not None else _redacted(sql)
            rewritten = _redacted(rewritten) if rewritten else rewritten
            error = redact_error(error)
        duration = stmt.duration
        extra = {k: v for k, v in adm.audit.items() if k != "groups"} if adm.audit else {}
        extra["client_encoding"] = stmt.plan.encoding  # what the text arrived in
        if late:  # detectors that judged what the statement did (a new list: adm.audit is shared)
            extra["detectors"] = [*extra.get("detectors", ()), *late]
        if len(info) > len(_INFO_KEYS & info.keys()):
            extra["detail"] = {k: v for k, v in info.items() if k not in _INFO_KEYS}
        hits = self._ledger(subjects, looked, extra)
        record = StatementRecord(
            ts=self.audit.now(ago=duration),  # when the statement started
            session=facts.session_id,
            user=facts.user,
            groups=adm.audit.get("groups") or [],
            client=facts.client,
            application=facts.application,
            database=facts.database,
            sql=sql,
            fingerprint=info.get("fingerprint"),
            kind=info.get("kind"),
            tables=info.get("tables", []),
            columns=info.get("columns", []),
            decision=decision,
            rules=list(adm.rules),
            reason=adm.reason or (stmt.blocked.message if stmt.blocked else ""),
            rewritten=rewritten,
            rows=stmt.rows,
            bytes=stmt.bytes,
            duration_ms=round(duration * 1000, 3),
            error=error,
            purpose=stated(facts),
            extra=extra,
        )
        tally.statements += 1
        tally.rows += stmt.rows
        tally.bytes += stmt.bytes
        tally.blocked += decision == "block"
        metrics.statement(record, duration, stmt.plan.decide_s)
        if self.alerts is not None:
            self.alerts.observe(record)  # in memory only: delivery happens off this path
        await self._write(record)
        if hits:
            await self._canaries(facts, record, hits)

    def _ledger(
        self, tally: Subjects | None, looked: Sequence[Looked], extra: dict[str, Any]
    ) -> list[CanaryHit]:
        """The record's `subjects` (whose rows it received or searched for, docs/ledger.md)
        and `canaries` fields."""
        if tally is None:
            return []
        extra["subjects"] = tally.field()
        hits = self.canaries.hits(tally, looked) if self.canaries is not None else []
        if hits:
            extra["canaries"] = [h.canary for h in hits]
        return hits

    async def _canaries(
        self, facts: SessionFacts, record: StatementRecord, hits: list[CanaryHit]
    ) -> None:
        """One `canary` event per canary the statement touched; a blocking one trips the
        session before the client hears the statement is over."""
        for hit in hits:
            if hit.action == "block" and self.tripwire is not None:
                self.tripwire.trip(facts.session_id, hit.canary)
            metrics.canary(hit.canary, hit.how)
            event = {
                "event": "canary",
                **self.base(facts, record.groups),
                "canary": hit.canary,
                "subject": hit.subject,
                "how": hit.how,
                "action": hit.action,
                "fingerprint": record.fingerprint,
                "kind": record.kind,
                "decision": record.decision,
            }
            await self._write(event)

    async def event(self, kind: str, facts: SessionFacts, **extra: Any) -> None:
        record = {"event": kind, **self.base(facts), **extra}
        if kind == "disconnect" and self.tripwire is not None:
            self.tripwire.forget(facts.session_id)
        await self._write(record)

    async def _write(self, record: dict[str, Any] | StatementRecord) -> None:
        try:
            await self.audit.write(record)
        except AuditUnavailable as e:
            # The statement has already run: say so loudly; new ones are refused
            # by check_writable() before they reach the upstream.
            log.error("audit record lost: %s", e.message)
