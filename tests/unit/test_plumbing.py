"""Names read from SQL session plumbing as PostgreSQL reads them (proxy/plumbing.py)."""

from __future__ import annotations

import pytest

from proxy.catalog import Catalog
from proxy.identity import SessionFacts
from proxy.plumbing import effects, run_kind
from proxy.policy.engine import PolicyEngine
from proxy.rules import Defaults, RuleSet

ENGINE = PolicyEngine(RuleSet(defaults=Defaults(unparsed="allow", statements=["all"])), Catalog())
FACTS = SessionFacts(user="alice", database="db")
LONG = "n" * 70


def read(sql: str) -> list[tuple[str, str | None, bool, bool, tuple[str, ...]]]:
    d = ENGINE.decide(sql, FACTS)
    found = effects(sql, d.statements)
    return [(e.op, e.name, e.cursor, e.hold, e.params) for _, e in sorted(found.items())]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("PREPARE Lookup(int) AS SELECT $1", [("prepare", "lookup", False, False, ())]),
        ('PREPARE "Lookup" AS SELECT 1', [("prepare", "Lookup", False, False, ())]),
        ("EXECUTE s(1, 'x')", [("run", "s", False, False, ("1", "x"))]),
        ("DECLARE c NO SCROLL CURSOR WITH HOLD FOR SELECT 1", [("declare", "c", False, True, ())]),
        ("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1", [("declare", "c", False, False, ())]),
        ("FETCH FORWARD 10 FROM C", [("run", "c", True, False, ())]),
        ('FETCH ALL IN "x y"', [("run", "x y", True, False, ())]),
        ("FETCH c", [("run", "c", True, False, ())]),
        ("MOVE 10 IN c", []),  # returns no rows
        (
            "CLOSE c; CLOSE ALL",
            [("close", "c", False, False, ()), ("close", None, False, False, ())],
        ),
        ("DEALLOCATE PREPARE s", [("deallocate", "s", False, False, ())]),
        ("DEALLOCATE ALL", [("deallocate", None, False, False, ())]),
        ("DISCARD ALL; DISCARD PLANS", [("discard", None, False, False, ())]),
        (f"PREPARE {LONG} AS SELECT 1", [("prepare", "n" * 63, False, False, ())]),
        ("SELECT 1; BEGIN", []),
        ("CREATE TABLE t2 AS EXECUTE s(3)", [("run", "s", False, False, ("3",))]),
        ("EXPLAIN (ANALYZE, COSTS off) EXECUTE s", [("run", "s", False, False, ())]),
        ("EXPLAIN EXECUTE s", []),
        ("EXPLAIN (COSTS off) EXECUTE s", []),
        ("CREATE TABLE t2 (a int)", []),
        ("EXPLAIN SELECT 'execute' s", []),
        ("CREATE TABLE t2 AS SELECT 'as' execute", []),
        ("CREATE TRIGGER tr AFTER INSERT ON t EXECUTE FUNCTION f()", []),
    ],
)
def test_names(
    sql: str, expected: list[tuple[str, str | None, bool, bool, tuple[str, ...]]]
) -> None:
    assert read(sql) == expected


def test_a_prepared_statement_runs_as_the_kind_it_prepares() -> None:
    assert run_kind("prepare", "PREPARE s AS SELECT * FROM t WHERE id = ?") == "select"
    assert run_kind("prepare", "PREPARE s AS DELETE FROM t") == "delete"
    assert run_kind("declare", "DECLARE c CURSOR FOR SELECT 1") == "declare"
