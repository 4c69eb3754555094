"""Errors Oversight raises or sends, each knowing the ErrorResponse it becomes.

Every refusal a client sees is an ordinary PostgreSQL ErrorResponse (DESIGN.md,
"What a client sees when Oversight says no"). Code raises or returns a
ProxyError subclass; the session turns it into wire bytes with `fields()`.
"""

from __future__ import annotations


class ProxyError(Exception):
    """Base class: an error with a SQLSTATE, a severity and a message."""

    sqlstate = "XX000"
    severity = "ERROR"

    def __init__(self, message: str, *, detail: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.hint = hint

    def fields(self) -> dict[str, str]:
        """ErrorResponse fields keyed by their one-letter protocol codes."""
        out = {"S": self.severity, "V": self.severity, "C": self.sqlstate, "M": self.message}
        if self.detail:
            out["D"] = self.detail
        if self.hint:
            out["H"] = self.hint
        return out


class Blocked(ProxyError):
    """A rule or default refused the statement (42501)."""

    sqlstate = "42501"

    def __init__(self, rule: str, reason: str, **kw: str | None):
        super().__init__(f"oversight: blocked by {rule}: {reason}", **kw)
        self.rule = rule
        self.reason = reason


class PurposeRequired(ProxyError):
    """defaults.require_purpose: a governed table is read without a fitting purpose (42501)."""

    sqlstate = "42501"

    def __init__(self, hint: str):
        super().__init__("oversight: a purpose is required", hint=hint)


class BadPurpose(ProxyError):
    """A purpose the proxy will not write in its records (too long, multi-line; 22023)."""

    sqlstate = "22023"

    def __init__(self, why: str):
        super().__init__(f"oversight: invalid oversight.purpose: {why}")


class NotUnderstood(ProxyError):
    """The policy engine could not fully parse the statement (42501)."""

    sqlstate = "42501"

    def __init__(self, reason: str, **kw: str | None):
        super().__init__(f"oversight: statement not understood: {reason}", **kw)
        self.reason = reason


class SyntaxProblem(ProxyError):
    """Text PostgreSQL itself would refuse as a syntax error (42601), answered by the
    proxy where it must decide before the server sees the text."""

    sqlstate = "42601"


class ResultLimit(ProxyError):
    """A per-statement row or byte cap was reached mid-stream (54000)."""

    sqlstate = "54000"

    def __init__(self, limit: int, rule: str, unit: str = "rows"):
        super().__init__(f"oversight: result limit of {limit} {unit} reached ({rule})")
        self.limit = limit
        self.rule = rule


class VolumeLimit(ProxyError):
    """A per-user window budget is exhausted (53400)."""

    sqlstate = "53400"

    def __init__(self, rule: str, what: str):
        super().__init__(f"oversight: {rule}: volume limit: {what}")
        self.rule = rule


class UpstreamUnavailable(ProxyError):
    """The upstream cannot be reached or died under the session (08006)."""

    sqlstate = "08006"
    severity = "FATAL"

    def __init__(self, reason: str):
        super().__init__(f"oversight: upstream unavailable: {reason}")


class CatalogUnavailable(ProxyError):
    """The schema snapshot of the session's database cannot be read (57P03).

    Names cannot be resolved without it, so nothing a policy governs can be
    decided; the session stays open and a later statement may succeed.
    """

    sqlstate = "57P03"

    def __init__(self, database: str, reason: str):
        super().__init__(
            f"oversight: the catalog of database {database} cannot be read; "
            "statements of users with a policy are refused until it loads",
            detail=reason,
        )
        self.reason = reason


class ProtocolViolation(ProxyError):
    """The client broke the wire protocol; the session is closed (08P01)."""

    sqlstate = "08P01"
    severity = "FATAL"

    def __init__(self, message: str, **kw: str | None):
        if not message.startswith("oversight: "):
            message = f"oversight: protocol violation: {message}"
        super().__init__(message, **kw)


class FeatureNotSupported(ProxyError):
    """A protocol feature Oversight refuses (replication, channel binding...) (0A000)."""

    sqlstate = "0A000"
    severity = "FATAL"


class TooManyConnections(ProxyError):
    sqlstate = "53300"
    severity = "FATAL"


class AuthFailed(ProxyError):
    sqlstate = "28P01"
    severity = "FATAL"


class StalePlan(ProxyError):
    """A statement prepared under rules since reloaded would now be rewritten differently.

    Sent as PostgreSQL sends its own error for a prepared statement whose
    result shape may no longer hold (0A000 from RevalidateCachedQuery):
    drivers with statement caches recognise it by that routine name: asyncpg
    prepares again and retries at once, pgjdbc prepares again at the next
    execution; others show the error once.
    """

    sqlstate = "0A000"

    def __init__(self) -> None:
        super().__init__(
            "cached plan must not change result type",
            detail="oversight: the rules changed since this statement was prepared",
            hint="Prepare the statement again.",
        )
        self.rule = "reload"

    def fields(self) -> dict[str, str]:
        return {**super().fields(), "R": "RevalidateCachedQuery"}


class StaleCursor(ProxyError):
    """A cursor declared under rules since reloaded would now be read differently (0A000)."""

    sqlstate = "0A000"

    def __init__(self, name: str) -> None:
        super().__init__(
            f'oversight: the rules changed since cursor "{name}" was declared',
            hint="Declare the cursor again.",
        )
        self.rule = "reload"


class UnknownName(ProxyError):
    """A Bind, Execute, Describe, EXECUTE or FETCH names what the proxy never saw created.

    Its admission cannot be known, so users with a policy are refused, with
    PostgreSQL's own codes for a missing statement (26000) or portal (34000).
    """

    def __init__(self, name: str, *, cursor: bool) -> None:
        what = "portal" if cursor else "prepared statement"
        super().__init__(f'oversight: {what} "{name}" is unknown to the proxy')
        self.sqlstate = "34000" if cursor else "26000"


class AuditUnavailable(ProxyError):
    """The audit log cannot be written, so the statement is not run (58030)."""

    sqlstate = "58030"

    def __init__(self, reason: str):
        super().__init__(f"oversight: audit log unavailable, statement refused: {reason}")


class AdminShutdown(ProxyError):
    sqlstate = "57P01"
    severity = "FATAL"
