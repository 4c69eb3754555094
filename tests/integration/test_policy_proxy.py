"""The policy engine end to end: real clients through a proxy with the production hooks.

Two analysts (the suite's scramuser and md5user roles) with different region
attributes see different rows and masked values; a denied column is refused
with 42501 and the session goes on; the same through the extended protocol
(asyncpg prepares everything, psycopg prepared statements).
"""

from __future__ import annotations

import asyncio
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

SCHEMA = "policy_e2e"
RULES = f"""\
version: 1
defaults:
  statements: [select, explain, show, set, begin, commit, rollback, declare, fetch, close,
               prepare, execute, deallocate, discard]
users:
  scramuser: {{groups: [analysts], attributes: {{region: north}}}}
  md5user: {{groups: [analysts], attributes: {{region: south}}}}
rules:
  - id: people-by-region
    match: {{groups: [analysts]}}
    table: {SCHEMA}.people
    row_filter: "region = :region"
    columns: {{ssn: redact, email: partial}}
  - id: no-notes
    match: {{groups: [analysts]}}
    table: {SCHEMA}.cases
    columns: {{notes: deny}}
"""


@pytest.fixture(scope="module")
def e2e_schema(pg: PgCluster) -> Iterator[str]:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
        conn.execute(
            f"CREATE TABLE {SCHEMA}.people (id int PRIMARY KEY, name text, region text, "
            "ssn text, email text)"
        )
        conn.execute(f"CREATE TABLE {SCHEMA}.cases (id int, person_id int, notes text)")
        for i in range(1, 13):
            region = ["north", "south", "east"][i % 3]
            conn.execute(
                f"INSERT INTO {SCHEMA}.people VALUES (%s, %s, %s, %s, %s)",
                (i, f"p{i}", region, f"ssn-{i:04d}", f"user{i}@example.org"),
            )
            conn.execute(f"INSERT INTO {SCHEMA}.cases VALUES (%s, %s, 'secret')", (i, i))
        for role in pg.roles:
            conn.execute(f'GRANT USAGE ON SCHEMA {SCHEMA} TO "{role}"')
            conn.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA {SCHEMA} TO "{role}"')
    yield SCHEMA
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


@pytest.fixture
async def proxy(pg: PgCluster, e2e_schema: str, proxy_factory: Any, tmp_path: Path) -> Any:
    rules_file = tmp_path / "policy.yaml"
    rules_file.write_text(RULES)
    rules = load_rules(rules_file)
    catalog = await load_catalog(pg.dsn())
    return await proxy_factory(hooks=Enforcer(rules, catalog, None), rules=rules_file)


async def test_two_analysts_see_different_rows(proxy: Any) -> None:
    query = f"SELECT id, region, ssn, email FROM {SCHEMA}.people ORDER BY id"
    north = await asyncpg.connect(proxy.dsn(user="scramuser"))
    south = await asyncpg.connect(proxy.dsn(user="md5user"))
    try:
        n = await north.fetch(query)
        s = await south.fetch(query)
    finally:
        await north.close()
        await south.close()
    assert [r["id"] for r in n] == [3, 6, 9, 12]
    assert {r["region"] for r in n} == {"north"}
    assert [r["id"] for r in s] == [1, 4, 7, 10]
    assert {r["ssn"] for r in n + s} == {"****"}
    assert n[0]["email"] == "***.org"


async def test_denied_column_and_session_goes_on(proxy: Any, run_sync: Any) -> None:
    def scenario() -> tuple[str, int]:
        with psycopg.connect(proxy.dsn(user="scramuser"), autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as ei:
                conn.execute(f"SELECT notes FROM {SCHEMA}.cases")
            row = conn.execute(f"SELECT count(*) FROM {SCHEMA}.cases").fetchone()
            assert row is not None
            return str(ei.value), int(row[0])

    message, count = await run_sync(scenario)
    assert message.startswith("oversight: blocked by no-notes")
    assert count == 12


async def test_extended_protocol_psycopg_prepared(proxy: Any, run_sync: Any) -> None:
    def scenario() -> list[Any]:
        with psycopg.connect(proxy.dsn(user="md5user"), autocommit=True) as conn:
            out = []
            for i in (1, 2, 4):  # id 2 is in the east: filtered out
                cur = conn.execute(
                    f"SELECT name, ssn FROM {SCHEMA}.people WHERE id = %s", (i,), prepare=True
                )
                out.append(cur.fetchall())
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT c.* FROM {SCHEMA}.cases c WHERE id = %s", (1,))
            out.append(conn.execute("SELECT 1").fetchall())
            return out

    assert await run_sync(scenario) == [[("p1", "****")], [], [("p4", "****")], [(1,)]]


async def test_extended_protocol_asyncpg_denied(proxy: Any) -> None:
    conn = await asyncpg.connect(proxy.dsn(user="scramuser"))
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch(f"SELECT notes FROM {SCHEMA}.cases WHERE id = $1", 3)
        rows = await conn.fetch(f"SELECT id FROM {SCHEMA}.people WHERE id = ANY($1)", [1, 3])
        assert [r["id"] for r in rows] == [3]
        await asyncio.sleep(0)
    finally:
        await conn.close()


async def test_statements_prepared_before_a_reload_follow_the_new_rules(
    pg: PgCluster, e2e_schema: str, proxy_factory: Any, tmp_path: Path
) -> None:
    """A tightened rule reaches a driver's cached prepared statements at their next run."""
    rules_file = tmp_path / "policy.yaml"
    rules_file.write_text(RULES)
    catalog = await load_catalog(pg.dsn())
    hooks = Enforcer(load_rules(rules_file), catalog, None)
    proxy = await proxy_factory(hooks=hooks, rules=rules_file)
    lookup = f"SELECT name, email FROM {SCHEMA}.people WHERE id = $1"
    conn = await asyncpg.connect(proxy.dsn(user="scramuser"))
    prepared = await conn.prepare(lookup)
    try:
        assert tuple(await conn.fetchrow(lookup, 3) or ()) == ("p3", "***.org")
        hooks.reload(load_rules_text(tmp_path, RULES.replace("email: partial", "email: redact")))
        # asyncpg's statement cache: told the plan is stale (0A000), it prepares again.
        assert tuple(await conn.fetchrow(lookup, 3) or ()) == ("p3", "****")
        # A statement the application holds itself: the error reaches it once.
        with pytest.raises(asyncpg.exceptions.InvalidCachedStatementError) as exc:
            await prepared.fetchrow(3)
        assert exc.value.sqlstate == "0A000" and "rules changed" in str(exc.value.detail)
        assert tuple(await (await conn.prepare(lookup)).fetchrow(3) or ()) == ("p3", "****")
        hooks.reload(load_rules_text(tmp_path, RULES.replace("email: partial", "email: deny")))
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchrow(lookup, 3)
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


def load_rules_text(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "reloaded.yaml"
    path.write_text(text)
    return load_rules(path)
