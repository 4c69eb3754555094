"""pg8000 (pure Python; native and DB-API interfaces) through the proxy.

pg8000 sends every statement as unnamed Parse/Bind/Describe/Execute + Sync
(named statements for `prepare`), authenticates with scramp, and does COPY
through file-like `stream` objects.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pg8000.dbapi
import pg8000.native
import psycopg
import pytest
from pgcluster import PgCluster

TABLE = "p8k_items"


@pytest.fixture(scope="module")
def p8k_table(pg: PgCluster) -> Iterator[str]:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(f"CREATE TABLE {TABLE} (id int PRIMARY KEY, name text, price numeric)")
    yield TABLE
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")


def _native(params: dict[str, Any]) -> dict[str, Any]:
    con = pg8000.native.Connection(**params, timeout=20)
    try:
        out: dict[str, Any] = {}
        con.run(f"TRUNCATE {TABLE}")
        out["select"] = con.run(
            "SELECT :a::int + 1, :b::text, :d::date, :n::numeric",
            a=41,
            b="héllo",
            d=dt.date(2024, 3, 1),
            n=Decimal("1.10"),
        )
        out["columns"] = [c["name"] for c in con.columns or []]
        ps = con.prepare(f"INSERT INTO {TABLE} VALUES (:id, :name, :price)")
        for i in range(5):
            ps.run(id=i, name=f"n{i}", price=Decimal(i) / 4)
        ps.close()
        out["count"] = con.run(f"SELECT count(*), sum(price) FROM {TABLE}")
        try:
            con.run(f"INSERT INTO {TABLE} VALUES (0, 'dup', 0)")
        except pg8000.native.DatabaseError as e:
            out["dup"] = e.args[0]["C"]
        out["after_error"] = con.run("SELECT 'fine'")
        buf = io.StringIO()
        con.run(f"COPY (SELECT id, name FROM {TABLE} ORDER BY id LIMIT 2) TO STDOUT", stream=buf)
        out["copy_out"] = buf.getvalue()
        con.run(
            f"COPY {TABLE} (id, name) FROM STDIN WITH (FORMAT csv)",
            stream=io.StringIO("100,a\n101,b\n"),
        )
        out["copy_in"] = con.row_count
        out["multi"] = con.run("SELECT 1; SELECT 2")
        return out
    finally:
        con.close()


async def test_native(endpoint: Any, run_sync: Any, p8k_table: str) -> None:
    out = await run_sync(_native, endpoint.params())
    assert out == {
        "select": [[42, "héllo", dt.date(2024, 3, 1), Decimal("1.10")]],
        "columns": ["?column?", "text", "date", "numeric"],
        "count": [[5, Decimal("2.50")]],
        "dup": "23505",
        "after_error": [["fine"]],
        "copy_out": "0\tn0\n1\tn1\n",
        "copy_in": 2,
        "multi": [[1], [2]],
    }


def _dbapi(params: dict[str, Any]) -> dict[str, Any]:
    con = pg8000.dbapi.connect(**params, timeout=20)
    try:
        out: dict[str, Any] = {}
        cur = con.cursor()
        cur.execute(f"DELETE FROM {TABLE}")
        cur.executemany(
            f"INSERT INTO {TABLE} (id, name) VALUES (%s, %s)", [(i, f"d{i}") for i in range(10)]
        )
        con.commit()
        cur.execute(f"INSERT INTO {TABLE} (id, name) VALUES (%s, %s)", (99, "rolled back"))
        con.rollback()
        cur.execute(f"SELECT id, name FROM {TABLE} WHERE id < %s ORDER BY id", (3,))
        out["rows"] = cur.fetchall()
        out["description"] = [d[0] for d in cur.description or []]
        cur.execute(f"SELECT count(*) FROM {TABLE}")
        out["count"] = cur.fetchone()
        try:
            cur.execute("SELECT 1/0")
        except pg8000.dbapi.DatabaseError as e:
            out["error"] = e.args[0]["C"]
        con.rollback()
        cur.execute("SELECT %s::text", ("after",))
        out["after"] = cur.fetchone()
        con.commit()
        return out
    finally:
        con.close()


async def test_dbapi(endpoint: Any, run_sync: Any, p8k_table: str) -> None:
    out = await run_sync(_dbapi, endpoint.params())
    assert out == {
        "rows": ([0, "d0"], [1, "d1"], [2, "d2"]),
        "description": ["id", "name"],
        "count": [10],
        "error": "22012",
        "after": ["after"],
    }


def _notify(params: dict[str, Any], direct: dict[str, Any]) -> list[Any]:
    con = pg8000.native.Connection(**params, timeout=20)
    try:
        con.run("LISTEN p8k_chan")
        other = pg8000.native.Connection(**direct, timeout=20)
        other.run("NOTIFY p8k_chan, 'ping'")
        other.close()
        con.run("SELECT 1")  # notifications arrive with the next round trip
        return [(channel, payload) for _pid, channel, payload in con.notifications]
    finally:
        con.close()


async def test_notifications(endpoint: Any, pg: PgCluster, run_sync: Any) -> None:
    assert await run_sync(_notify, endpoint.params(), pg.params()) == [("p8k_chan", "ping")]
