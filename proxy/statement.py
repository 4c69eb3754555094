"""One finished statement as the audit line, the metrics and the dashboard read it.

The recorder builds a `StatementRecord` once, from the session's `Running`
and the hooks' `Admission`, when the statement ends; the audit writer
serializes it (orjson, once for the line and once sorted for the hash), the
metrics count from its fields and the dashboard's ring keeps the object
itself, so nothing is re-packed into dicts on the way.

Fields a hook or the policy engine add go to `extra`: they follow the core
fields on the audit line and can never replace one (a hook cannot rewrite
the decision, the user or the row count of a record).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The core fields, in the order the audit line shows them (proxy/audit/record.py).
CORE = (
    "ts",
    "event",
    "session",
    "user",
    "groups",
    "client",
    "application",
    "database",
    "purpose",
    "sql",
    "fingerprint",
    "kind",
    "tables",
    "columns",
    "decision",
    "rules",
    "reason",
    "rewritten",
    "rows",
    "bytes",
    "duration_ms",
    "error",
)
_RESERVED = frozenset(CORE) | {"prev", "hash"}


@dataclass(slots=True)
class StatementRecord:
    ts: str
    session: str
    user: str
    groups: list[str]
    client: str
    application: str
    database: str
    sql: str
    fingerprint: str | None
    kind: str | None
    tables: list[str]
    columns: list[str]
    decision: str
    rules: list[str]
    reason: str
    rewritten: str | None
    rows: int
    bytes: int
    duration_ms: float
    error: str | None
    # The session's stated purpose when the statement ended (proxy/purpose.py); None: none.
    purpose: str | None = None
    # Later fields (subjects, client_encoding...) go in here first.
    extra: dict[str, Any] = field(default_factory=dict)
    event: str = "statement"

    def add_extra(self, name: str, value: Any) -> bool:
        """Add a field after the core ones; refused (False) for a core field or one already set."""
        if name in _RESERVED or name in self.extra:
            return False
        self.extra[name] = value
        return True

    def audit_fields(self) -> dict[str, Any]:
        """The audit line's fields in display order: the core ones, then `extra` sorted."""
        out = {
            "ts": self.ts,
            "event": self.event,
            "session": self.session,
            "user": self.user,
            "groups": self.groups,
            "client": self.client,
            "application": self.application,
            "database": self.database,
            "purpose": self.purpose,
            "sql": self.sql,
            "fingerprint": self.fingerprint,
            "kind": self.kind,
            "tables": self.tables,
            "columns": self.columns,
            "decision": self.decision,
            "rules": self.rules,
            "reason": self.reason,
            "rewritten": self.rewritten,
            "rows": self.rows,
            "bytes": self.bytes,
            "duration_ms": self.duration_ms,
            "error": self.error,
        }
        extra = self.extra
        if extra:
            for k in sorted(extra):
                if k not in _RESERVED:
                    out[k] = extra[k]
        return out
