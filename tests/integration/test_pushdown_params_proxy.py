"""Through the proxy: governed prepared lookups by a bound parameter use the index.

`col = $1` is copied below the masking subquery's fence when the Parse's type
for $1 (unspecified, or of the column's family) makes it a leakproof
operator (policy/pushparams.py). Asserted on the plan's text, never on
timing; and on what must not change: the answers (same as a parameter type
that is not copied), the parameter types PostgreSQL infers (what Describe
reports, compared with PostgreSQL itself), and that nothing but the copied
comparison ever runs on a hidden row.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest
from pgcluster import PgCluster

from proxy.catalog import load_catalog
from proxy.enforce import Enforcer
from proxy.rules import load_rules

SCHEMA = "pushparams_e2e"
T = f"{SCHEMA}.accounts"
RULES = f"""\
version: 1
defaults:
  statements: [select, explain, show, set, begin, commit, rollback]
users:
  scramuser: {{groups: [analysts], attributes: {{region: north}}}}
rules:
  - id: accounts-by-region
    match: {{groups: [analysts]}}
    table: {T}
    row_filter: "region = :region"
    columns: {{secret: redact}}
"""
N = 20000


@pytest.fixture(scope="module")
def pp_schema(pg: PgCluster) -> Iterator[str]:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
        conn.execute(
            f"CREATE TABLE {T} (id bigint PRIMARY KEY, code varchar(12) UNIQUE, "
            "region text, balance int, secret text)"
        )
        # Even ids are north (visible), odd ones south (hidden).
        conn.execute(
            f"INSERT INTO {T} SELECT i, 'c' || i, (ARRAY['north', 'south'])[i % 2 + 1], "
            f"i * 10, 'secret-' || i FROM generate_series(1, {N}) i"
        )
        conn.execute(f"ANALYZE {T}")
        for role in pg.roles:
            conn.execute(f'GRANT USAGE ON SCHEMA {SCHEMA} TO "{role}"')
            conn.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA {SCHEMA} TO "{role}"')
    yield SCHEMA
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


@pytest.fixture
async def proxy(pg: PgCluster, pp_schema: str, proxy_factory: Any, tmp_path: Path) -> Any:
    rules_file = tmp_path / "policy.yaml"
    rules_file.write_text(RULES)
    catalog = await load_catalog(pg.dsn())
    return await proxy_factory(
        hooks=Enforcer(load_rules(rules_file), catalog, None), rules=rules_file
    )


async def test_asyncpg_prepared_lookup_uses_the_index(proxy: Any) -> None:
    """asyncpg sends Parse with no types (unspecified): $1 takes id's type."""
    conn = await asyncpg.connect(proxy.dsn(user="scramuser"))
    try:
        stmt = await conn.prepare(f"SELECT id, balance, secret FROM {T} WHERE id = $1")
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + stmt.get_query(), 4))
        visible = [tuple(r) for r in await stmt.fetch(4)]
        hidden = await stmt.fetch(5)
        by_code = await conn.fetch(f"EXPLAIN SELECT id FROM {T} WHERE code = $1", "c4")
    finally:
        await conn.close()
    assert "Index Scan using accounts_pkey" in plan, plan
    assert "Seq Scan" not in plan, plan
    assert visible == [(4, 40, "****")]
    assert hidden == []
    assert "Index Scan using accounts_code_key" in "\n".join(r[0] for r in by_code)


async def test_sql_prepare_generic_plan_uses_the_index(proxy: Any) -> None:
    """PREPARE's own type list; the generic plan (what a prepared statement runs after
    its fifth execution) still has the copied `id = $1` as its index condition."""
    conn = await asyncpg.connect(proxy.dsn(user="scramuser"))
    try:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE q(bigint) AS SELECT balance FROM {T} WHERE id = $1")
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN EXECUTE q(4)"))
        await conn.execute(f"PREPARE n(numeric) AS SELECT balance FROM {T} WHERE id = $1")
        fenced = "\n".join(r[0] for r in await conn.fetch("EXPLAIN EXECUTE n(4)"))
    finally:
        await conn.close()
    assert "Index Scan using accounts_pkey" in plan and "$1" in plan, plan
    assert "Seq Scan" in fenced, fenced  # numeric: not copied


async def test_psycopg_typed_parameters_push_only_their_family(proxy: Any) -> None:
    """psycopg declares int2/int4/int8 for Python ints (copied) and numeric for a
    Decimal (not copied): the answers are the same either way."""
    sql = f"SELECT id, balance, secret FROM {T} WHERE id = %s"
    async with await psycopg.AsyncConnection.connect(proxy.dsn(user="scramuser")) as conn:
        plans = {}
        for label, value in (("int", 4), ("bigint", 4_000_000_000), ("numeric", Decimal(4))):
            cur = await conn.execute("EXPLAIN " + sql, (value,))
            plans[label] = "\n".join(r[0] for r in await cur.fetchall())
        answers = {}
        for i in (1, 2, 3, 4, 9_998, N, N + 1):
            pushed = await (await conn.execute(sql, (i,), prepare=True)).fetchall()
            fenced = await (await conn.execute(sql, (Decimal(i),), prepare=True)).fetchall()
            assert pushed == fenced, i
            answers[i] = pushed
    assert "Index Scan using accounts_pkey" in plans["int"], plans["int"]
    assert "Index Scan using accounts_pkey" in plans["bigint"], plans["bigint"]
    assert "Seq Scan" in plans["numeric"], plans["numeric"]
    assert answers[2] == [(2, 20, "****")] and answers[1] == answers[3] == []
    assert answers[N] == [(N, N * 10, "****")] and answers[N + 1] == []


@pytest.mark.parametrize(
    "where",
    [
        "id = $1",
        "$1 = id",
        "code = $1",
        "id IN ($1, $2)",
        "id BETWEEN $1 AND $2",
        "id = $1::int4",
        "code = $1 AND id < $2",
        "id = $1 AND balance < $1",  # not copied: $1 used twice
        "code IN ($1, $2)",  # not copied: varchar IN infers varchar
    ],
)
async def test_inferred_parameter_types_are_postgresqls(
    pg: PgCluster, proxy: Any, where: str
) -> None:
    """What Describe reports through the proxy is what PostgreSQL infers for the
    statement as written: the copy never changes a parameter's type."""
    sql = f"SELECT id FROM {T} WHERE {where}"
    types = []
    for dsn in (proxy.dsn(user="scramuser"), pg.dsn()):
        conn = await asyncpg.connect(dsn)
        try:
            stmt = await conn.prepare(sql)
            types.append([t.name for t in stmt.get_parameters()])
        finally:
            await conn.close()
    assert types[0] == types[1]


async def test_hidden_rows_meet_only_the_copied_comparison(proxy: Any) -> None:
    """South rows (odd ids) would divide by zero: the division stays above the fence,
    while `id <= $1` runs below it on every row, hidden ones included."""
    conn = await asyncpg.connect(proxy.dsn(user="scramuser"))
    try:
        sql = (
            f"SELECT count(*) FROM {T} WHERE id <= $1 "
            "AND 1 / (CASE WHEN region = $2 THEN 0 ELSE 1 END) = 1"
        )
        n = await conn.fetchval(sql, 40, "south")
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, 40, "south"))
    finally:
        await conn.close()
    assert n == 20
    below = _below_fence(plan)
    assert "Index Cond: (id <= '40'::bigint)" in below, plan
    assert "CASE" not in below and "/" not in below, plan


async def test_a_parameter_on_a_masked_column_is_never_copied(proxy: Any) -> None:
    """`secret` reads as '****': its raw value is never compared, above or below."""
    conn = await asyncpg.connect(proxy.dsn(user="scramuser"))
    try:
        sql = f"SELECT count(*) FROM {T} WHERE id <= $1 AND secret = $2"
        raw = await conn.fetchval(sql, 10, "secret-4")
        masked = await conn.fetchval(sql, 10, "****")
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, 10, "x"))
    finally:
        await conn.close()
    assert raw == 0
    assert masked == 5
    below = _below_fence(plan)
    assert "Index Cond: (id <= '10'::bigint)" in below, plan
    assert "secret" not in below, plan


def _below_fence(plan: str) -> str:
    """The plan of the scan of the table itself, inside the masking subquery."""
    lines = plan.splitlines()
    start = next(i for i, line in enumerate(lines) if "on accounts accounts_1" in line)
    return "\n".join(lines[start:])
