"""The merged, validated rule set the policy engine and the guard read.

Built by proxy/rules/load.py from one file or a directory of files; immutable
once built, so a running proxy swaps whole sets on reload.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from proxy.identity import SessionFacts
from proxy.rules.alertroutes import AlertRoute
from proxy.rules.model import (
    Defaults,
    ExtractionRule,
    FunctionRule,
    Principal,
    RuleTest,
    TableRule,
    UserEntry,
)
from proxy.rules.subjects import CanaryRule, SubjectRule


class RulesError(Exception):
    """A rule set that does not validate; `.problems` has one line per problem."""

    def __init__(self, problems: list[str]):
        super().__init__("invalid rule set:\n" + "\n".join(problems))
        self.problems = problems


@dataclass(slots=True)
class RuleSet:
    """The merged, validated rule files; immutable once built."""

    defaults: Defaults = field(default_factory=Defaults)
    users: dict[str, UserEntry] = field(default_factory=dict)
    rules: list[TableRule] = field(default_factory=list)
    functions: list[FunctionRule] = field(default_factory=list)
    extraction: list[ExtractionRule] = field(default_factory=list)
    tests: list[RuleTest] = field(default_factory=list)
    alerts: list[AlertRoute] = field(default_factory=list)
    subjects: list[SubjectRule] = field(default_factory=list)
    canaries: list[CanaryRule] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # rule id -> file
    version: str = ""

    @property
    def uses_hours(self) -> bool:
        items: Iterable[TableRule | FunctionRule | ExtractionRule]
        items = [*self.rules, *self.functions, *self.extraction]
        return any(r.match is not None and r.match.hours is not None for r in items)

    @property
    def matches_purpose(self) -> bool:
        """Does any rule match on the stated purpose (`match: {purposes: ...}`)?"""
        items: Iterable[TableRule | FunctionRule | ExtractionRule]
        items = [*self.rules, *self.functions, *self.extraction]
        return any(r.match is not None and r.match.purposes is not None for r in items)

    @property
    def uses_purpose(self) -> bool:
        """Do decisions depend on the stated purpose (rules match on it, or require one)?"""
        return self.matches_purpose or self.defaults.require_purpose is not None

    def subject(self, sid: str) -> SubjectRule | None:
        return next((s for s in self.subjects if s.id == sid), None)

    @property
    def known_attributes(self) -> set[str]:
        return {"user"} | {a for u in self.users.values() for a in u.attributes}

    def principal(self, facts: SessionFacts) -> Principal:
        """The user's groups and attributes: the rule files' `users:` merged with the
        session's identity sources (docs/identity.md). Groups are the union; an
        attribute the rule files set wins over a source's, since the rule author
        wrote it for this user on purpose."""
        entry = self.users.get(facts.user)
        attrs = dict(facts.attributes)
        if entry is None:
            return Principal(facts.user, facts.groups, attrs)
        attrs.update({k: _attr_text(v) for k, v in entry.attributes.items()})
        return Principal(facts.user, frozenset(entry.groups) | facts.groups, attrs)

    def matching_extraction(self, facts: SessionFacts) -> list[ExtractionRule]:
        who = self.principal(facts)
        return [r for r in self.extraction if r.match is None or r.match.fits(who, facts)]

    def matching_rules(self, facts: SessionFacts) -> list[TableRule]:
        who = self.principal(facts)
        return [r for r in self.rules if r.match is None or r.match.fits(who, facts)]

    def matching_functions(self, facts: SessionFacts) -> list[FunctionRule]:
        who = self.principal(facts)
        return [r for r in self.functions if r.match is None or r.match.fits(who, facts)]


def _attr_text(v: str | int | float | bool) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)
