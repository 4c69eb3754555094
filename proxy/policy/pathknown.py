"""Is the search_path known while the statements of one query string are decided?

The session follows the server's search_path between strings (proxy/gucs.py).
Within one string the engine moves the path along with each SET so that later
statements resolve names as the server will. Where it cannot tell the path
(a RESET to a startup value it does not hold, a set_config it cannot read, a
COMMIT or ROLLBACK that may undo a SET earlier in the string), or the session
says the path is unknown, a user with a policy has every statement refused
but those that resolve no names, until a SET search_path makes it known again.
Names, functions and operators all resolve through the path, so this is the
only sound answer short of asking the server.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.policy.verdict import Verdict

# Statements that resolve no relation or function names.
NAMELESS = frozenset({"set", "show", "begin", "commit", "rollback", "discard", "deallocate"})
REASON = (
    "the proxy cannot tell the session's search_path (it was changed in a way the proxy "
    "cannot follow); run SET search_path TO ... to continue"
)


@dataclass(slots=True)
class PathInString:
    known: bool
    changed: bool = False  # a statement of this string moved the path

    def check(self, v: Verdict) -> None:
        """Refuse `v` (its user has a policy) if it resolves names under an unknown path."""
        if not self.known and v.kind not in NAMELESS:
            v.block("session.search_path", REASON)

    def after(self, v: Verdict) -> tuple[str, ...] | None:
        """Account for the allowed `v`; the path later statements resolve under, if new."""
        c = v.change
        if c is not None and c.op in ("set", "local") and c.name == "search_path":
            self.changed = True
            self.known = c.value is not None
            return c.value
        unknown = c is not None and c.op == "unknown" and c.name in ("search_path", "*")
        if c is not None and (unknown or c.op in ("reset_all", "rollback_to")):
            self.known = self.known and c.op == "rollback_to" and not self.changed
            self.changed = True
            return None
        if v.kind in ("commit", "rollback") and self.changed:
            self.known = False
        return None
