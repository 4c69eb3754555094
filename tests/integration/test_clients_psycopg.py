"""psycopg 3 through the proxy: every protocol path the driver uses.

psycopg uses the simple protocol for parameterless queries, the extended one
with parameters, named `_pg3_N` statements once prepared, one Sync for a
whole pipeline, binary formats on request, and COPY, server-side cursors,
LISTEN/NOTIFY and cancel requests (PROTOCOL.md, "What clients send").
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from pgcluster import PgCluster
from polling import until_running
from psycopg import errors, pq

TABLE = "psy_items"


@pytest.fixture(scope="module")
def psy_table(pg: PgCluster) -> Iterator[str]:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(f"CREATE TABLE {TABLE} (id int PRIMARY KEY, name text, qty int)")
        conn.execute(f"GRANT ALL ON {TABLE} TO scramuser")
    yield TABLE
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")


@pytest.fixture
async def aconn(endpoint: Any, psy_table: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    conn = await psycopg.AsyncConnection.connect(endpoint.dsn(), autocommit=True)
    await conn.execute(f"TRUNCATE {TABLE}")
    yield conn
    await conn.close()


async def test_simple_query_multi_statement(aconn: psycopg.AsyncConnection[Any]) -> None:
    cur = aconn.cursor()
    await cur.execute("SELECT 1 AS a, 'x' AS b; SELECT generate_series(1, 3)")
    assert [d.name for d in cur.description or []] == ["a", "b"]
    assert await cur.fetchall() == [(1, "x")]
    assert cur.nextset()
    assert await cur.fetchall() == [(1,), (2,), (3,)]
    assert not cur.nextset()


async def test_extended_with_params(aconn: psycopg.AsyncConnection[Any]) -> None:
    cur = await aconn.execute(
        "SELECT %s::int + 1, %s::text || '!', %s::date, %s", [41, "hi", dt.date(2024, 2, 29), None]
    )
    assert await cur.fetchone() == (42, "hi!", dt.date(2024, 2, 29), None)
    cur = await aconn.execute("SELECT %(a)s::numeric * 2", {"a": Decimal("1.25")})
    assert await cur.fetchone() == (Decimal("2.50"),)


async def _prepared_names(conn: psycopg.AsyncConnection[Any]) -> list[str]:
    cur = await conn.execute("SELECT name FROM pg_prepared_statements ORDER BY name", prepare=False)
    return [r[0] for r in await cur.fetchall()]


async def test_prepare_true(aconn: psycopg.AsyncConnection[Any]) -> None:
    for i in range(3):
        cur = await aconn.execute("SELECT %s::int * 10", [i], prepare=True)
        assert await cur.fetchone() == (i * 10,)
    assert await _prepared_names(aconn) == ["_pg3_0"]


async def test_prepare_threshold(aconn: psycopg.AsyncConnection[Any]) -> None:
    aconn.prepare_threshold = 2
    for i in range(4):
        cur = await aconn.execute("SELECT %s::text || 'x'", [str(i)])
        assert await cur.fetchone() == (f"{i}x",)
    assert await _prepared_names(aconn) == ["_pg3_0"]
    # DEALLOCATE ALL through the proxy: psycopg re-prepares afterwards.
    await aconn.execute("DEALLOCATE ALL")
    for i in range(3):
        cur = await aconn.execute("SELECT %s::text || 'x'", [str(i)])
        assert await cur.fetchone() == (f"{i}x",)
    assert await _prepared_names(aconn) == ["_pg3_1"]


async def test_pipeline(aconn: psycopg.AsyncConnection[Any]) -> None:
    async with aconn.pipeline():
        async with aconn.cursor() as c:
            for i in range(50):
                await c.execute(f"INSERT INTO {TABLE} VALUES (%s, %s, %s)", [i, f"n{i}", i])
        counted = await aconn.execute(f"SELECT count(*), sum(qty) FROM {TABLE}")
        doubled = await aconn.execute("SELECT %s::int * 2", [21])
    assert await counted.fetchone() == (50, 1225)
    assert await doubled.fetchone() == (42,)


async def test_pipeline_error_aborts_rest(aconn: psycopg.AsyncConnection[Any]) -> None:
    with pytest.raises(errors.UniqueViolation):
        async with aconn.pipeline() as p:
            await aconn.execute(f"INSERT INTO {TABLE} VALUES (1, 'a', 1)")
            await p.sync()  # commits the first insert: one implicit transaction per Sync
            await aconn.execute(f"INSERT INTO {TABLE} VALUES (1, 'dup', 1)")
            await aconn.execute(f"INSERT INTO {TABLE} VALUES (2, 'b', 2)")
            await p.sync()
    assert aconn.info.transaction_status == pq.TransactionStatus.IDLE
    cur = await aconn.execute(f"SELECT id, name FROM {TABLE} ORDER BY id")
    assert await cur.fetchall() == [(1, "a")]


async def test_binary_results(aconn: psycopg.AsyncConnection[Any]) -> None:
    cur = aconn.cursor(binary=True)
    await cur.execute(
        "SELECT 7::int4, 'héllo'::text, '2024-01-02'::date, 1.5::numeric, ARRAY[1,2,3],"
        " '\\x00ff'::bytea, '{\"a\": 1}'::jsonb"
    )
    row = await cur.fetchone()
    assert row == (
        7,
        "héllo",
        dt.date(2024, 1, 2),
        Decimal("1.5"),
        [1, 2, 3],
        b"\x00\xff",
        {"a": 1},
    )
    assert cur.pgresult is not None
    assert [cur.pgresult.fformat(i) for i in range(7)] == [1] * 7
    # Binary parameters too.
    await cur.execute("SELECT %b::bytea || %b::bytea", [b"\x01", b"\x02"])
    assert await cur.fetchone() == (b"\x01\x02",)


async def test_copy_in_and_out(aconn: psycopg.AsyncConnection[Any]) -> None:
    cur = aconn.cursor()
    async with cur.copy(f"COPY {TABLE} (id, name, qty) FROM STDIN") as copy:
        for i in range(1000):
            await copy.write_row((i, f"row\t{i}", i % 7))
    assert cur.rowcount == 1000
    async with cur.copy(f"COPY {TABLE} (id, name) FROM STDIN WITH (FORMAT csv)") as copy:
        await copy.write(b"5000,raw\n5001,")
        await copy.write(b"split\n")
    total = await (await aconn.execute(f"SELECT count(*), sum(qty) FROM {TABLE}")).fetchone()
    assert total == (1002, sum(i % 7 for i in range(1000)))

    rows = []
    async with cur.copy(
        f"COPY (SELECT id, name FROM {TABLE} WHERE id < 3 ORDER BY id) TO STDOUT"
    ) as c:
        async for row in c.rows():
            rows.append(row)
    assert rows == [("0", "row\t0"), ("1", "row\t1"), ("2", "row\t2")]

    chunks = []
    q = f"COPY (SELECT id FROM {TABLE} WHERE id >= 5000 ORDER BY id) TO STDOUT WITH (FORMAT csv)"
    async with cur.copy(q) as c:
        async for data in c:
            chunks.append(bytes(data))
    assert b"".join(chunks) == b"5000\n5001\n"


async def test_copy_in_error_keeps_session(aconn: psycopg.AsyncConnection[Any]) -> None:
    cur = aconn.cursor()
    with pytest.raises(errors.InvalidTextRepresentation):
        async with cur.copy(f"COPY {TABLE} (id, name) FROM STDIN") as copy:
            await copy.write(b"1\tok\nnot-an-int\tbad\n")
    assert aconn.info.transaction_status == pq.TransactionStatus.IDLE
    # A client-side failure sends CopyFail.
    with pytest.raises(errors.QueryCanceled):
        async with cur.copy(f"COPY {TABLE} (id, name) FROM STDIN") as copy:
            await copy.write_row((9, "never"))
            raise errors.QueryCanceled("client gave up")
    cur = await aconn.execute(f"SELECT count(*) FROM {TABLE}")
    assert await cur.fetchone() == (0,)


async def test_server_side_cursor(aconn: psycopg.AsyncConnection[Any]) -> None:
    await aconn.set_autocommit(False)
    async with aconn.cursor(name="big") as cur:
        cur.itersize = 100
        await cur.execute("SELECT g, g * 2 FROM generate_series(1, 2500) AS g")
        first = await cur.fetchmany(10)
        assert first == [(i, i * 2) for i in range(1, 11)]
        total = 10
        last = None
        async for row in cur:
            total += 1
            last = row
        assert (total, last) == (2500, (2500, 5000))
    await aconn.commit()
    assert aconn.info.transaction_status == pq.TransactionStatus.IDLE


async def test_listen_notify(aconn: psycopg.AsyncConnection[Any], pg: PgCluster) -> None:
    await aconn.execute("LISTEN oversight_chan")
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as other:
        pid = (await (await other.execute("SELECT pg_backend_pid()")).fetchone() or [0])[0]
        await other.execute("NOTIFY oversight_chan, 'hello'")
        await other.execute("SELECT pg_notify('oversight_chan', 'world')")
    got = []
    async for n in aconn.notifies(timeout=10, stop_after=2):
        got.append((n.channel, n.payload, n.pid))
    assert got == [("oversight_chan", "hello", pid), ("oversight_chan", "world", pid)]


async def test_notify_while_idle_in_own_session(aconn: psycopg.AsyncConnection[Any]) -> None:
    received: list[str] = []
    aconn.add_notify_handler(lambda n: received.append(n.payload))
    await aconn.execute("LISTEN self_chan")
    await aconn.execute("NOTIFY self_chan, 'me'")
    assert received == ["me"]


async def test_backend_pid_is_upstream(aconn: psycopg.AsyncConnection[Any]) -> None:
    cur = await aconn.execute("SELECT pg_backend_pid()")
    assert await cur.fetchone() == (aconn.info.backend_pid,)


async def test_parameter_status_and_notice(
    aconn: psycopg.AsyncConnection[Any], pg: PgCluster
) -> None:
    async with await psycopg.AsyncConnection.connect(pg.dsn()) as direct:
        version = direct.info.parameter_status("server_version")
    assert aconn.info.parameter_status("server_version") == version
    await aconn.execute("SET application_name = 'renamed'")
    assert aconn.info.parameter_status("application_name") == "renamed"
    notices: list[tuple[str | None, str | None]] = []
    aconn.add_notice_handler(lambda d: notices.append((d.severity, d.message_primary)))
    await aconn.execute("DO $$ BEGIN RAISE NOTICE 'careful %', 42; END $$")
    assert notices == [("NOTICE", "careful 42")]


async def test_cancel_async(pg: Any, aconn: psycopg.AsyncConnection[Any]) -> None:
    async def sleeper() -> None:
        await aconn.execute("SELECT pg_sleep(20), 'async-cancel-marker'")

    task = asyncio.create_task(sleeper())
    await until_running(pg.dsn(), "async-cancel-marker")
    start = time.monotonic()
    await aconn.cancel_safe()
    with pytest.raises(errors.QueryCanceled) as info:
        await task
    assert time.monotonic() - start < 5
    assert info.value.sqlstate == "57014"
    cur = await aconn.execute("SELECT 'still here'")
    assert await cur.fetchone() == ("still here",)


CANCEL_SCRIPT = """
import sys, threading, time
import psycopg
from psycopg import errors

with psycopg.connect(sys.argv[1]) as conn:
    conn.execute("BEGIN")

    def cancel_when_running() -> None:
        # Cancel once the server runs the statement: a cancel that comes too early is lost.
        with psycopg.connect(sys.argv[3], autocommit=True) as watch:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not watch.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                " AND query LIKE '%sync-cancel-marker%' AND pid <> pg_backend_pid()"
            ).fetchone()[0]:
                time.sleep(0.02)
        getattr(conn, sys.argv[2])()

    threading.Thread(target=cancel_when_running, daemon=True).start()
    try:
        conn.execute("SELECT pg_sleep(20), 'sync-cancel-marker'")
        print("not cancelled")
    except errors.QueryCanceled as e:
        print(e.sqlstate, conn.info.transaction_status.name)
    conn.rollback()
    print(conn.execute("SELECT 'after'").fetchone())
"""


@pytest.mark.parametrize("method", ["cancel", "cancel_safe"])
async def test_cancel_sync(pg: Any, endpoint: Any, method: str) -> None:
    # A subprocess, not a thread: libpq's legacy PQcancel (conn.cancel) blocks
    # holding the GIL until the server closes the cancel socket, which would
    # freeze the proxy running in this process. `cancel` sends a plain
    # CancelRequest; `cancel_safe` (libpq 17) sends it after an SSLRequest.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CANCEL_SCRIPT,
        endpoint.dsn(),
        method,
        pg.dsn(),  # where the script watches for its statement to start
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert (proc.returncode, out.decode(), err.decode()) == (
        0,
        "57014 INERROR\n('after',)\n",
        "",
    )


async def test_transaction_error_and_rollback(aconn: psycopg.AsyncConnection[Any]) -> None:
    with pytest.raises(errors.DivisionByZero):
        async with aconn.transaction():
            await aconn.execute(f"INSERT INTO {TABLE} VALUES (1, 'gone', 1)")
            await aconn.execute("SELECT 1/0")
    assert aconn.info.transaction_status == pq.TransactionStatus.IDLE

    await aconn.set_autocommit(False)
    await aconn.execute(f"INSERT INTO {TABLE} VALUES (2, 'kept', 2)")
    assert aconn.info.transaction_status == pq.TransactionStatus.INTRANS
    with pytest.raises(errors.UndefinedColumn):
        await aconn.execute("SELECT nope")
    assert aconn.info.transaction_status == pq.TransactionStatus.INERROR
    with pytest.raises(errors.InFailedSqlTransaction):
        await aconn.execute("SELECT 1")
    await aconn.rollback()
    assert aconn.info.transaction_status == pq.TransactionStatus.IDLE
    async with aconn.transaction():
        await aconn.execute(f"INSERT INTO {TABLE} VALUES (3, 'kept', 3)")
        async with aconn.transaction():  # savepoint
            await aconn.execute(f"INSERT INTO {TABLE} VALUES (4, 'inner', 4)")
        with pytest.raises(errors.UniqueViolation):
            async with aconn.transaction():
                await aconn.execute(f"INSERT INTO {TABLE} VALUES (3, 'dup', 3)")
    await aconn.commit()
    cur = await aconn.execute(f"SELECT id FROM {TABLE} ORDER BY id")
    assert await cur.fetchall() == [(3,), (4,)]


async def test_two_phase_commit(aconn: psycopg.AsyncConnection[Any]) -> None:
    await aconn.set_autocommit(False)
    xid = aconn.xid(1, "oversight-gtrid", "bq")
    await aconn.tpc_begin(xid)
    await aconn.execute(f"INSERT INTO {TABLE} VALUES (7, 'tpc', 7)")
    await aconn.tpc_prepare()
    await aconn.tpc_commit()
    cur = await aconn.execute(f"SELECT name FROM {TABLE} WHERE id = 7")
    assert await cur.fetchone() == ("tpc",)


def _sync_roundtrip(dsn: str) -> list[Any]:
    with psycopg.connect(dsn) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {TABLE} VALUES (%s, %s, %s)", [(i, "s", i) for i in range(20)]
            )
            cur.execute(f"SELECT count(*), max(id) FROM {TABLE}")
            out = [cur.fetchone()]
        conn.commit()
        with conn.cursor(name="sync_named") as named:
            named.execute(f"SELECT id FROM {TABLE} ORDER BY id")
            out.append(named.fetchmany(3))
        conn.rollback()
        return out


async def test_sync_connection(
    aconn: psycopg.AsyncConnection[Any], endpoint: Any, run_sync: Any
) -> None:
    assert await run_sync(_sync_roundtrip, endpoint.dsn()) == [(20, 19), [(0,), (1,), (2,)]]


BIG_QUERY = "SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 50000) AS g"


async def _digest(conn: psycopg.AsyncConnection[Any], binary: bool) -> tuple[int, int]:
    rows = 0
    h = 0
    cur = conn.cursor(binary=binary)
    await cur.execute(BIG_QUERY)
    async for g, text in cur:
        rows += 1
        h = hash((h, g, text))
    return rows, h


async def test_large_results_and_copy(aconn: psycopg.AsyncConnection[Any], pg: PgCluster) -> None:
    # About 13 MB each way: many socket reads, partial frames and backpressure.
    async with await psycopg.AsyncConnection.connect(pg.dsn()) as direct:
        for binary in (False, True):
            assert await _digest(aconn, binary) == await _digest(direct, binary)
    cur = aconn.cursor()
    chunks = []
    async with cur.copy(f"COPY ({BIG_QUERY}) TO STDOUT") as copy:
        async for data in copy:
            chunks.append(bytes(data))
    dump = b"".join(chunks)
    assert len(dump) == sum(len(f"{g}\t") + 257 for g in range(1, 50001))
    async with cur.copy(f"COPY {TABLE} (id, name) FROM STDIN") as copy:
        await copy.write(dump)
    count = await (
        await aconn.execute(f"SELECT count(*), sum(length(name)) FROM {TABLE}")
    ).fetchone()
    assert count == (50000, 50000 * 256)
