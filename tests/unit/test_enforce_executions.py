"""Each run of a prepared statement is a statement to the guard, and to reloaded rules.

In the extended protocol the Enforcer admits the Parse by policy alone and
the guard's part happens at every Execute (`Enforcer.execute`): budgets
count each run, a throttle delays each run, caps and what is left of a
blocking budget apply to each run, and detectors see its bound values. After
a rules reload, a statement prepared before it is decided again at its next
Execute: refused if the new rules refuse it, stale (0A000, so drivers
prepare it again) if they would rewrite it differently. Statements PREPAREd
and cursors DECLAREd in SQL are admitted the same way at each of their runs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from guard_helpers import ALICE, Clock, ruleset

from proxy.catalog import Catalog, Relation
from proxy.enforce import Enforcer
from proxy.errors import Blocked, StaleCursor, StalePlan, UnknownName, VolumeLimit
from proxy.guard import Guard, MemoryStore
from proxy.guard.limits import DEFAULT_MAX_DELAY
from proxy.guard.store import state_key
from proxy.hooks import Admission, StatementResult, Unknown
from proxy.identity import SessionFacts
from proxy.rules import RuleSet, TableRule

SQL = "SELECT name FROM people WHERE id = $1"
CAROL = SessionFacts(user="carol", database="db")


def enforcer(*entries: dict[str, Any]) -> tuple[Enforcer, MemoryStore, Clock]:
    clock, store = Clock(), MemoryStore()
    rules = ruleset(*entries)
    people = Catalog({"public.people": Relation("public", "people", columns=("id", "name"))})
    return Enforcer(rules, people, Guard(rules, store, clock=clock)), store, clock


async def run(e: Enforcer, parsed: Admission, rows: int, *params: str) -> Admission:
    """One Bind/Execute of the prepared statement, streaming `rows` rows."""
    adm = await e.execute(ALICE, parsed, params)
    if adm.error is None:
        await e.finished(ALICE, adm.token, StatementResult(rows, rows * 10, 0.0, None, False))
    return adm


async def test_parse_is_admitted_by_policy_alone() -> None:
    e, store, clock = enforcer({"id": "q", "window": "1h", "max_queries": 1, "action": "block"})
    for _ in range(3):  # Parse is not a query: nothing is counted
        parsed = await e.decide(SQL, ALICE, extended=True)
        assert parsed.per_execute and parsed.error is None and parsed.limits is None
    assert (await store.usage(state_key("q", "alice"), 3600, clock())).queries == 0


async def test_every_execution_counts_against_the_query_budget() -> None:
    e, _, _ = enforcer({"id": "q", "window": "1h", "max_queries": 2, "action": "block"})
    parsed = await e.decide(SQL, ALICE, extended=True)
    first, second, third = [await run(e, parsed, 1, "1") for _ in range(3)]
    assert first.error is None and second.error is None
    assert isinstance(third.error, VolumeLimit) and third.action == "block"
    assert third.reason.startswith("oversight: q: volume limit: 2 of 2 queries")


async def test_every_execution_is_delayed_once_over_a_throttle_budget() -> None:
    e, _, _ = enforcer({"id": "slow", "window": "1h", "max_queries": 2, "action": "throttle"})
    parsed = await e.decide(SQL, ALICE, extended=True)
    delays = [(await run(e, parsed, 1, str(i))).delay for i in range(4)]
    assert delays[:2] == [0.0, 0.0]
    # one query over a budget of 2 an hour: half an hour's wait, capped at max_delay
    assert delays[2:] == [DEFAULT_MAX_DELAY, DEFAULT_MAX_DELAY]
    assert (await run(e, parsed, 1)).action == "throttle"


async def test_each_execution_is_capped_by_what_is_left_of_a_row_budget() -> None:
    e, _, _ = enforcer(
        {"id": "rows", "window": "1h", "max_rows": 100, "action": "block"},
        {"id": "cap", "max_rows_per_query": 50},
    )
    parsed = await e.decide(SQL, ALICE, extended=True)
    caps = []
    for rows in (50, 30, 20):
        adm = await run(e, parsed, rows)
        assert adm.limits is not None
        caps.append((adm.limits.max_rows, adm.limits.rule))
    assert caps == [(50, "cap"), (50, "cap"), (20, "rows")]
    assert isinstance((await run(e, parsed, 0)).error, VolumeLimit)  # used up: refused


async def test_detectors_see_bound_values() -> None:
    e, _, _ = enforcer(
        {
            "id": "lookups",
            "window": "10m",
            "detect": "enumeration",
            "max_distinct": 3,
            "action": "block",
        }
    )
    parsed = await e.decide(SQL, ALICE, extended=True)
    outcomes = [await run(e, parsed, 1, v) for v in ("7", "8", "8", "9")]
    errors = [a.error for a in outcomes]
    assert errors[:3] == [None, None, None]  # the same value again is not a new lookup
    assert isinstance(errors[-1], Blocked) and errors[-1].rule == "lookups"
    hits = outcomes[-1].audit["detectors"]
    assert hits[0]["detector"] == "enumeration"


async def test_users_without_extraction_entries_keep_the_parse_admission() -> None:
    e, _, _ = enforcer({"id": "cap", "match": {"groups": ["supervisors"]}, "max_rows_per_query": 5})
    parsed = await e.decide(SQL, ALICE, extended=True)
    assert await e.execute(ALICE, parsed, ("1",)) is parsed


async def test_a_reload_that_adds_a_limit_reaches_statements_prepared_before() -> None:
    e, _, _ = enforcer()
    parsed = await e.decide(SQL, ALICE, extended=True)
    assert parsed.per_execute  # asked at Execute although no entry applies yet
    e.reload(ruleset({"id": "cap", "max_rows_per_query": 5}))
    adm = await e.execute(ALICE, parsed, ("1",))
    assert adm.limits is not None and adm.limits.max_rows == 5


async def test_a_simple_query_is_admitted_whole() -> None:
    e, store, clock = enforcer({"id": "q", "window": "1h", "max_queries": 5, "action": "block"})
    adm = await e.decide(SQL.replace("$1", "1"), ALICE, extended=False)
    assert not adm.per_execute and adm.token.guard is not None
    assert (await store.usage(state_key("q", "alice"), 3600, clock())).queries == 1


# ---------------------------------------------------------------- rules reloaded


PEOPLE = Catalog({"public.people": Relation("public", "people", columns=("id", "name", "ssn"))})
LOOKUP = "SELECT name, ssn FROM people WHERE id = $1"


def masking(ssn: str | None) -> RuleSet:
    rules = ruleset()
    if ssn is None:
        return rules
    rule = TableRule.model_validate(
        {
            "id": "people",
            "match": {"groups": ["analysts"]},
            "table": "public.people",
            "columns": {"ssn": ssn},
        }
    )
    return dataclasses.replace(rules, rules=[rule])


async def prepared_then_reloaded(before: RuleSet, after: RuleSet) -> Admission:
    e = Enforcer(before, PEOPLE, None)
    parsed = await e.decide(LOOKUP, ALICE, extended=True)
    assert parsed.error is None
    e.reload(after)
    return await e.execute(ALICE, parsed, ("1",))


async def test_a_reload_that_changes_the_rewrite_makes_the_statement_stale() -> None:
    adm = await prepared_then_reloaded(masking(None), masking("redact"))
    assert isinstance(adm.error, StalePlan) and adm.error.sqlstate == "0A000"
    assert adm.error.message == "cached plan must not change result type"
    assert adm.action == "block" and adm.rules == ("reload",)


async def test_a_reload_that_refuses_the_statement_refuses_its_next_execution() -> None:
    adm = await prepared_then_reloaded(masking("redact"), masking("deny"))
    assert isinstance(adm.error, Blocked) and adm.error.rule == "people"


async def test_a_reload_that_changes_nothing_for_it_lets_it_run() -> None:
    adm = await prepared_then_reloaded(masking("redact"), masking("redact"))
    assert adm.error is None and adm.action == "rewrite"


# ---------------------------------------------------------------- names made in SQL


async def test_prepare_and_declare_are_not_runs_but_carry_what_their_runs_start_from() -> None:
    e, store, clock = enforcer({"id": "q", "window": "1h", "max_queries": 5, "action": "block"})
    adm = await e.decide(
        "PREPARE s(int) AS " + SQL + "; DECLARE c CURSOR FOR SELECT 1", ALICE, extended=False
    )
    prep, decl = adm.effects[0], adm.effects[1]
    assert (prep.op, prep.name, decl.op, decl.name) == ("prepare", "s", "declare", "c")
    assert prep.admission is not None and prep.admission.per_execute
    assert (await store.usage(state_key("q", "alice"), 3600, clock())).queries == 0
    run = await e.execute(ALICE, prep.admission, ("7",))  # EXECUTE s(7)
    assert run.error is None and not run.per_execute
    assert (await store.usage(state_key("q", "alice"), 3600, clock())).queries == 1


async def test_execute_and_fetch_are_left_to_their_runs() -> None:
    e, store, clock = enforcer({"id": "q", "window": "1h", "max_queries": 5, "action": "block"})
    adm = await e.decide("SELECT 1; EXECUTE s(42); FETCH 10 FROM c", ALICE, extended=False)
    assert adm.effects[1].op == "run" and adm.effects[1].params == ("42",)
    assert adm.effects[2].cursor and adm.effects[2].name == "c"
    assert (await store.usage(state_key("q", "alice"), 3600, clock())).queries == 1  # SELECT 1


async def test_a_prepared_statements_runs_are_seen_as_what_it_prepares() -> None:
    e, _, _ = enforcer(
        {
            "id": "lookups",
            "window": "10m",
            "detect": "enumeration",
            "max_distinct": 2,
            "action": "block",
        }
    )
    adm = await e.decide("PREPARE s(int) AS " + SQL, ALICE, extended=False)
    prep = adm.effects[0].admission
    assert prep is not None
    errors = [(await run(e, prep, 0, v)).error for v in ("1", "2")]
    assert errors[0] is None and isinstance(errors[1], Blocked)  # a lookup by lookup


async def test_a_cursors_later_runs_go_on_under_its_first() -> None:
    e, store, clock = enforcer({"id": "q", "window": "1h", "max_queries": 5, "action": "block"})
    adm = await e.decide("DECLARE c CURSOR FOR SELECT 1", ALICE, extended=False)
    declared = adm.effects[0].admission
    assert declared is not None
    first = await e.execute(ALICE, declared, ())
    assert await e.execute(ALICE, first, ()) is first  # a later FETCH: no new query
    assert (await store.usage(state_key("q", "alice"), 3600, clock())).queries == 1


async def test_unknown_names_are_refused_to_users_with_a_policy_only() -> None:
    e, _, _ = enforcer({"id": "cap", "match": {"groups": ["analysts"]}, "max_rows_per_query": 5})
    statement = Admission(token=Unknown(False, "nobody"))
    refused = await e.execute(ALICE, statement, ())
    assert isinstance(refused.error, UnknownName) and refused.error.sqlstate == "26000"
    assert refused.error.message == 'oversight: prepared statement "nobody" is unknown to the proxy'
    portal = await e.execute(ALICE, Admission(token=Unknown(True, "p")), ())
    assert portal.error is not None and portal.error.sqlstate == "34000"
    assert await e.execute(CAROL, statement, ()) is statement  # carol has no policy


async def test_a_reload_that_changes_a_cursors_rewrite_makes_it_stale() -> None:
    e = Enforcer(masking(None), PEOPLE, None)
    adm = await e.decide("DECLARE c CURSOR FOR SELECT name, ssn FROM people", ALICE, extended=False)
    declared = adm.effects[0].admission
    assert declared is not None
    e.reload(masking("redact"))
    stale = await e.execute(ALICE, declared, ())
    assert isinstance(stale.error, StaleCursor) and stale.error.sqlstate == "0A000"
    assert stale.error.message == 'oversight: the rules changed since cursor "c" was declared'
    e.reload(masking("deny"))
    assert isinstance((await e.execute(ALICE, declared, ())).error, Blocked)


async def test_a_reload_that_changes_a_sql_prepared_rewrite_makes_it_stale() -> None:
    e = Enforcer(masking(None), PEOPLE, None)
    adm = await e.decide("PREPARE s AS " + LOOKUP, ALICE, extended=False)
    prepared = adm.effects[0].admission
    assert prepared is not None
    e.reload(masking("redact"))
    assert isinstance((await e.execute(ALICE, prepared, ("1",))).error, StalePlan)
