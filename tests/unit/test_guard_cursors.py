"""Per-cursor counting: a per-query cap holds across a FETCH loop."""

from __future__ import annotations

from guard_helpers import ALICE, Clock, Stmt, ruleset

from proxy.guard import Guard, MemoryStore
from proxy.guard.cursors import CursorTracker
from proxy.hooks import StatementResult
from proxy.identity import SessionFacts

S1 = SessionFacts(user="alice", database="db", session_id="s1")
S2 = SessionFacts(user="alice", database="db", session_id="s2")


def sql(text: str) -> Stmt:
    return Stmt(kind=text.split()[0].lower().replace("move", "fetch"), redacted=text)


def done(rows: int, nbytes: int = 0) -> StatementResult:
    return StatementResult(rows=rows, bytes=nbytes, duration=0.0, error=None, cutoff=False)


async def test_fetch_loop_counts_against_one_cap() -> None:
    guard = Guard(ruleset({"id": "cap", "max_rows_per_query": 1000}), MemoryStore(), clock=Clock())
    await guard.admit(S1, [sql("DECLARE c NO SCROLL CURSOR FOR SELECT * FROM people")])
    used = []
    for _ in range(3):
        adm = await guard.admit(S1, [sql("FETCH FORWARD ? FROM c")])
        assert adm.limits is not None and adm.limits.max_rows == 1000
        used.append(adm.limits.used_rows)
        await guard.finished(S1, adm.token, done(400, 4000))
    assert used == [0, 400, 800]
    # another session's cursor of the same name is its own
    adm = await guard.admit(S2, [sql("FETCH 10 FROM c")])
    assert adm.limits is not None and adm.limits.used_rows == 0
    # declaring it again starts over; CLOSE forgets it
    await guard.admit(S1, [sql('DECLARE "C" CURSOR WITH HOLD FOR SELECT 1')])
    await guard.admit(S1, [sql("DECLARE c CURSOR FOR SELECT 1")])
    adm = await guard.admit(S1, [sql("FETCH ALL IN c")])
    assert adm.limits is not None and adm.limits.used_rows == 0
    await guard.finished(S1, adm.token, done(5))
    await guard.admit(S1, [sql("CLOSE c")])
    adm = await guard.admit(S1, [sql("FETCH ALL IN c")])
    assert adm.limits is not None and adm.limits.used_rows == 0


async def test_budget_remainder_is_not_double_counted_for_fetches() -> None:
    guard = Guard(
        ruleset(
            {"id": "cap", "max_rows_per_query": 1000},
            {"id": "hourly", "window": "1h", "max_rows": 1500, "action": "block"},
        ),
        MemoryStore(),
        clock=Clock(),
    )
    await guard.admit(S1, [sql("DECLARE c CURSOR FOR SELECT * FROM people")])
    adm = await guard.admit(S1, [sql("FETCH 700 FROM c")])
    await guard.finished(S1, adm.token, done(700))
    # the cursor may send 300 more (cap), the budget 800 more: the cap binds
    adm = await guard.admit(S1, [sql("FETCH 700 FROM c")])
    assert adm.limits is not None
    assert (adm.limits.max_rows, adm.limits.used_rows, adm.limits.rule) == (1000, 700, "cap")
    await guard.finished(S1, adm.token, done(300))
    # a fresh query: the cap allows 1000, the budget only 500 more
    adm = await guard.admit(S1, [Stmt()])
    assert adm.limits is not None
    assert (adm.limits.max_rows, adm.limits.used_rows, adm.limits.rule) == (500, 0, "hourly")


def test_tracker_parses_names() -> None:
    t = CursorTracker()
    assert t.observe("s", "declare", 'DECLARE "My Cur" BINARY CURSOR FOR SELECT 1') is None
    count = t.observe("s", "fetch", 'FETCH 10 FROM "My Cur";')
    assert count is not None
    count.rows = 10
    assert t.observe("s", "fetch", 'MOVE ABSOLUTE ? IN "My Cur"') is count
    assert t.observe("s", "fetch", "FETCH 10 FROM my_cur") is not count  # different name
    t.observe("s", "close", "CLOSE ALL")
    fresh = t.observe("s", "fetch", 'FETCH 10 FROM "My Cur"')
    assert fresh is not None and fresh.rows == 0
    assert t.observe("s", "select", "SELECT 1") is None
    assert ALICE.session_id == ""  # sessions without an id fall back to user@client
