"""Detectors see the values bound to $n in the extended protocol, not only literals.

psycopg, pgjdbc and asyncpg send lookups as Parse once and Bind/Execute per
value; an enumeration detector that looked only at SQL text would never see
person after person being looked up.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest
from pgcluster import PgCluster

from proxy.catalog import load_catalog
from proxy.enforce import Enforcer
from proxy.guard import Guard, MemoryStore
from proxy.rules import load_rules

RULES = """\
version: 1
users:
  scramuser: {groups: [analysts]}
extraction:
  - id: no-enumeration
    match: {groups: [analysts]}
    detect: enumeration
    max_distinct: 5
    action: block
"""


@pytest.fixture(scope="module")
def lookup_table(pg: PgCluster) -> Iterator[None]:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS enum_people")
        conn.execute("CREATE TABLE enum_people (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO enum_people SELECT g, 'p' || g FROM generate_series(1, 50) g")
        conn.execute("GRANT SELECT ON enum_people TO scramuser")
    yield
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS enum_people")


@pytest.fixture
async def proxy(pg: PgCluster, lookup_table: None, proxy_factory: Any, tmp_path: Path) -> Any:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    rules = load_rules(path)
    catalog = await load_catalog(pg.dsn())
    return await proxy_factory(hooks=Enforcer(rules, catalog, Guard(rules, MemoryStore(), catalog)))


@pytest.mark.parametrize("prepare", [False, True])
async def test_psycopg_lookups_by_parameter_are_noticed(proxy: Any, prepare: bool) -> None:
    async with await psycopg.AsyncConnection.connect(proxy.dsn("scramuser")) as conn:
        await conn.set_autocommit(True)
        seen = []
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no-enumeration"):
            for i in range(1, 20):
                cur = await conn.execute(
                    "SELECT name FROM enum_people WHERE id = %s", [i], prepare=prepare
                )
                seen.append(await cur.fetchone())
        assert 3 <= len(seen) < 10  # some lookups pass, the run is stopped early
        cur = await conn.execute("SELECT count(*) FROM enum_people WHERE id < 3")
        assert await cur.fetchone() == (2,)  # the session goes on


async def test_asyncpg_cached_statement_lookups_are_noticed(proxy: Any) -> None:
    conn = await asyncpg.connect(proxy.dsn("scramuser"), timeout=10)
    try:
        with pytest.raises(asyncpg.PostgresError) as e:
            for i in range(1, 20):
                await conn.fetchval("SELECT name FROM enum_people WHERE id = $1", i)
        assert e.value.sqlstate == "42501"
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()
    await proxy.stop()
    records = proxy.audit_log.read_text()
    assert '"decision":"block"' in records and "no-enumeration" in records
