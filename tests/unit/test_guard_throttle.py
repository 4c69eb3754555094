"""Throttling: delays for over-budget statements and backpressure pacing of streams."""

from __future__ import annotations

import pytest
from guard_helpers import ALICE, Clock, Stmt, ruleset

from proxy.guard import Guard, MemoryStore
from proxy.hooks import StatementResult


def result(rows: int, nbytes: int = 0) -> StatementResult:
    return StatementResult(rows=rows, bytes=nbytes, duration=0.01, error=None, cutoff=False)


async def test_query_budget_throttle_delays_at_the_sustainable_rate() -> None:
    clock = Clock()
    entry = {"id": "q", "window": "1h", "max_queries": 10, "action": "throttle"}
    guard = Guard(ruleset(entry), MemoryStore(), clock=clock)
    for _ in range(10):
        adm = await guard.admit(ALICE, [Stmt()])
        assert adm.delay == 0 and adm.error is None and adm.action == "allow"
    adm = await guard.admit(ALICE, [Stmt()])
    # one query over a budget of 10 per hour: one sustainable interval, 360 s, capped at 30 s
    assert adm.error is None and adm.action == "throttle"
    assert adm.delay == pytest.approx(30.0)
    assert adm.hits[0]["action"] == "throttle"


async def test_throttle_delay_grows_with_the_overdraft_but_stays_bounded() -> None:
    clock = Clock()
    entry = {"id": "q", "window": "1m", "max_queries": 60, "action": "throttle"}
    guard = Guard(ruleset(entry), MemoryStore(), clock=clock)
    for _ in range(60):
        await guard.admit(ALICE, [Stmt()])
    delays = [(await guard.admit(ALICE, [Stmt()])).delay for _ in range(5)]
    # 1 query per second is sustainable: 1 s base for the first over, then 2 s, 3 s...
    assert delays == pytest.approx([1.0, 2.0, 3.0, 4.0, 5.0])
    for _ in range(100):
        last = (await guard.admit(ALICE, [Stmt()])).delay
    assert last == pytest.approx(30.0)


async def test_stream_is_paced_at_the_budget_rate_once_past_the_budget() -> None:
    clock = Clock()
    # 3600 rows per hour: 1 row per second once over.
    entry = {"id": "rows", "window": "1h", "max_rows": 3600, "action": "throttle"}
    guard = Guard(ruleset(entry), MemoryStore(), clock=clock)
    adm = await guard.admit(ALICE, [Stmt()])
    assert adm.paced and adm.limits is not None and adm.limits.max_rows is None
    assert adm.delay == 0
    # inside the budget: no pause at all
    assert await guard.pace(ALICE, adm.token, 3000, 0) == 0
    assert await guard.pace(ALICE, adm.token, 3600, 0) == 0
    # past the budget: every row beyond it costs a second, counted from the crossing
    assert await guard.pace(ALICE, adm.token, 3610, 0) == pytest.approx(10.0)
    clock.advance(10)
    assert await guard.pace(ALICE, adm.token, 3620, 0) == pytest.approx(10.0)
    clock.advance(10)
    assert await guard.pace(ALICE, adm.token, 3620, 0) == pytest.approx(0.0)
    clock.advance(2)
    assert await guard.pace(ALICE, adm.token, 3625, 0) == pytest.approx(3.0)
    # a pause is never longer than max_delay (30 s by default)
    assert await guard.pace(ALICE, adm.token, 9000, 0) == pytest.approx(30.0)


async def test_simulated_stream_runs_at_about_the_configured_rate() -> None:
    clock = Clock()
    entry = {"id": "rows", "window": "100s", "max_rows": 1000, "action": "throttle"}  # 10 rows/s
    guard = Guard(ruleset(entry), MemoryStore(), clock=clock)
    adm = await guard.admit(ALICE, [Stmt()])
    await guard.finished(ALICE, adm.token, result(1000))  # budget used up
    adm = await guard.admit(ALICE, [Stmt()])
    assert adm.delay == pytest.approx(1.0)  # the base delay at an overdraft of 0
    start, rows = clock.now, 0
    while rows < 500:  # the session: read a chunk of 25 rows, ask, sleep what it says
        rows += 25
        clock.advance(0.001)
        clock.advance(await guard.pace(ALICE, adm.token, rows, rows * 100))
    elapsed = clock.now - start
    assert 49 <= elapsed <= 51  # 500 rows at 10 rows/s


async def test_throttle_detector_delays_and_log_detector_does_not() -> None:
    clock = Clock()
    guard = Guard(
        ruleset(
            {
                "id": "copy-slow",
                "detect": "copy_out",
                "action": "throttle",
                "match": {"users": ["alice"]},
            },
            {"id": "copy-log", "detect": "copy_out", "action": "log"},
        ),
        MemoryStore(),
        clock=clock,
    )
    adm = await guard.admit(ALICE, [Stmt(kind="copy", copy_out=True)])
    assert adm.error is None and adm.delay == pytest.approx(1.0) and adm.action == "throttle"
    assert [h["rule"] for h in adm.hits] == ["copy-slow", "copy-log"]
    bob = ALICE.__class__(user="bob", database="db")
    adm = await guard.admit(bob, [Stmt(kind="copy", copy_out=True)])
    assert adm.delay == 0 and adm.action == "allow" and adm.hits[0]["detector"] == "copy_out"


async def test_pace_without_token_is_free() -> None:
    guard = Guard(ruleset(), MemoryStore())
    assert await guard.pace(ALICE, None, 10, 10) == 0
    await guard.finished(ALICE, None, result(1))
