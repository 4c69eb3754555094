"""One alert: what happened, to whom, under which rule, taken from a finished statement."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from proxy.rules import AlertRoute
from proxy.statement import StatementRecord

NO_RULE = "(defaults)"  # a refusal by the defaults (statement kinds, unknown tables)


@dataclass(frozen=True, slots=True)
class Alert:
    ts: str
    trigger: str  # "decision", "detector" or "canary"
    decision: str
    rule: str  # the rule the suppression window is keyed by
    user: str
    fingerprint: str | None
    purpose: str | None
    detectors: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    reason: str = ""
    sql: str = ""
    session: str = ""
    client: str = ""
    application: str = ""
    database: str = ""
    count: int = 1  # occurrences this message stands for (1 + those suppressed)
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def key(self) -> tuple[str, str]:
        return (self.user, self.rule)

    def counted(self, n: int) -> Alert:
        return replace(self, count=n)

    def fields(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "ts": self.ts,
            "trigger": self.trigger,
            "decision": self.decision,
            "rule": self.rule,
            "rules": list(self.rules),
            "detectors": list(self.detectors),
            "user": self.user,
            "fingerprint": self.fingerprint,
            "purpose": self.purpose,
            "reason": self.reason,
            "sql": self.sql,
            "session": self.session,
            "client": self.client,
            "application": self.application,
            "database": self.database,
            "count": self.count,
        }


def _detector_hits(record: StatementRecord) -> list[tuple[str, str]]:
    """(detector, rule) for each detector hit the guard put in the record."""
    out = []
    for hit in record.extra.get("detectors") or []:
        if isinstance(hit, dict) and isinstance(hit.get("detector"), str):
            out.append((hit["detector"], str(hit.get("rule", ""))))
        elif hasattr(hit, "kind") and getattr(hit, "kind", "") != "budget":
            out.append((str(hit.kind), str(getattr(hit, "rule", ""))))
    return out


def _purpose(record: StatementRecord) -> str | None:
    # Branch `purpose` adds the session's purpose to the record; until then it is absent.
    value = getattr(record, "purpose", None)
    if value is None:
        value = record.extra.get("purpose")
    return value if isinstance(value, str) else None


def _canaries(record: StatementRecord) -> list[str]:
    """Ids of the canaries the statement touched (the recorder's `canaries` field)."""
    found = record.extra.get("canaries") or []
    return [c for c in found if isinstance(c, str)]


def alerts_for(record: StatementRecord, route: AlertRoute) -> Alert | None:
    """The alert `route` wants for this record, or None when its `when` does not fit.

    One per record: a canary first (however many rows held it), then the
    decision, then a detector.
    """
    hits = [(d, r) for d, r in _detector_hits(record) if d in route.when.detectors]
    canaries = _canaries(record) if route.when.canaries else []
    if canaries:
        trigger, rule = "canary", canaries[0]
    elif record.decision in route.when.decisions:
        trigger, rule = "decision", (record.rules[0] if record.rules else NO_RULE)
    elif hits:
        trigger, rule = "detector", hits[0][1] or NO_RULE
    else:
        return None
    return Alert(
        ts=record.ts,
        trigger=trigger,
        decision=record.decision,
        rule=rule,
        user=record.user,
        fingerprint=record.fingerprint,
        purpose=_purpose(record),
        detectors=tuple(d for d, _ in hits),
        rules=tuple(dict.fromkeys([*canaries, *record.rules])),
        reason=_canary_reason(canaries) or record.reason,
        sql=record.sql,
        session=record.session,
        client=record.client,
        application=record.application,
        database=record.database,
    )


def _canary_reason(canaries: list[str]) -> str:
    if not canaries:
        return ""
    return f"touched canary record(s) of {', '.join(canaries)}"


def sample_alert(now: str) -> Alert:
    """What `oversight alerts test` sends: plainly a test, with every field filled."""
    return Alert(
        ts=now,
        trigger="test",
        decision="block",
        rule="oversight-alerts-test",
        user="oversight-test",
        fingerprint="0" * 16,
        purpose=None,
        reason="oversight alerts test: a sample alert, nothing happened",
        sql="COPY public.example TO STDOUT",
    )
