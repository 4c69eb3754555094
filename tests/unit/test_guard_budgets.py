"""Guard budgets and caps with the MemoryStore and an injected clock."""

from __future__ import annotations

import pytest
from guard_helpers import ALICE, BOB, Clock, Stmt, ruleset

from proxy.errors import VolumeLimit
from proxy.guard import Guard, MemoryStore
from proxy.hooks import StatementResult
from proxy.identity import SessionFacts

CAROL = SessionFacts(user="carol", database="db")


def result(rows: int, nbytes: int = 0) -> StatementResult:
    return StatementResult(rows=rows, bytes=nbytes, duration=0.01, error=None, cutoff=False)


def make(*entries: dict[str, object]) -> tuple[Guard, Clock]:
    clock = Clock()
    return Guard(ruleset(*entries), MemoryStore(), None, clock=clock), clock


ANALYSTS = {"groups": ["analysts"]}


async def test_no_matching_entry_is_a_plain_allow() -> None:
    guard, _ = make({"id": "cap", "match": ANALYSTS, "max_rows_per_query": 10})
    adm = await guard.admit(CAROL, [Stmt()])
    assert adm.error is None and adm.limits is None and adm.token is None and adm.hits == []
    assert adm.action == "allow"


async def test_tightest_caps_win_with_their_rule() -> None:
    guard, _ = make(
        {
            "id": "loose",
            "match": ANALYSTS,
            "max_rows_per_query": 1000,
            "max_bytes_per_query": "1MB",
        },
        {"id": "tight", "match": ANALYSTS, "max_rows_per_query": 50},
        {"id": "bytes", "max_bytes_per_query": "10kB"},
    )
    adm = await guard.admit(ALICE, [Stmt()])
    assert adm.limits is not None
    assert (adm.limits.max_rows, adm.limits.max_bytes, adm.limits.rule) == (50, 10_000, "tight")
    assert set(adm.rules) == {"loose", "tight", "bytes"}
    adm = await guard.admit(CAROL, [Stmt()])
    assert adm.limits is not None
    assert (adm.limits.max_rows, adm.limits.max_bytes, adm.limits.rule) == (None, 10_000, "bytes")


async def test_query_budget_blocks_at_the_limit_and_resets_after_the_window() -> None:
    guard, clock = make(
        {"id": "q", "match": ANALYSTS, "window": "1m", "max_queries": 3, "action": "block"}
    )
    for _ in range(3):
        adm = await guard.admit(ALICE, [Stmt()])
        assert adm.error is None
        clock.advance(1)
    adm = await guard.admit(ALICE, [Stmt()])
    assert isinstance(adm.error, VolumeLimit)
    assert adm.error.sqlstate == "53400"
    assert adm.error.message.startswith("oversight: q: volume limit")
    assert adm.action == "block"
    assert adm.hits[0]["rule"] == "q" and adm.hits[0]["budget"] == "budget"
    assert adm.hits[0]["queries"] == 3
    # bob has his own budget
    assert (await guard.admit(BOB, [Stmt()])).error is None
    # still refused just before the window has passed, allowed after it
    clock.advance(55)
    assert isinstance((await guard.admit(ALICE, [Stmt()])).error, VolumeLimit)
    clock.advance(10)
    assert (await guard.admit(ALICE, [Stmt()])).error is None


async def test_row_budget_caps_the_last_statement_to_what_is_left() -> None:
    guard, clock = make(
        {"id": "rows", "match": ANALYSTS, "window": "1h", "max_rows": 100, "action": "block"},
        {"id": "cap", "match": ANALYSTS, "max_rows_per_query": 80},
    )
    adm = await guard.admit(ALICE, [Stmt()])
    assert adm.limits is not None and (adm.limits.max_rows, adm.limits.rule) == (80, "cap")
    await guard.finished(ALICE, adm.token, result(70))
    adm = await guard.admit(ALICE, [Stmt()])
    assert adm.limits is not None and (adm.limits.max_rows, adm.limits.rule) == (30, "rows")
    await guard.finished(ALICE, adm.token, result(30))
    adm = await guard.admit(ALICE, [Stmt()])
    assert isinstance(adm.error, VolumeLimit)
    assert "100 of 100 rows" in adm.error.message
    clock.advance(3600 + 61)
    adm = await guard.admit(ALICE, [Stmt()])
    assert adm.error is None and adm.limits is not None and adm.limits.max_rows == 80


async def test_byte_budget_counts_bytes() -> None:
    guard, _ = make({"id": "b", "window": "1h", "max_bytes": "1kB", "action": "block"})
    adm = await guard.admit(ALICE, [Stmt()])
    assert adm.limits is not None and adm.limits.max_bytes == 1000
    await guard.finished(ALICE, adm.token, result(10, 999))
    adm = await guard.admit(ALICE, [Stmt()])
    assert adm.limits is not None and adm.limits.max_bytes == 1
    await guard.finished(ALICE, adm.token, result(1, 1))
    assert isinstance((await guard.admit(ALICE, [Stmt()])).error, VolumeLimit)


async def test_log_action_reports_but_lets_through() -> None:
    guard, _ = make({"id": "q", "window": "1h", "max_queries": 1, "action": "log"})
    assert (await guard.admit(ALICE, [Stmt()])).hits == []
    adm = await guard.admit(ALICE, [Stmt()])
    assert adm.error is None and adm.delay == 0 and adm.action == "allow"
    assert adm.hits == [
        {
            "rule": "q",
            "budget": "budget",
            "action": "log",
            "window_s": 3600.0,
            "queries": 1,
            "max_queries": 1,
        }
    ]


async def test_dry_run_budget_never_refuses() -> None:
    guard, _ = make(
        {"id": "q", "window": "1h", "max_queries": 1, "action": "block", "mode": "dry_run"}
    )
    await guard.admit(ALICE, [Stmt()])
    adm = await guard.admit(ALICE, [Stmt()])
    assert adm.error is None
    assert adm.hits[0]["dry_run"] is True and adm.hits[0]["action"] == "block"


async def test_multi_statement_text_counts_each_statement() -> None:
    guard, _ = make({"id": "q", "window": "1h", "max_queries": 3, "action": "block"})
    assert (await guard.admit(ALICE, [Stmt(), Stmt()])).error is None
    assert isinstance((await guard.admit(ALICE, [Stmt(), Stmt()])).error, VolumeLimit)
    assert (await guard.admit(ALICE, [Stmt()])).error is None


async def test_prepared_statement_token_accounts_every_execution() -> None:
    guard, _ = make({"id": "rows", "window": "1h", "max_rows": 100, "action": "block"})
    adm = await guard.admit(ALICE, [Stmt()])
    for _ in range(3):  # one Parse, three Bind/Execute
        assert await guard.pace(ALICE, adm.token, 10, 100) == 0
        await guard.finished(ALICE, adm.token, result(20))
    adm = await guard.admit(ALICE, [Stmt()])
    assert adm.limits is not None and adm.limits.max_rows == 40


async def test_reload_keeps_budgets_and_applies_new_limits_at_once() -> None:
    clock = Clock()
    store = MemoryStore()
    guard = Guard(
        ruleset({"id": "rows", "window": "1h", "max_rows": 1000, "action": "block"}),
        store,
        clock=clock,
    )
    adm = await guard.admit(ALICE, [Stmt()])
    await guard.finished(ALICE, adm.token, result(600))
    guard.update(ruleset({"id": "rows", "window": "1h", "max_rows": 500, "action": "block"}), None)
    assert isinstance((await guard.admit(ALICE, [Stmt()])).error, VolumeLimit)
    guard.update(ruleset({"id": "rows", "window": "1h", "max_rows": 2000, "action": "block"}), None)
    adm = await guard.admit(ALICE, [Stmt()])
    assert adm.error is None and adm.limits is not None and adm.limits.max_rows == 1400
    # a rule that disappears stops applying at once too
    guard.update(ruleset(), None)
    assert (await guard.admit(ALICE, [Stmt()])).limits is None


async def test_pace_flushes_running_totals_for_other_sessions() -> None:
    guard, clock = make({"id": "rows", "window": "1h", "max_rows": 1000, "action": "block"})
    a = await guard.admit(ALICE, [Stmt()])
    clock.advance(1)
    await guard.pace(ALICE, a.token, 700, 7000)  # a long stream, still running
    b = await guard.admit(ALICE, [Stmt()])  # a second session of the same user
    assert b.limits is not None and b.limits.max_rows == 300
    await guard.finished(ALICE, a.token, result(750))  # only the rest is added
    c = await guard.admit(ALICE, [Stmt()])
    assert c.limits is not None and c.limits.max_rows == 250


@pytest.mark.parametrize("limit", [0, 1])
async def test_zero_and_tiny_budgets(limit: int) -> None:
    guard, _ = make({"id": "rows", "window": "1h", "max_rows": limit, "action": "block"})
    adm = await guard.admit(ALICE, [Stmt()])
    if limit == 0:
        assert isinstance(adm.error, VolumeLimit)
    else:
        assert adm.limits is not None and adm.limits.max_rows == 1


async def test_defaults_dry_run_applies_to_entries_without_a_mode(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rules = ruleset(
        {"id": "cap", "max_rows_per_query": 10},
        {"id": "q", "window": "1h", "max_queries": 1, "action": "block"},
        {"id": "strict", "max_rows_per_query": 500, "mode": "enforce"},
    )
    rules.defaults = rules.defaults.model_copy(update={"mode": "dry_run"})
    guard = Guard(rules, MemoryStore(), clock=Clock())
    await guard.admit(ALICE, [Stmt()])
    adm = await guard.admit(ALICE, [Stmt()])
    assert adm.error is None and adm.hits[0]["dry_run"] is True
    # the dry-run cap cuts nothing; the entry that says enforce still does
    assert adm.limits is not None and (adm.limits.max_rows, adm.limits.rule) == (500, "strict")
    with caplog.at_level("WARNING", logger="oversight.guard"):
        await guard.finished(ALICE, adm.token, result(20))
    assert "cap would have cut off" in caplog.text
