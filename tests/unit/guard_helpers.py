"""Shared helpers for the guard's unit tests: a settable clock, statements, rule sets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proxy.catalog import Catalog, Relation
from proxy.identity import SessionFacts
from proxy.rules import ExtractionRule, RuleSet, UserEntry

ALICE = SessionFacts(user="alice", database="db")
BOB = SessionFacts(user="bob", database="db")


class Clock:
    """An injected clock the tests move by hand."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class Stmt:
    """The StatementInfo fields the guard reads."""

    kind: str = "select"
    tables: tuple[str, ...] = ("public.people",)
    fingerprint: str = "fp1"
    literals: tuple[Any, ...] = ()
    has_where: bool = True
    has_limit: bool = False
    offset: int | None = None
    copy_out: bool = False
    columns: tuple[str, ...] = field(default=())
    redacted: str = ""
    functions: tuple[str, ...] = ()


def ruleset(*entries: dict[str, Any]) -> RuleSet:
    """A rule set with alice and bob as analysts and the given extraction entries."""
    return RuleSet(
        users={
            "alice": UserEntry(groups=["analysts"]),
            "bob": UserEntry(groups=["analysts"]),
            "carol": UserEntry(groups=["supervisors"]),
        },
        extraction=[ExtractionRule.model_validate(e) for e in entries],
    )


def catalog(sizes: dict[str, float], **extra: Relation) -> Catalog:
    """A catalog snapshot with tables of the given planner estimates, plus `extra` relations."""
    rels = {}
    for name, rows in sizes.items():
        schema, _, table = name.partition(".")
        rels[name] = Relation(schema, table, reltuples=rows)
    rels.update(extra)
    return Catalog(rels)
