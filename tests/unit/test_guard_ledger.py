"""The subject-ledger detectors (coverage, restricted_lookup) through Guard.admit/finished."""

from __future__ import annotations

from typing import Any

import pytest
from guard_helpers import ALICE, BOB, Clock, Stmt, catalog

from proxy.errors import Blocked
from proxy.guard import Guard, MemoryStore
from proxy.hooks import StatementResult
from proxy.identity import SessionFacts
from proxy.ledger.hashing import subject_hash
from proxy.ledger.tally import Tally
from proxy.rules import ExtractionRule, RuleSet, UserEntry
from proxy.rules.subjects import SubjectRule

KEY = b"ledger-test-key"
DAY = 86400.0
CATALOG = catalog({"public.people": 100, "public.fresh": -1})
PERSON = SubjectRule(id="person", table="public.people", key="id", lookups=["ssn"])
FRESH = SubjectRule(id="fresh", table="public.fresh", key="id")


def rules(*entries: dict[str, Any]) -> RuleSet:
    return RuleSet(
        users={"alice": UserEntry(groups=["analysts"]), "bob": UserEntry(groups=["analysts"])},
        extraction=[ExtractionRule.model_validate(e) for e in entries],
        subjects=[PERSON, FRESH],
    )


def make(*entries: dict[str, Any]) -> tuple[Guard, Clock]:
    clock = Clock()
    return Guard(rules(*entries), MemoryStore(), CATALOG, clock=clock, ledger_key=KEY), clock


def h(key: object, subject: str = "person", column: str = "") -> str:
    return subject_hash(KEY, subject, str(key), column)


def seen(*keys: int, subject: str = "person") -> Tally:
    t = Tally()
    for k in keys:
        t.seen(subject, h(k, subject))
    return t


def looked_up(*keys: int, column: str = "id") -> Tally:
    t = Tally()
    for k in keys:
        t.looked_up("person", column, h(k))
    return t


async def run(guard: Guard, tally: Tally | None, who: SessionFacts = ALICE) -> list[dict[str, Any]]:
    """Admit one statement, let it 'run', and return the hits `finished` reports."""
    adm = await guard.admit(who, [Stmt()])
    assert adm.error is None, adm.error
    result = StatementResult(rows=1, bytes=10, duration=0.0, error=None, cutoff=False)
    result.subjects = tally
    return await guard.finished(who, adm.token, result)


COVERAGE = {"id": "cov", "detect": "coverage", "subject": "person", "share": 0.2, "action": "log"}


async def test_coverage_fires_once_a_share_of_the_table_was_received_over_days() -> None:
    guard, clock = make({**COVERAGE, "window": "7d"})
    assert await run(guard, seen(*range(10))) == []
    clock.advance(DAY)
    assert await run(guard, seen(*range(5, 19))) == []  # 19 distinct people of 100
    clock.advance(DAY)
    (hit,) = await run(guard, seen(19, 3))  # the 20th: 20% of reltuples 100
    assert hit == {
        "rule": "cov",
        "detector": "coverage",
        "action": "log",
        "subject": "person",
        "distinct": 20,
        "threshold": 20,
        "share": 0.2,
        "of": 100,
        "window_s": 7 * DAY,
        "table": "public.people",
    }
    # Every statement adding subjects while over it is reported, like the other detectors.
    assert [x["distinct"] for x in await run(guard, seen(20))] == [21]
    # Re-reading the same people adds no one; a statement with no people is quiet.
    assert [x["distinct"] for x in await run(guard, seen(1, 2))] == [21]
    assert await run(guard, None) == []
    assert await run(guard, Tally()) == []


async def test_coverage_window_slides_and_users_are_apart() -> None:
    guard, clock = make({**COVERAGE, "window": "7d"})
    await run(guard, seen(*range(15)))
    assert await run(guard, seen(*range(15, 20)), BOB) == []  # bob's own 5
    clock.advance(8 * DAY)  # alice's 15 left the window (7d plus one bucket of 14h)
    assert await run(guard, seen(*range(100, 110))) == []


async def test_coverage_share_of_an_explicit_size_and_silence_without_one() -> None:
    guard, _ = make({**COVERAGE, "of": 10})  # 20% of 10 = 2
    assert await run(guard, seen(1)) == []
    (hit,) = await run(guard, seen(2))
    assert hit["threshold"] == 2 and hit["of"] == 10 and "table" not in hit
    # public.fresh was never analyzed: no estimate, no threshold, no guess.
    quiet, _ = make({**COVERAGE, "subject": "fresh"})
    assert await run(quiet, seen(*range(500), subject="fresh")) == []


async def test_coverage_counts_received_rows_not_searches() -> None:
    guard, _ = make({**COVERAGE, "of": 10})
    assert await run(guard, looked_up(*range(10))) == []


async def test_coverage_block_refuses_later_statements_while_it_stands() -> None:
    guard, clock = make({**COVERAGE, "window": "1d", "action": "block"})
    (hit,) = await run(guard, seen(*range(25)))
    assert hit["action"] == "block"  # the statement that crossed it has run
    adm = await guard.admit(ALICE, [Stmt()])
    assert isinstance(adm.error, Blocked) and adm.error.sqlstate == "42501"
    assert adm.error.message.startswith("oversight: blocked by cov: received about 25 distinct")
    assert "already ran" in adm.error.message
    assert adm.hits[0]["detector"] == "coverage" and adm.action == "block"
    assert (await guard.admit(BOB, [Stmt()])).error is None  # bob is not alice
    clock.advance(DAY + DAY / 12 + 1)  # the window and its last bucket went by
    assert (await guard.admit(ALICE, [Stmt()])).error is None


async def test_coverage_throttle_delays_later_statements_and_dry_run_only_reports() -> None:
    guard, _ = make({**COVERAGE, "action": "throttle"})
    await run(guard, seen(*range(20)))
    adm = await guard.admit(ALICE, [Stmt()])
    assert adm.error is None and adm.delay > 0 and adm.action == "throttle"
    dry, _ = make({**COVERAGE, "action": "block", "mode": "dry_run"})
    (hit,) = await run(dry, seen(*range(20)))
    assert hit["dry_run"] is True
    adm = await dry.admit(ALICE, [Stmt()])
    assert adm.error is None and adm.hits[0]["dry_run"] is True


RESTRICTED = {
    "id": "vip",
    "detect": "restricted_lookup",
    "subject": "person",
    "keys": [7, "8"],
    "action": "log",
}


async def test_restricted_lookup_fires_at_the_first_lookup_of_each_restricted_subject() -> None:
    guard, clock = make(RESTRICTED)
    assert await run(guard, looked_up(1, 2, 3)) == []
    (hit,) = await run(guard, looked_up(7, 1))
    assert hit == {
        "rule": "vip",
        "detector": "restricted_lookup",
        "action": "log",
        "subject": "person",
        "restricted": [{"hash": h(7), "how": "looked_up"}],
        "restricted_seen": 1,
        "window_s": 30 * DAY,
    }
    clock.advance(10 * DAY)
    assert await run(guard, looked_up(7)) == []  # not the first time in 30 days
    (hit,) = await run(guard, seen(8, 7))  # 8 arrives in a row: a search by name shows so
    assert hit["restricted"] == [{"hash": h(8), "how": "seen"}]
    assert (await run(guard, seen(8), BOB))[0]["restricted_seen"] == 1  # bob's first
    clock.advance(31 * DAY)  # 7 was last seen 30 days before: first time again
    (hit,) = await run(guard, looked_up(7))
    assert hit["restricted"] == [{"hash": h(7), "how": "looked_up"}]


async def test_restricted_lookup_how_and_what_is_not_a_key() -> None:
    guard, _ = make({**RESTRICTED, "how": ["looked_up"]})
    assert await run(guard, seen(7)) == []  # rows only: left out by how
    # A search on a lookups column hashes with its column: never a restricted key.
    t = Tally()
    t.looked_up("person", "ssn", h(7, column="ssn"))
    assert await run(guard, t) == []
    # A search on a via column is a key search (hashed with column "").
    assert len(await run(guard, looked_up(7, column="person_id"))) == 1


async def test_restricted_keys_are_hashed_under_the_ledger_key_and_not_kept() -> None:
    guard, _ = make({**RESTRICTED, "keys": [7, "staff-0042"]})
    (spec,) = guard.specs_for(ALICE)
    assert spec.restricted == {h(7), h("staff-0042")}
    assert "staff-0042" not in repr(spec)
    other = Guard(rules(RESTRICTED), MemoryStore(), CATALOG, ledger_key=b"another key")
    assert other.specs_for(ALICE)[0].restricted.isdisjoint(spec.restricted)


async def test_restricted_lookup_block_holds_for_the_window() -> None:
    guard, clock = make({**RESTRICTED, "action": "block", "window": "1h"})
    assert (await guard.admit(ALICE, [Stmt()])).error is None
    (hit,) = await run(guard, looked_up(8))
    assert hit["action"] == "block"
    adm = await guard.admit(ALICE, [Stmt()])
    assert isinstance(adm.error, Blocked)
    assert adm.error.message == (
        "oversight: blocked by vip: looked up a restricted person record within 1h;"
        " the statement that did already ran"
    )
    assert (await guard.admit(BOB, [Stmt()])).error is None
    clock.advance(3601)
    assert (await guard.admit(ALICE, [Stmt()])).error is None


async def test_no_ledger_work_without_a_matching_entry() -> None:
    guard, _ = make({**COVERAGE, "match": {"users": ["bob"]}})
    adm = await guard.admit(ALICE, [Stmt()])
    assert adm.token is None
    result = StatementResult(1, 1, 0.0, None, False, seen(*range(50)))
    assert await guard.finished(ALICE, adm.token, result) == []
    assert await run(guard, seen(*range(50)), BOB) != []


async def test_a_statement_detector_and_a_ledger_detector_side_by_side() -> None:
    guard, _ = make(
        COVERAGE, {"id": "scan", "detect": "unfiltered_scan", "min_rows": 50, "action": "log"}
    )
    adm = await guard.admit(ALICE, [Stmt(has_where=False)])
    assert [x["detector"] for x in adm.hits] == ["unfiltered_scan"]
    result = StatementResult(1, 1, 0.0, None, False, seen(*range(30)))
    assert [x["detector"] for x in await guard.finished(ALICE, adm.token, result)] == ["coverage"]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"detect": "coverage", "share": 0.2}, "needs subject"),
        ({"detect": "coverage", "subject": "person"}, "needs share"),
        ({"detect": "coverage", "subject": "person", "share": 0}, "share"),
        ({"detect": "coverage", "subject": "person", "share": 1.5}, "share"),
        ({"detect": "coverage", "subject": "person", "share": 0.1, "of": 0}, "of"),
        ({"detect": "coverage", "subject": "person", "share": 0.1, "keys": [1]}, "keys/how"),
        ({"detect": "coverage", "subject": "p", "share": 0.1, "max_rows": 5, "window": 1}, "apart"),
        ({"detect": "restricted_lookup", "subject": "person"}, "needs keys"),
        ({"detect": "restricted_lookup", "subject": "person", "keys": []}, "needs keys"),
        ({"detect": "restricted_lookup", "subject": "p", "keys": [1.5]}, "not a subject key"),
        ({"detect": "restricted_lookup", "subject": "p", "keys": [True]}, "not a subject key"),
        ({"detect": "restricted_lookup", "subject": "p", "keys": 7}, "a list of subject keys"),
        ({"detect": "restricted_lookup", "subject": "p", "keys": [1], "share": 0.1}, "share/of"),
        (
            {"detect": "restricted_lookup", "subject": "p", "keys": [1], "action": "throttle"},
            "action is log or block",
        ),
        ({"detect": "restricted_lookup", "subject": "p", "keys": [1], "how": []}, "how:"),
        ({"detect": "restricted_lookup", "subject": "p", "keys": [1], "how": ["x"]}, "how"),
        ({"detect": "enumeration", "subject": "person"}, "only for detect: coverage or"),
        ({"max_rows_per_query": 5, "share": 0.5}, "only for detect: coverage or"),
    ],
)
def test_entry_mistakes_are_explained(entry: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ExtractionRule.model_validate({"id": "x", **entry})
