"""Through the proxy: a governed point lookup under a row filter uses the index.

The masking subquery's OFFSET 0 fence keeps the query's own conditions above
the row filter; the engine copies the provably safe ones below it
(policy/pushdown.py), so PostgreSQL can use an index on them. Asserted on
the plan's text, never on timing.
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
from proxy.rules import load_rules

SCHEMA = "pushdown_e2e"
RULES = f"""\
version: 1
defaults:
  statements: [select, explain, show, set, begin, commit, rollback]
users:
  scramuser: {{groups: [analysts], attributes: {{region: north}}}}
rules:
  - id: accounts-by-region
    match: {{groups: [analysts]}}
    table: {SCHEMA}.accounts
    row_filter: "region = :region"
    columns: {{secret: redact}}
"""


@pytest.fixture(scope="module")
def pd_schema(pg: PgCluster) -> Iterator[str]:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
        conn.execute(
            f"CREATE TABLE {SCHEMA}.accounts (id int PRIMARY KEY, region text, "
            "balance int, secret text)"
        )
        conn.execute(
            f"INSERT INTO {SCHEMA}.accounts SELECT i, (ARRAY['north', 'south'])[i % 2 + 1], "
            "i * 10, 'secret-' || i FROM generate_series(1, 50000) i"
        )
        conn.execute(f"ANALYZE {SCHEMA}.accounts")
        for role in pg.roles:
            conn.execute(f'GRANT USAGE ON SCHEMA {SCHEMA} TO "{role}"')
            conn.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA {SCHEMA} TO "{role}"')
    yield SCHEMA
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


@pytest.fixture
async def proxy(pg: PgCluster, pd_schema: str, proxy_factory: Any, tmp_path: Path) -> Any:
    rules_file = tmp_path / "policy.yaml"
    rules_file.write_text(RULES)
    catalog = await load_catalog(pg.dsn())
    return await proxy_factory(
        hooks=Enforcer(load_rules(rules_file), catalog, None), rules=rules_file
    )


async def _plan(conn: asyncpg.Connection, sql: str) -> str:
    return "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql))


async def test_point_lookup_uses_the_index(proxy: Any) -> None:
    conn = await asyncpg.connect(proxy.dsn(user="scramuser"))
    try:
        plan = await _plan(conn, f"SELECT balance FROM {SCHEMA}.accounts WHERE id = 5")
        assert "Index Scan using accounts_pkey" in plan, plan
        assert "Seq Scan" not in plan, plan
        # The condition not copied (on a masked column) leaves the fence as it was.
        fenced = await _plan(conn, f"SELECT balance FROM {SCHEMA}.accounts WHERE secret = 'x'")
        assert "Seq Scan" in fenced, fenced
        # Same answers: a visible row (even ids are north), a hidden one, a masked value.
        visible = await conn.fetch(f"SELECT id, secret FROM {SCHEMA}.accounts WHERE id = 4")
        hidden = await conn.fetch(f"SELECT id FROM {SCHEMA}.accounts WHERE id = 5")
        ranged = await conn.fetchval(
            f"SELECT count(*) FROM {SCHEMA}.accounts "
            "WHERE id BETWEEN 1 AND 100 AND region = 'north'"
        )
    finally:
        await conn.close()
    assert [tuple(r) for r in visible] == [(4, "****")]
    assert hidden == []
    assert ranged == 50


async def test_hidden_rows_raise_no_error_beside_a_copied_condition(proxy: Any) -> None:
    """South rows (odd ids) would divide by zero; only north rows are ever evaluated."""
    conn = await asyncpg.connect(proxy.dsn(user="scramuser"))
    try:
        n = await conn.fetchval(
            f"SELECT count(*) FROM {SCHEMA}.accounts "
            "WHERE id <= 4 AND 1 / (CASE WHEN region = 'south' THEN 0 ELSE 1 END) = 1"
        )
    finally:
        await conn.close()
    assert n == 2
