"""Detectors through the production hooks (policy engine + guard) in a real proxy.

Rule files, the upstream catalog (planner estimates after ANALYZE), the
policy engine's statement facts and the guard together: each detector fires
on its pattern with the documented error and audit record, and ordinary
analyst work stays quiet.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from proxy.catalog import load_catalog
from proxy.enforce import Enforcer
from proxy.guard import Guard, MemoryStore
from proxy.rules import load_rules

HEAD = """\
version: 1
defaults:
  mode: enforce
  unknown_tables: allow
  unparsed: allow
  statements: [all]
extraction:
"""


@pytest.fixture(scope="module")
async def people(pg: Any) -> AsyncIterator[str]:
    """A 150k-row table, analyzed so the planner (and the catalog) knows its size."""
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
        await conn.execute("DROP TABLE IF EXISTS guard_people")
        await conn.execute(
            "CREATE TABLE guard_people AS SELECT g AS id, 'person ' || g AS name,"
            " g % 4 AS region FROM generate_series(1, 150000) g"
        )
        await conn.execute("ANALYZE guard_people")
    yield "public.guard_people"
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
        await conn.execute("DROP TABLE IF EXISTS guard_people")


async def start(pg: Any, proxy_factory: Any, tmp_path: Path, entries: str) -> Any:
    path = tmp_path / "rules.yaml"
    path.write_text(HEAD + entries)
    rules = load_rules(path)
    catalog = await load_catalog(pg.dsn())
    hooks = Enforcer(rules, catalog, Guard(rules, MemoryStore(), catalog))
    return await proxy_factory(hooks=hooks, rules=path)


def records(path: Path) -> list[dict[str, Any]]:
    out = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    return [r for r in out if r.get("event") == "statement"]


async def refused(conn: psycopg.AsyncConnection[Any], sql: str) -> psycopg.Error | None:
    try:
        await (await conn.execute(sql)).fetchall()
    except psycopg.Error as e:
        return e
    return None


async def test_unfiltered_scan(pg: Any, proxy_factory: Any, tmp_path: Path, people: str) -> None:
    proxy = await start(
        pg, proxy_factory, tmp_path, "  - {id: big-scan, detect: unfiltered_scan, action: block}\n"
    )
    async with await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True) as conn:
        for ordinary in (
            "SELECT * FROM guard_people WHERE region = 1 AND id < 100",
            "SELECT * FROM guard_people LIMIT 100",
            "SELECT count(*), avg(id) FROM guard_people",
            "SELECT region, count(*) FROM guard_people GROUP BY region",
        ):
            assert await refused(conn, ordinary) is None, ordinary
        err = await refused(conn, "SELECT id, name FROM guard_people")
        assert err is not None and err.sqlstate == "42501"
        assert str(err).startswith("oversight: blocked by big-scan: unfiltered read of " + people)
    rec = [r for r in records(proxy.audit_log) if r["decision"] == "block"]
    assert len(rec) == 1 and rec[0]["detectors"][0]["detector"] == "unfiltered_scan"
    assert rec[0]["detectors"][0]["reltuples"] == 150000


async def test_paging_scan(pg: Any, proxy_factory: Any, tmp_path: Path, people: str) -> None:
    proxy = await start(
        pg, proxy_factory, tmp_path, "  - {id: scrape, detect: paging_scan, action: block}\n"
    )
    page = "SELECT id, name FROM guard_people ORDER BY id LIMIT 100 OFFSET {}"
    async with await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True) as conn:
        for _ in range(5):  # an analyst flipping between the first three pages
            for n in range(3):
                assert await refused(conn, page.format(n * 100)) is None
        for n in range(3, 19):
            assert await refused(conn, page.format(n * 100)) is None, n
        err = await refused(conn, page.format(1900))  # the 20th distinct page
        assert err is not None and err.sqlstate == "42501"
        assert "paging scan: 20 pages of the same query" in str(err)
        assert await refused(conn, "SELECT 1") is None


async def test_enumeration_logged(pg: Any, proxy_factory: Any, tmp_path: Path, people: str) -> None:
    proxy = await start(
        pg,
        proxy_factory,
        tmp_path,
        "  - {id: lookups, detect: enumeration, action: log, max_distinct: 10}\n",
    )
    async with await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True) as conn:
        for i in range(1, 13):
            assert await refused(conn, f"SELECT name FROM guard_people WHERE id = {i}") is None
    hits = [r.get("detectors") for r in records(proxy.audit_log) if "guard_people" in r["sql"]]
    assert [bool(h) for h in hits] == [False] * 9 + [True] * 3
    assert hits[-1][0] == {
        "rule": "lookups",
        "detector": "enumeration",
        "action": "log",
        "distinct": 12,
        "threshold": 10,
        "window_s": 3600.0,
        "fingerprint": hits[-1][0]["fingerprint"],
        "tables": ["public.guard_people"],
    }


async def test_copy_out(pg: Any, proxy_factory: Any, tmp_path: Path, people: str) -> None:
    proxy = await start(
        pg, proxy_factory, tmp_path, "  - {id: no-copy, detect: copy_out, action: block}\n"
    )
    async with await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True) as conn:
        for sql in (
            "COPY guard_people TO STDOUT",
            "COPY (SELECT name FROM guard_people WHERE id < 10) TO STDOUT (FORMAT csv)",
        ):
            with pytest.raises(psycopg.Error) as exc:
                async with conn.cursor().copy(sql) as copy:
                    async for _ in copy:
                        pass
            assert exc.value.sqlstate == "42501"
            assert str(exc.value).startswith("oversight: blocked by no-copy:")
        assert await refused(conn, "SELECT 1") is None


async def test_keyset_paging_and_limited_lookups(
    pg: Any, proxy_factory: Any, tmp_path: Path, people: str
) -> None:
    proxy = await start(
        pg,
        proxy_factory,
        tmp_path,
        "  - {id: scrape, detect: paging_scan, action: block, max_pages: 10}\n",
    )
    async with await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True) as conn:
        for person in range(1, 30):  # looking people up one at a time is not paging
            sql = f"SELECT name FROM guard_people WHERE id = {person} LIMIT 1"
            assert await refused(conn, sql) is None
        keyset = "SELECT id, name FROM guard_people WHERE id > {} ORDER BY id LIMIT 100"
        for n in range(9):
            assert await refused(conn, keyset.format(n * 100)) is None
        err = await refused(conn, keyset.format(900))
        assert err is not None and err.sqlstate == "42501" and "10 pages" in str(err)
