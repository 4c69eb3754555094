"""The extraction guard through a real proxy in front of a real PostgreSQL.

The hooks here are the guard alone (no policy engine): caps, budgets and
throttling do not depend on what a statement reads, so these tests pin the
guard-to-session path: a cap stops the stream at exactly N rows with the
54000 error, the upstream query is cancelled, and the session stays usable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from fix_guard import RedisServer, redis_server

from proxy.catalog import Catalog
from proxy.enforce import Enforcer
from proxy.guard import Guard, MemoryStore, RedisStore, Store
from proxy.hooks import StatementResult
from proxy.identity import SessionFacts
from proxy.rules import Defaults, ExtractionRule, RuleSet

__all__ = ["redis_server"]  # the fixture, imported from fix_guard

# The set-returning function in the select list streams (a FROM-clause one would
# materialize all rows first); 50M rows would take minutes unless cancelled.
BIG = "SELECT g, repeat('x', 50) AS pad FROM (SELECT generate_series(1, 50000000) AS g) s"


class GuardHooks(Enforcer):
    """The production hooks over open rules (no policy), keeping every statement's result."""

    def __init__(self, guard: Guard, rules: RuleSet) -> None:
        super().__init__(rules, Catalog(), guard)
        self.results: list[StatementResult] = []

    async def finished(
        self, facts: SessionFacts, token: Any, result: StatementResult
    ) -> Sequence[dict[str, Any]]:
        self.results.append(result)
        return await super().finished(facts, token, result)


OPEN = Defaults(unparsed="allow", statements=["all"])


def rules(*entries: dict[str, object]) -> RuleSet:
    return RuleSet(defaults=OPEN, extraction=[ExtractionRule.model_validate(e) for e in entries])


def guard_hooks(*entries: dict[str, object], store: Store | None = None) -> GuardHooks:
    ruleset = rules(*entries)
    return GuardHooks(Guard(ruleset, store or MemoryStore()), ruleset)


def audit_records(path: Path) -> list[dict[str, Any]]:
    lines = path.read_bytes().splitlines()
    return [r for r in map(orjson.loads, lines) if r.get("event") == "statement"]


async def backend_state(pg: Any, pid: int) -> tuple[str, str]:
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as direct:
        cur = await direct.execute(
            "SELECT state, query FROM pg_stat_activity WHERE pid = %s", (pid,)
        )
        row = await cur.fetchone()
        assert row is not None
        return str(row[0]), str(row[1])


async def still_running(pg: Any, pid: int, needle: str) -> bool:
    """Is backend `pid` still running a query containing `needle`, after up to 2 s?"""
    deadline = time.monotonic() + 2
    while True:
        state, query = await backend_state(pg, pid)
        if state != "active" or needle not in query:
            return False
        if time.monotonic() > deadline:
            return True
        await asyncio.sleep(0.05)


async def test_cap_stops_at_exactly_n_rows_and_session_stays_usable(
    pg: Any, proxy_factory: Any
) -> None:
    hooks = guard_hooks({"id": "result-cap", "max_rows_per_query": 1000})
    proxy = await proxy_factory(hooks=hooks)
    async with await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True) as conn:
        t0 = time.monotonic()
        with pytest.raises(psycopg.Error) as exc:
            await conn.execute(BIG)
        assert time.monotonic() - t0 < 10  # cut off, not read to the end
        assert exc.value.sqlstate == "54000"
        assert str(exc.value).startswith(
            "oversight: result limit of 1000 rows reached (result-cap)"
        )
        # the upstream query is gone, and the session is usable
        assert not await still_running(pg, conn.info.backend_pid, "generate_series(1, 50000000)")
        cur = await conn.execute("SELECT 42")
        assert await cur.fetchone() == (42,)
    cut = [r for r in hooks.results if r.cutoff]
    assert len(cut) == 1 and cut[0].rows == 1000
    records = audit_records(proxy.audit_log)
    big = [r for r in records if "generate_series" in (r.get("sql") or "")]  # literals redacted
    assert len(big) == 1 and big[0]["decision"] == "cutoff" and big[0]["rows"] == 1000
    assert big[0]["error"].startswith("54000")


async def test_byte_cap(proxy_factory: Any) -> None:
    hooks = guard_hooks({"id": "byte-cap", "max_bytes_per_query": "100kB"})
    proxy = await proxy_factory(hooks=hooks)
    async with await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as exc:
            await conn.execute(BIG)
        assert exc.value.sqlstate == "54000" and "byte-cap" in str(exc.value)
        assert await (await conn.execute("SELECT 1")).fetchone() == (1,)
    cut = [r for r in hooks.results if r.cutoff]
    assert len(cut) == 1 and 0 < cut[0].bytes <= 100_000


async def test_cap_in_extended_protocol(pg: Any, proxy_factory: Any) -> None:
    hooks = guard_hooks({"id": "cap", "max_rows_per_query": 250})
    proxy = await proxy_factory(hooks=hooks)
    async with await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True) as conn:
        for binary in (False, True):
            with pytest.raises(psycopg.Error) as exc:
                await conn.execute(
                    "SELECT generate_series(1, %s) AS g", (50_000_000,), binary=binary
                )
            assert exc.value.sqlstate == "54000"
            # under the cap passes untouched, with parameters
            cur = await conn.execute("SELECT g FROM generate_series(1, %s) g", (250,))
            assert len(await cur.fetchall()) == 250
        state, _ = await backend_state(pg, conn.info.backend_pid)
        assert state == "idle"
    assert [r.rows for r in hooks.results if r.cutoff] == [250, 250]


async def test_cap_counts_per_cursor_across_fetches(proxy_factory: Any) -> None:
    hooks = guard_hooks({"id": "cap", "max_rows_per_query": 1000})
    proxy = await proxy_factory(hooks=hooks)
    async with await psycopg.AsyncConnection.connect(proxy.dsn()) as conn:
        await conn.execute("DECLARE c NO SCROLL CURSOR FOR " + BIG)
        for _ in range(2):
            cur = await conn.execute("FETCH 400 FROM c")
            assert len(await cur.fetchall()) == 400
        with pytest.raises(psycopg.Error) as exc:
            await conn.execute("FETCH 400 FROM c")
        assert exc.value.sqlstate == "54000"
        await conn.rollback()
        assert await (await conn.execute("SELECT 7")).fetchone() == (7,)


async def test_cap_on_copy_to_stdout(proxy_factory: Any) -> None:
    hooks = guard_hooks({"id": "cap", "max_rows_per_query": 300})
    proxy = await proxy_factory(hooks=hooks)
    async with await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True) as conn:
        got = 0
        with pytest.raises(psycopg.Error) as exc:
            async with conn.cursor().copy(f"COPY ({BIG}) TO STDOUT") as copy:
                async for _ in copy.rows():
                    got += 1
        assert exc.value.sqlstate == "54000"
        assert got <= 300
        assert await (await conn.execute("SELECT 1")).fetchone() == (1,)
    assert [r.rows for r in hooks.results if r.cutoff] == [300]


async def test_row_budget_across_statements(proxy_factory: Any) -> None:
    hooks = guard_hooks({"id": "hourly", "window": "1h", "max_rows": 500, "action": "block"})
    proxy = await proxy_factory(hooks=hooks)
    q = "SELECT g FROM generate_series(1, %s) g"
    async with await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True) as conn:
        assert len(await (await conn.execute(q, (300,))).fetchall()) == 300
        with pytest.raises(psycopg.Error) as exc:  # 200 left: this one is cut at 200
            await conn.execute(q, (300,))
        assert exc.value.sqlstate == "54000" and "hourly" in str(exc.value)
        with pytest.raises(psycopg.Error) as exc:
            await conn.execute(q, (1,))
        assert exc.value.sqlstate == "53400"
        assert str(exc.value).startswith("oversight: hourly: volume limit")


async def test_throttle_slows_a_stream_to_about_the_budget_rate(proxy_factory: Any) -> None:
    # 400 kB per 2 s window: once past the first 400 kB the stream is held at 200 kB/s.
    hooks = guard_hooks({"id": "slow", "window": "2s", "max_bytes": 400_000, "action": "throttle"})
    proxy = await proxy_factory(hooks=hooks, read_size=16384)
    sql = "SELECT repeat('x', 1000) FROM generate_series(1, 1400)"  # ~1.4 MB on the wire
    async with await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True) as conn:
        t0 = time.monotonic()
        rows = await (await conn.execute(sql)).fetchall()
        elapsed = time.monotonic() - t0
    assert len(rows) == 1400
    total = hooks.results[-1].bytes
    expected = (total - 400_000) / 200_000  # ~5 s; the last chunk is not waited for
    assert expected * 0.75 <= elapsed <= expected * 1.4, (elapsed, expected)


@pytest.mark.parametrize("client", ["asyncpg", "psycopg"])
async def test_throttle_delays_each_run_of_a_prepared_statement(
    proxy_factory: Any, client: str
) -> None:
    """One Parse, many Executes: every run past the query budget waits, not just the first."""
    import asyncpg

    # 2 queries per 3 s: the third run is one over, so it waits 3 s / 2 = 1.5 s.
    hooks = guard_hooks({"id": "paced", "window": "3s", "max_queries": 2, "action": "throttle"})
    proxy = await proxy_factory(hooks=hooks)
    sql = "SELECT g FROM generate_series(1, 3) g"
    t0 = time.monotonic()
    if client == "asyncpg":
        conn = await asyncpg.connect(proxy.dsn())
        try:
            stmt = await conn.prepare(sql)
            counts = [len(await stmt.fetch()) for _ in range(3)]
        finally:
            await conn.close()
    else:
        async with await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True) as pconn:
            counts = []
            for _ in range(3):
                cur = await pconn.execute(sql, prepare=True)
                counts.append(len(await cur.fetchall()))
    elapsed = time.monotonic() - t0
    assert counts == [3, 3, 3]
    runs = [r for r in audit_records(proxy.audit_log) if "generate_series" in (r["sql"] or "")]
    assert [r["decision"] for r in runs] == ["allow", "allow", "throttle"]
    assert runs[-1]["rules"] == ["paced"]
    assert elapsed >= 1.4  # the delay really happened (an upper bound is the benchmark's job)


async def test_two_proxies_sharing_redis_enforce_one_budget(
    proxy_factory: Any, redis_server: RedisServer
) -> None:
    redis_server.flush()
    entry = {"id": "team-hourly", "window": "1h", "max_rows": 1000, "action": "block"}
    stores = [RedisStore(redis_server.url), RedisStore(redis_server.url)]
    hooks = [guard_hooks(entry, store=store) for store in stores]
    proxies = [await proxy_factory(hooks=h) for h in hooks]
    q = "SELECT g FROM generate_series(1, 300) g"
    got: list[str] = []
    try:
        conns = [await psycopg.AsyncConnection.connect(p.dsn(), autocommit=True) for p in proxies]
        for i in range(6):  # alternate between the two instances
            conn = conns[i % 2]
            try:
                rows = await (await conn.execute(q)).fetchall()
                got.append(str(len(rows)))
            except psycopg.Error as e:
                got.append(str(e.sqlstate))
        # 300 + 300 + 300, then the last 100 rows are cut off, then refused everywhere
        assert got == ["300", "300", "300", "54000", "53400", "53400"]
        delivered = sum(r.rows for h in hooks for r in h.results)
        assert delivered == 1000
        # racing: both instances admitted at once may overshoot by at most one statement
        redis_server.flush()
        big = "SELECT g FROM generate_series(1, 700) g"

        async def run(conn: psycopg.AsyncConnection[Any]) -> None:
            try:
                await (await conn.execute(big)).fetchall()
            except psycopg.Error as e:
                assert e.sqlstate in ("54000", "53400")

        before = delivered
        for _ in range(2):
            await asyncio.gather(*(run(c) for c in conns))
        raced = sum(r.rows for h in hooks for r in h.results) - before
        assert 1000 <= raced <= 1700
        for c in conns:
            await c.close()
    finally:
        for store in stores:
            await store.close()


async def test_cap_holds_across_a_suspended_portal(proxy_factory: Any) -> None:
    """asyncpg cursors: Execute(portal, 100) again and again on one portal."""
    import asyncpg

    hooks = guard_hooks({"id": "cap", "max_rows_per_query": 1000})
    proxy = await proxy_factory(hooks=hooks)
    conn = await asyncpg.connect(proxy.dsn())
    try:
        got = 0
        with pytest.raises(asyncpg.PostgresError) as exc:
            async with conn.transaction():
                async for _ in conn.cursor(BIG, prefetch=100):
                    got += 1
        assert exc.value.sqlstate == "54000"
        assert got == 1000
        assert await conn.fetchval("SELECT 5") == 5
    finally:
        await conn.close()


async def test_cap_is_per_execution_of_a_prepared_statement(proxy_factory: Any) -> None:
    hooks = guard_hooks({"id": "cap", "max_rows_per_query": 1000})
    proxy = await proxy_factory(hooks=hooks)
    q = "SELECT g FROM generate_series(1, %s) g"
    async with await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True) as conn:
        for _ in range(4):  # named server-side statement, executed again and again
            cur = await conn.execute(q, (600,), prepare=True)
            assert len(await cur.fetchall()) == 600
        with pytest.raises(psycopg.Error) as exc:
            await conn.execute(q, (1001,), prepare=True)
        assert exc.value.sqlstate == "54000"
    assert [r.rows for r in hooks.results] == [600, 600, 600, 600, 1000]


async def test_budget_holds_for_a_prepared_statement_run_again_and_again(
    proxy_factory: Any,
) -> None:
    """asyncpg prepares once and executes many times: each run is admitted on its own."""
    import asyncpg

    hooks = guard_hooks({"id": "hourly", "window": "1h", "max_rows": 1000, "action": "block"})
    proxy = await proxy_factory(hooks=hooks)
    conn = await asyncpg.connect(proxy.dsn())
    outcomes: list[str] = []
    try:
        stmt = await conn.prepare("SELECT g FROM generate_series(1, 300) g")
        for _ in range(5):
            try:
                outcomes.append(str(len(await stmt.fetch())))
            except asyncpg.PostgresError as e:
                outcomes.append(str(e.sqlstate))
        with pytest.raises(asyncpg.PostgresError) as exc:  # a new statement: budget is gone
            await conn.fetchval("SELECT 9")
        assert exc.value.sqlstate == "53400"
    finally:
        await conn.close()
    # The fourth run is cut off at what was left (100 rows), the fifth refused.
    assert outcomes == ["300", "300", "300", "54000", "53400"]
    assert sum(r.rows for r in hooks.results) == 1000
