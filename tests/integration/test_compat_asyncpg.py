"""asyncpg through a policy-active proxy (`compat_proxy`).

asyncpg prepares every query (Parse + Describe + Flush, no Sync), names the
statements `__asyncpg_stmt_N__` and reuses them from its cache, runs cursors
as portals with Execute row limits, and does COPY with the copy
sub-protocol (binary for copy_records_to_table). On every path `ssn` must
come back masked, a statement reading `notes` is refused with 42501
(InsufficientPrivilegeError), and the connection goes on.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
from conftest import COMPAT_PEOPLE, COMPAT_USER, MASKED, clear_scratch
from pgcluster import PgCluster

EXPECTED = [(i, name, MASKED) for i, name, _ssn, _notes in COMPAT_PEOPLE]
BLOCKED = "oversight: blocked by compat-people"
IDS = range(3000, 3100)  # this file's rows in the shared compat.scratch
PEOPLE = "SELECT id, name, ssn FROM compat.people ORDER BY id"
DENIED = "SELECT id, notes FROM compat.people WHERE id = $1"


def _rows(records: list[asyncpg.Record]) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in records]


async def _scratch(conn: asyncpg.Connection) -> list[tuple[Any, ...]]:
    q = "SELECT id, label FROM compat.scratch WHERE id BETWEEN $1 AND $2 ORDER BY id"
    return _rows(await conn.fetch(q, IDS[0], IDS[-1]))


@pytest.fixture
def dsn(compat_proxy: Any, pg: PgCluster) -> Iterator[str]:
    clear_scratch(pg, IDS)
    yield compat_proxy.dsn(user=COMPAT_USER)
    clear_scratch(pg, IDS)


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(dsn, timeout=10)
    yield c
    await c.close(timeout=10)


async def _refused(coro: Any) -> None:
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError) as info:
        await coro
    assert info.value.sqlstate == "42501"
    assert info.value.args[0].startswith(BLOCKED), info.value.args


async def test_statement_cache_masked_every_time(conn: asyncpg.Connection) -> None:
    for _ in range(5):
        assert _rows(await conn.fetch(PEOPLE)) == EXPECTED
        row = await conn.fetchrow("SELECT name, ssn FROM compat.people WHERE id = $1", 6)
        assert row is not None and dict(row) == {"name": "person 6", "ssn": MASKED}
        assert await conn.fetchval("SELECT ssn FROM compat.people WHERE id = $1", 2) == MASKED
    # Filters see the mask: the real value matches nothing.
    count = "SELECT count(*) FROM compat.people WHERE ssn = $1"
    assert await conn.fetchval(count, COMPAT_PEOPLE[0][2]) == 0
    assert await conn.fetchval(count, MASKED) == 10
    # Each query text was prepared once and reused from the cache: the four above and this one.
    names = await conn.fetch("SELECT name FROM pg_prepared_statements")
    assert len(names) == 5
    assert all(r["name"].startswith("__asyncpg_stmt_") for r in names)


async def test_no_statement_cache(dsn: str) -> None:
    c = await asyncpg.connect(dsn, statement_cache_size=0, timeout=10)
    try:
        for i in range(1, 4):
            assert tuple(await c.fetchrow(DENIED.replace("notes", "ssn"), i) or ()) == (i, MASKED)
            await _refused(c.fetch(DENIED, i))
        assert await c.fetchval("SELECT count(*) FROM pg_prepared_statements") == 0
    finally:
        await c.close(timeout=10)


async def test_denied_column_then_connection_goes_on(conn: asyncpg.Connection) -> None:
    for call in (
        lambda: conn.fetch("SELECT notes FROM compat.people"),
        lambda: conn.fetchrow(DENIED, 1),
        lambda: conn.fetchval("SELECT count(*) FROM compat.people WHERE notes IS NOT NULL"),
        lambda: conn.fetch("SELECT * FROM compat.people"),
        lambda: conn.execute("SELECT notes FROM compat.people"),  # simple protocol
        lambda: conn.prepare(DENIED),
    ):
        await _refused(call())
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT ssn FROM compat.people WHERE id = $1", 3) == MASKED
    # The same denied query again: no stale cache entry, refused again.
    await _refused(conn.fetchrow(DENIED, 1))
    # Inside a transaction: asyncpg rolls back on the exception; the connection goes on.
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
        async with conn.transaction():
            await conn.execute("INSERT INTO compat.scratch VALUES ($1, 'rolled back')", IDS[0])
            await conn.fetch(DENIED, 1)
    assert not conn.is_in_transaction()
    assert await _scratch(conn) == []
    # A refusal fails the transaction as any PostgreSQL error does: nothing in it is kept.
    with pytest.raises(asyncpg.exceptions.InFailedSQLTransactionError):
        async with conn.transaction():
            await conn.execute("INSERT INTO compat.scratch VALUES ($1, 'lost')", IDS[1])
            await _refused(conn.fetch(DENIED, 1))
            await conn.fetchval("SELECT count(*) FROM compat.people")
    assert not conn.is_in_transaction()
    assert await _scratch(conn) == []


async def test_prepared_statement(conn: asyncpg.Connection) -> None:
    stmt = await conn.prepare("SELECT id, name, ssn FROM compat.people WHERE id >= $1 ORDER BY id")
    assert [a.name for a in stmt.get_attributes()] == ["id", "name", "ssn"]
    assert [t.name for t in stmt.get_parameters()] == ["int4"]
    for start in range(1, 11):
        assert _rows(await stmt.fetch(start)) == EXPECTED[start - 1 :]
    assert tuple(await stmt.fetchrow(10) or ()) == EXPECTED[9]
    assert await stmt.fetchval(5, column=2) == MASKED
    many = await conn.prepare("INSERT INTO compat.scratch VALUES ($1, $2)")
    await many.executemany([(i, f"stmt {i}") for i in IDS[10:15]])
    assert await _scratch(conn) == [(i, f"stmt {i}") for i in IDS[10:15]]
    await _refused(conn.prepare(DENIED))
    # The earlier statement is still prepared and still masks.
    assert _rows(await stmt.fetch(9)) == EXPECTED[8:]


async def test_cursors_in_transaction(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        got = [tuple(r) async for r in conn.cursor(PEOPLE, prefetch=3)]
        assert got == EXPECTED
        cur = await conn.cursor(
            "SELECT id, name, ssn FROM compat.people WHERE id > $1 ORDER BY id", 2
        )
        assert _rows(await cur.fetch(3)) == EXPECTED[2:5]
        await cur.forward(2)
        assert tuple(await cur.fetchrow() or ()) == EXPECTED[7]
        assert _rows(await cur.fetch(10)) == EXPECTED[8:]
    # A refusal inside the transaction fails it, as any error does; a new one works.
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
        async with conn.transaction():
            await conn.cursor(DENIED, 1)
    assert not conn.is_in_transaction()
    async with conn.transaction():
        stmt = await conn.prepare(PEOPLE)
        assert [tuple(r) async for r in stmt.cursor(prefetch=4)] == EXPECTED


async def test_copy(conn: asyncpg.Connection) -> None:
    out = io.BytesIO()
    status = await conn.copy_from_query(  # the argument is inlined by asyncpg
        "SELECT id, name, ssn FROM compat.people WHERE id >= $1 ORDER BY id", 8, output=out
    )
    assert status == "COPY 3"
    assert out.getvalue().decode() == "".join(f"{i}\t{n}\t{m}\n" for i, n, m in EXPECTED[7:])

    out = io.BytesIO()
    status = await conn.copy_from_table(
        "people", schema_name="compat", columns=["id", "name", "ssn"], output=out
    )
    assert status == "COPY 10"
    lines = sorted(out.getvalue().decode().splitlines(), key=lambda s: int(s.split("\t")[0]))
    assert lines == [f"{i}\t{n}\t{m}" for i, n, m in EXPECTED]

    await _refused(conn.copy_from_query("SELECT notes FROM compat.people", output=io.BytesIO()))
    assert await conn.fetchval("SELECT ssn FROM compat.people WHERE id = 4") == MASKED

    status = await conn.copy_to_table(
        "scratch",
        schema_name="compat",
        columns=["id", "label"],
        source=io.BytesIO("".join(f"{i}\tfile {i}\n" for i in IDS[20:25]).encode()),
    )
    assert status == "COPY 5"
    assert await _scratch(conn) == [(i, f"file {i}") for i in IDS[20:25]]

    # asyncpg writes options as `(FORMAT csv)` without WITH; records go in binary.
    out = io.BytesIO()
    status = await conn.copy_from_query(
        "SELECT id, ssn FROM compat.people ORDER BY id", output=out, format="csv", header=True
    )
    assert status == "COPY 10"
    csv = [f"{i},{MASKED}" for i in range(1, 11)]
    assert out.getvalue().decode().splitlines() == ["id,ssn", *csv]
    records = [(i, f"record {i}") for i in IDS[30:33]]
    status = await conn.copy_records_to_table(
        "scratch", schema_name="compat", columns=["id", "label"], records=records
    )
    assert status == "COPY 3"
    assert [r for r in await _scratch(conn) if r[0] in IDS[30:33]] == records


async def test_listen_notify(conn: asyncpg.Connection, dsn: str, pg: PgCluster) -> None:
    got: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    def listener(_c: Any, _pid: int, channel: str, payload: str) -> None:
        got.put_nowait((channel, payload))

    await conn.add_listener("compat_chan", listener)
    other = await asyncpg.connect(dsn, timeout=10)  # through the proxy too
    try:
        await other.execute("NOTIFY compat_chan, 'via proxy'")
        await other.execute("SELECT pg_notify('compat_chan', $1)", "pg_notify")
    finally:
        await other.close(timeout=10)
    direct = await asyncpg.connect(pg.dsn(), timeout=10)
    try:
        await direct.execute("NOTIFY compat_chan, 'direct'")
    finally:
        await direct.close(timeout=10)
    received = [await asyncio.wait_for(got.get(), 10) for _ in range(3)]
    assert received == [
        ("compat_chan", "via proxy"),
        ("compat_chan", "pg_notify"),
        ("compat_chan", "direct"),
    ]
    # Notifications and queries interleave on the same connection.
    assert _rows(await conn.fetch(PEOPLE)) == EXPECTED
    await conn.remove_listener("compat_chan", listener)
    await conn.execute("NOTIFY compat_chan, 'unheard'")
    assert await conn.fetchval("SELECT 1") == 1
    assert got.empty()
