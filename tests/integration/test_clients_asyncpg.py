"""asyncpg through the proxy.

asyncpg prepares every query with Parse + Describe + Flush and no Sync,
names statements `__asyncpg_stmt_N__` while its cache is on, runs cursors
as portals with Execute row limits, and introspects unknown type OIDs from
pg_type (PROTOCOL.md, "What clients send").
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import psycopg
import pytest
from pgcluster import PgCluster

TABLE = "apg_items"


@pytest.fixture(scope="module")
def apg_schema(pg: PgCluster) -> Iterator[str]:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute("DROP TYPE IF EXISTS apg_mood, apg_point")
        conn.execute("CREATE TYPE apg_mood AS ENUM ('sad', 'ok', 'happy')")
        conn.execute("CREATE TYPE apg_point AS (x int, label text)")
        conn.execute(
            f"CREATE TABLE {TABLE} (id int PRIMARY KEY, name text, mood apg_mood, pt apg_point)"
        )
    yield TABLE
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute("DROP TYPE IF EXISTS apg_mood, apg_point")


@pytest.fixture
async def conn(endpoint: Any, apg_schema: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(endpoint.dsn(), timeout=10)
    await c.execute(f"TRUNCATE {TABLE}")
    yield c
    await c.close(timeout=10)


async def test_fetch_with_params(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch("SELECT g, $1::text || g FROM generate_series(1, $2::int) g", "n", 3)
    assert [tuple(r) for r in rows] == [(1, "n1"), (2, "n2"), (3, "n3")]
    row = await conn.fetchrow("SELECT $1::int + 1 AS a, $2::text AS b", 41, "x")
    assert row is not None and dict(row) == {"a": 42, "b": "x"}
    assert await conn.fetchval("SELECT NULL::int") is None
    assert await conn.fetchrow("SELECT 1 WHERE false") is None


async def test_prepared_statement(conn: asyncpg.Connection) -> None:
    stmt = await conn.prepare("SELECT $1::int * 2 AS doubled, $2::text AS label")
    assert [a.name for a in stmt.get_attributes()] == ["doubled", "label"]
    assert [t.name for t in stmt.get_parameters()] == ["int4", "text"]
    assert await stmt.fetchval(21, "a") == 42
    assert tuple(await stmt.fetchrow(5, "b") or ()) == (10, "b")
    assert [tuple(r) for r in await stmt.fetch(1, "c")] == [(2, "c")]


async def test_statement_cache_reuses_named_statement(conn: asyncpg.Connection) -> None:
    query = "SELECT $1::int + 100"
    assert await conn.fetchval(query, 1) == 101
    assert await conn.fetchval(query, 2) == 102
    names = await conn.fetch("SELECT name FROM pg_prepared_statements WHERE statement = $1", query)
    assert len(names) == 1
    assert names[0]["name"].startswith("__asyncpg_stmt_")


async def test_no_statement_cache(endpoint: Any, apg_schema: str) -> None:
    c = await asyncpg.connect(endpoint.dsn(), statement_cache_size=0)
    try:
        for i in range(3):
            assert await c.fetchval("SELECT $1::int * 3", i) == i * 3
        assert await c.fetchval("SELECT count(*) FROM pg_prepared_statements") == 0
    finally:
        await c.close()


async def test_cursor_in_transaction(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        total = 0
        count = 0
        async for r in conn.cursor("SELECT g FROM generate_series(1, 1000) g", prefetch=64):
            total += r["g"]
            count += 1
        assert (count, total) == (1000, 500500)

        cur = await conn.cursor("SELECT g FROM generate_series(1, 100) g WHERE g > $1", 10)
        assert [r[0] for r in await cur.fetch(3)] == [11, 12, 13]
        await cur.forward(5)
        row = await cur.fetchrow()
        assert row is not None and row[0] == 19


async def test_executemany(conn: asyncpg.Connection) -> None:
    await conn.executemany(
        f"INSERT INTO {TABLE} (id, name) VALUES ($1, $2)", [(i, f"n{i}") for i in range(500)]
    )
    assert tuple(await conn.fetchrow(f"SELECT count(*), max(id) FROM {TABLE}") or ()) == (500, 499)


async def test_copy(conn: asyncpg.Connection) -> None:
    status = await conn.copy_records_to_table(
        TABLE, records=[(i, f"r{i}") for i in range(300)], columns=["id", "name"]
    )
    assert status == "COPY 300"
    status = await conn.copy_to_table(
        TABLE, source=io.BytesIO(b"1000\tfrom-file\n1001\tsecond\n"), columns=["id", "name"]
    )
    assert status == "COPY 2"
    out = io.BytesIO()
    status = await conn.copy_from_query(
        f"SELECT id, name FROM {TABLE} WHERE id >= $1 ORDER BY id", 298, output=out, format="csv"
    )
    assert status == "COPY 4"
    assert out.getvalue() == b"298,r298\n299,r299\n1000,from-file\n1001,second\n"
    out = io.BytesIO()
    await conn.copy_from_table(TABLE, output=out, columns=["id"])
    assert len(out.getvalue().splitlines()) == 302


async def test_type_introspection(conn: asyncpg.Connection) -> None:
    await conn.execute(
        f"INSERT INTO {TABLE} (id, name, mood, pt) VALUES (1, 'a', 'happy', ROW(3, 'three'))"
    )
    row = await conn.fetchrow(f"SELECT mood, pt FROM {TABLE} WHERE id = 1")
    assert row is not None
    assert row["mood"] == "happy"
    assert tuple(row["pt"]) == (3, "three")
    # Enum and composite as parameters: asyncpg must introspect both OIDs.
    await conn.execute(f"INSERT INTO {TABLE} VALUES ($1, $2, $3, $4)", 2, "b", "sad", (7, "seven"))
    got = await conn.fetch(f"SELECT id, mood FROM {TABLE} WHERE mood < $1::apg_mood", "ok")
    assert [tuple(r) for r in got] == [(2, "sad")]


async def test_errors_keep_session(conn: asyncpg.Connection) -> None:
    await conn.execute(f"INSERT INTO {TABLE} (id) VALUES (1)")
    with pytest.raises(asyncpg.UniqueViolationError) as info:
        await conn.execute(f"INSERT INTO {TABLE} (id) VALUES (1)")
    assert info.value.sqlstate == "23505"
    with pytest.raises(asyncpg.UndefinedTableError):
        await conn.fetch("SELECT * FROM apg_missing_table")
    with pytest.raises(asyncpg.DivisionByZeroError):
        async with conn.transaction():
            await conn.execute(f"INSERT INTO {TABLE} (id) VALUES (2)")
            await conn.fetchval("SELECT 1/0")
    assert not conn.is_in_transaction()
    assert await conn.fetchval(f"SELECT count(*) FROM {TABLE}") == 1


async def test_cancel_by_timeout(conn: asyncpg.Connection) -> None:
    # asyncpg cancels the query with a CancelRequest when the timeout fires.
    with pytest.raises(TimeoutError):
        await conn.fetchval("SELECT pg_sleep(20)", timeout=0.5)
    assert await conn.fetchval("SELECT 'alive'") == "alive"
