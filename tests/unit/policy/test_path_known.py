"""An unknown search_path refuses, under a policy, every statement that resolves names (#12)."""

from __future__ import annotations

from dataclasses import replace

from proxy.errors import Blocked
from proxy.gucs import Change
from proxy.identity import SessionFacts
from proxy.policy.engine import PolicyEngine

ALICE = SessionFacts("alice", "db")
LOST = replace(ALICE, search_path_known=False)


def test_unknown_path_refuses_reads_but_not_set_show_or_transaction_control(
    engine: PolicyEngine,
) -> None:
    d = engine.decide("SELECT name FROM people", LOST)
    assert d.action == "block" and d.rules[0] == "session.search_path"
    assert isinstance(d.error, Blocked) and "SET search_path" in d.error.message
    for sql in ("SHOW search_path", "BEGIN", "ROLLBACK", "COMMIT", "SET work_mem = '4MB'"):
        assert engine.decide(sql, LOST).action == "allow", sql


def test_a_set_in_the_string_makes_the_path_known_again(engine: PolicyEngine) -> None:
    d = engine.decide("SET search_path = internal; SELECT * FROM secrets", LOST)
    assert d.action == "block" and d.rules[0] == "internal-schema"
    d = engine.decide("SET search_path = public; SELECT name FROM people", LOST)
    assert d.action != "block"


def test_a_reset_or_rollback_after_a_set_in_the_string_leaves_the_path_unknown(
    engine: PolicyEngine,
) -> None:
    for sql in (
        "RESET search_path; SELECT name FROM people",
        "SET search_path TO DEFAULT; SELECT name FROM people",
        "DISCARD ALL; SELECT name FROM people",
        "BEGIN; SET search_path = sandbox; ROLLBACK; SELECT name FROM people",
        "BEGIN; SET LOCAL search_path = sandbox; COMMIT; SELECT name FROM people",
        "SAVEPOINT a; SET search_path = sandbox; ROLLBACK TO a; SELECT name FROM people",
        "SELECT set_config('search_path', current_user, false); SELECT name FROM people",
    ):
        d = engine.decide(sql, ALICE)
        assert d.action == "block", sql
        assert d.rules[0] in ("session.search_path", "defaults.functions"), sql
    # With no path change before it, a ROLLBACK changes nothing the engine relies on.
    assert engine.decide("ROLLBACK; SELECT name FROM people", ALICE).action != "block"


def test_changes_reach_the_statement_info(engine: PolicyEngine) -> None:
    d = engine.decide("SAVEPOINT a; SET LOCAL search_path = x; ROLLBACK TO SAVEPOINT a", ALICE)
    ops = [(s.change.op, s.change.name) if s.change else None for s in d.statements]
    assert ops == [("savepoint", "a"), ("local", "search_path"), ("rollback_to", "a")]
    d = engine.decide("SELECT set_config('search_path', 'x', true)", ALICE)
    c = d.statements[0].change
    assert c is not None and (c.op, c.value) == ("local", ("x",))


def test_a_do_block_or_a_prepared_set_config_leaves_the_path_unknown(
    engine: PolicyEngine,
) -> None:
    for sql in (
        "DO $$ BEGIN PERFORM set_config('search_path', 'x', false); END $$",
        "PREPARE p AS SELECT set_config('search_path', 'x', false)",
    ):
        c = engine.decide(sql, SessionFacts("nobody", "db")).statements[0].change
        assert c == Change("unknown", "*"), sql
