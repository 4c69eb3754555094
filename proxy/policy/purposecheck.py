"""The stated purpose while the statements of one query string are decided (issue #17).

Two checks, per statement, in the order the server will run them:

- A SET (or set_config) of `oversight.purpose` to a value the proxy will not
  write in its records (proxy/purpose.py: too long, several lines, control
  characters), or to one it cannot read (a computed set_config value, a list),
  is refused before it reaches the server, with 22023.
- `defaults.require_purpose`: a statement of a user the requirement matches that
  names a governed table (one any table rule names, whoever it is for) is
  refused with 42501 unless the purpose in force fits the pattern.

Within one string the purpose moves with each SET (a SET LOCAL too: the
string's implicit transaction is still open). Where it cannot be told (a
computed set_config, RESET ALL, a COMMIT or ROLLBACK after a change), it is
unknown and the requirement refuses. Rules that match on `purposes` are chosen
once per string, so a string that changes the purpose and then names a table
is refused when any rule matches on purposes: the SET must be sent on its own.
"""

from __future__ import annotations

import dataclasses

from proxy.errors import BadPurpose, PurposeRequired
from proxy.gucs import PURPOSE
from proxy.policy.context import Context
from proxy.policy.verdict import Verdict
from proxy.purpose import MAX_LENGTH, problem
from proxy.rules import RuleSet

COMPUTED = "the proxy must be able to read it: give the purpose as a plain string literal"
HINT = "State why you are looking, e.g.: SET oversight.purpose = 'CASE-1234 fraud review';"


def _refuse(v: Verdict, rule: str, err: BadPurpose | PurposeRequired) -> None:
    if v.action != "block":
        v.action, v.error, v.reason = "block", err, err.message
        v.rules.insert(0, rule)


@dataclasses.dataclass(slots=True)
class PurposeInString:
    purpose: str
    known: bool
    rules: RuleSet
    changed: bool = False  # a statement of this string moved the purpose

    @classmethod
    def start(cls, ctx: Context, rules: RuleSet) -> PurposeInString:
        return cls(ctx.facts.purpose, ctx.facts.purpose_known, rules)

    def check(self, v: Verdict, ctx: Context) -> None:
        c = v.change
        if c is not None and c.name == PURPOSE and c.op in ("set", "local") and c.value:
            why = problem(c.value[0])
            if why is not None:
                _refuse(v, "oversight.purpose", BadPurpose(why))
                return
        if c is not None and c.name == PURPOSE and c.op == "unknown":
            # set_config('oversight.purpose', <computed>): a value no one can check.
            _refuse(v, "oversight.purpose", BadPurpose(COMPUTED))
            return
        if not v.tables or not self._governed(v.tables):
            return
        if self.changed and self.rules.matches_purpose:
            _refuse(
                v,
                "oversight.purpose",
                PurposeRequired(
                    "Rules match on the purpose: send the SET oversight.purpose on its own, "
                    "then the statement."
                ),
            )
            return
        need = self.rules.defaults.require_purpose
        if need is None or (need.match is not None and not need.match.fits(ctx.who, ctx.facts)):
            return
        if not (self.known and need.satisfied(self.purpose)):
            hint = (
                f"{HINT} The purpose must match {need.pattern!r} ({MAX_LENGTH} characters at most)."
            )
            _refuse(v, "defaults.require_purpose", PurposeRequired(hint))

    def after(self, v: Verdict) -> None:
        """Account for the allowed `v`: later statements of the string run after it."""
        c = v.change
        if c is not None and c.op in ("set", "local") and c.name == PURPOSE:
            # RESET goes back to the session's startup value: unknown here, so refused.
            self.changed, self.known = True, c.value is not None
            self.purpose = c.value[0] if c.value else ""
        elif c is not None and (
            (c.op == "unknown" and c.name in (PURPOSE, "*")) or c.op in ("reset_all", "rollback_to")
        ):
            self.changed, self.known = True, False
        elif v.kind in ("commit", "rollback") and self.changed:
            self.known = False

    def _governed(self, tables: list[str]) -> bool:
        return any(r.names(t) for t in tables for r in self.rules.rules)
