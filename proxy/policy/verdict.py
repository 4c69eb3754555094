"""A statement's verdict while it is being decided: action, reasons, audit facts.

Its own module so that the checks (checks.py) and the statement logic
(decide.py) can both fill one without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy.errors import Blocked, NotUnderstood, ProxyError
from proxy.gucs import Change
from proxy.policy.context import Context
from proxy.policy.lookups import Lookup


@dataclass(slots=True)
class Verdict:
    kind: str
    text: str
    action: str = "allow"
    sql: str = ""
    error: ProxyError | None = None
    rules: list[str] = field(default_factory=list)
    reason: str = ""
    tables: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    functions: list[str] = field(default_factory=list)
    has_where: bool = False
    has_limit: bool = False
    offset: int | None = None
    copy_out: bool = False
    ddl: bool = False
    search_path: tuple[str, ...] | None = None
    change: Change | None = None  # to tracked settings or savepoints (proxy/gucs.py)
    redacted: str = ""
    fingerprint: str = ""
    literals: tuple[str, ...] = ()
    unknown: list[str] = field(default_factory=list)  # relations/functions the catalog lacks
    lookups: tuple[Lookup, ...] = ()  # values compared with subject columns (lookups.py)

    def block(self, rule: str, reason: str) -> None:
        if self.action != "block":
            self.action, self.error, self.reason = "block", Blocked(rule, reason), reason
            if rule in self.rules:
                self.rules.remove(rule)
            self.rules.insert(0, rule)

    def unparsed(self, ctx: Context, reason: str) -> None:
        if self.action == "block":
            return
        if ctx.defaults.unparsed == "allow":
            self.reason = f"not understood, allowed by defaults.unparsed: {reason}"
            return
        self.action, self.error, self.reason = "block", NotUnderstood(reason), reason

    def note(self, rule: str) -> None:
        if rule not in self.rules:
            self.rules.append(rule)
