"""Issue #12 (policy soundness) against the real PostgreSQL, through the proxy.

The exploits as reported: query_to_xml and table_to_xml as EXECUTE arguments,
CALL arguments, a function and a table created after the catalog snapshot; the
needless refusals (CREATE ROLE ... PASSWORD E'...', CREATE TYPE, CREATE DOMAIN
for a user no rule applies to, 42501 instead of PostgreSQL's 42601 for two
statements in one Parse); and writes held to the row filter.

Users: scramuser is an analyst (north, ssn redacted), md5user a clerk who may
write north rows, the suite's superuser is governed by no rule.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import psycopg
import pytest
from pgcluster import PgCluster

from proxy.catalog import load_catalog
from proxy.enforce import Enforcer
from proxy.rules import load_rules

SCHEMA = "soundness"
RULES = f"""\
version: 1
defaults:
  statements: [all]
users:
  scramuser: {{groups: [analysts], attributes: {{region: north}}}}
  md5user: {{groups: [clerks], attributes: {{region: north}}}}
rules:
  - id: people-by-region
    match: {{groups: [analysts]}}
    table: {SCHEMA}.people
    row_filter: "region = :region"
    columns: {{ssn: redact}}
  - id: clerk-people
    match: {{groups: [clerks]}}
    table: {SCHEMA}.people
    row_filter: "region = :region"
    columns: {{ssn: redact}}
    statements: [insert, update, delete]
  - id: internal-denied
    match: {{groups: [analysts, clerks]}}
    table: {SCHEMA}_internal.*
    access: deny
functions:
  - id: archive
    match: {{groups: [analysts]}}
    allow: [{SCHEMA}.archive]
"""
NORTH = [3, 6, 9, 12]


@pytest.fixture(scope="module")
def soundness_schema(pg: PgCluster) -> Iterator[str]:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        for s in (SCHEMA, f"{SCHEMA}_internal"):
            conn.execute(f"DROP SCHEMA IF EXISTS {s} CASCADE")
            conn.execute(f"CREATE SCHEMA {s}")
        conn.execute(
            f"CREATE TABLE {SCHEMA}.people (id int PRIMARY KEY, name text, region text, ssn text)"
        )
        conn.execute(f"CREATE TABLE {SCHEMA}.sink (v text)")
        conn.execute(f"CREATE TABLE {SCHEMA}_internal.secrets (id int, value text)")
        conn.execute(f"INSERT INTO {SCHEMA}_internal.secrets VALUES (1, 'launch-code')")
        conn.execute(
            f"CREATE PROCEDURE {SCHEMA}.archive(v text) LANGUAGE sql "
            f"AS $$ INSERT INTO {SCHEMA}.sink VALUES (v) $$"
        )
        for i in range(1, 13):
            region = ["north", "south", "east"][i % 3]
            conn.execute(
                f"INSERT INTO {SCHEMA}.people VALUES (%s, %s, %s, %s)",
                (i, f"p{i}", region, f"ssn-{i:04d}"),
            )
        for role in pg.roles:
            for s in (SCHEMA, f"{SCHEMA}_internal"):
                conn.execute(f'GRANT USAGE ON SCHEMA {s} TO "{role}"')
                conn.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO "{role}"')
            conn.execute(f'GRANT INSERT ON {SCHEMA}.sink TO "{role}"')
        conn.execute(f"GRANT INSERT, UPDATE, DELETE ON {SCHEMA}.people TO md5user")
    yield SCHEMA
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA}_internal CASCADE")


@pytest.fixture
async def setup(
    pg: PgCluster, soundness_schema: str, proxy_factory: Any, tmp_path: Path
) -> tuple[Any, Enforcer]:
    rules_file = tmp_path / "policy.yaml"
    rules_file.write_text(RULES)
    hooks = Enforcer(load_rules(rules_file), await load_catalog(pg.dsn()), None)
    return await proxy_factory(hooks=hooks, rules=rules_file), hooks


async def test_query_to_xml_and_table_to_xml_as_execute_arguments(
    setup: tuple[Any, Enforcer], run_sync: Any
) -> None:
    proxy, _ = setup

    def scenario() -> list[str]:
        refused = []
        with psycopg.connect(proxy.dsn(user="scramuser"), autocommit=True) as conn:
            conn.execute("PREPARE s(xml) AS SELECT $1")
            for arg in (
                f"query_to_xml('select ssn from {SCHEMA}.people', true, true, '')",
                f"table_to_xml('{SCHEMA}_internal.secrets', true, true, '')",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege) as ei:
                    conn.execute(f"EXECUTE s({arg})")
                refused.append(str(ei.value))
            # The same session goes on. (PostgreSQL itself refuses subqueries here.)
            conn.execute("PREPARE t(text) AS SELECT $1")
            row = conn.execute("EXECUTE t(upper('ok'))").fetchone()
            refused.append(str(row[0]) if row else "")
        return refused

    xml, table, fine = await run_sync(scenario)
    assert "query_to_xml()" in xml and "table_to_xml()" in table
    assert fine == "OK"


async def test_call_arguments_are_policed(
    setup: tuple[Any, Enforcer], pg: PgCluster, run_sync: Any
) -> None:
    proxy, _ = setup

    def scenario() -> tuple[str, list[str]]:
        with psycopg.connect(proxy.dsn(user="scramuser"), autocommit=True) as conn:
            conn.execute(f"CALL {SCHEMA}.archive(upper('kept'))")
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as ei:
                conn.execute(
                    f"CALL {SCHEMA}.archive(query_to_xml('select ssn from {SCHEMA}.people', "
                    "true, true, '')::text)"
                )
        with psycopg.connect(pg.dsn(), autocommit=True) as direct:
            sunk = [str(r[0]) for r in direct.execute(f"SELECT v FROM {SCHEMA}.sink")]
            direct.execute(f"TRUNCATE {SCHEMA}.sink")
        return str(ei.value), sunk

    message, sunk = await run_sync(scenario)
    assert "query_to_xml()" in message
    assert sunk == ["KEPT"]


async def test_function_created_after_the_snapshot_is_refused(
    setup: tuple[Any, Enforcer], pg: PgCluster, run_sync: Any
) -> None:
    proxy, _ = setup

    def scenario() -> str:
        with psycopg.connect(pg.dsn(), autocommit=True) as direct:
            direct.execute(
                f"CREATE FUNCTION public.fresh_leak() RETURNS text LANGUAGE sql "
                f"AS $$ SELECT string_agg(ssn, ',') FROM {SCHEMA}.people $$"
            )
        try:
            with psycopg.connect(proxy.dsn(user="scramuser"), autocommit=True) as conn:
                with pytest.raises(psycopg.errors.InsufficientPrivilege) as ei:
                    conn.execute("SELECT fresh_leak()")
                return str(ei.value)
        finally:
            with psycopg.connect(pg.dsn(), autocommit=True) as direct:
                direct.execute("DROP FUNCTION public.fresh_leak()")

    message = await run_sync(scenario)
    assert "function fresh_leak is not in the proxy's catalog" in message


async def test_table_created_after_the_snapshot_is_refused_until_known(
    setup: tuple[Any, Enforcer], pg: PgCluster
) -> None:
    proxy, hooks = setup
    direct = await asyncpg.connect(pg.dsn())
    await direct.execute(f"CREATE TABLE {SCHEMA}.late (x int)")
    await direct.execute(f"INSERT INTO {SCHEMA}.late VALUES (7)")
    await direct.execute(f"GRANT SELECT ON {SCHEMA}.late TO scramuser")
    conn = await asyncpg.connect(proxy.dsn(user="scramuser"))
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError) as ei:
            await conn.fetchval(f"SELECT x FROM {SCHEMA}.late")
        assert f"relation {SCHEMA}.late is not in the proxy's catalog" in str(ei.value)
        hooks.reload(catalog=await load_catalog(pg.dsn()))
        assert await conn.fetchval(f"SELECT x FROM {SCHEMA}.late") == 7
    finally:
        await conn.close()
        await direct.execute(f"DROP TABLE {SCHEMA}.late")
        await direct.close()


async def test_unmodelled_ddl_runs_for_an_ungoverned_user_and_is_audited(
    setup: tuple[Any, Enforcer], pg: PgCluster
) -> None:
    proxy, _ = setup
    statements = [
        "CREATE ROLE soundness_role LOGIN PASSWORD E'it\\'s-hunter2'",
        f"CREATE TYPE {SCHEMA}.mood AS ENUM ('sad', 'ok')",
        f"CREATE DOMAIN {SCHEMA}.posint AS integer CHECK (VALUE > 0)",
    ]
    conn = await asyncpg.connect(proxy.dsn())
    try:
        for sql in statements:
            await conn.execute(sql)
        assert await conn.fetchval(f"SELECT 5::{SCHEMA}.posint") == 5
    finally:
        await conn.close()
        direct = await asyncpg.connect(pg.dsn())
        await direct.execute("DROP ROLE IF EXISTS soundness_role")
        await direct.execute(f"DROP TYPE IF EXISTS {SCHEMA}.mood")
        await direct.execute(f"DROP DOMAIN IF EXISTS {SCHEMA}.posint")
        await direct.close()
    await proxy.stop()
    raw = proxy.audit_log.read_bytes()
    assert b"hunter2" not in raw
    records = [orjson.loads(line) for line in raw.splitlines()]
    creates = [r for r in records if r["event"] == "statement" and r["kind"] == "create"]
    assert len(creates) == 3
    assert {r["decision"] for r in creates} == {"allow"}
    assert [r["sql"].split()[:2] for r in creates] == [
        ["CREATE", "ROLE"],
        ["CREATE", "TYPE"],
        ["CREATE", "DOMAIN"],
    ]


async def test_two_statements_in_one_parse_get_postgres_42601(
    setup: tuple[Any, Enforcer], pg: PgCluster
) -> None:
    proxy, _ = setup
    for dsn in (pg.dsn(), proxy.dsn(), proxy.dsn(user="scramuser")):
        conn = await asyncpg.connect(dsn)
        try:
            with pytest.raises(asyncpg.PostgresSyntaxError) as ei:
                await conn.fetch("SELECT 1; SELECT 2")
            assert ei.value.sqlstate == "42601"
            assert "cannot insert multiple commands into a prepared statement" in str(ei.value)
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()


async def test_writes_are_held_to_the_row_filter(
    setup: tuple[Any, Enforcer], pg: PgCluster
) -> None:
    proxy, _ = setup
    conn = await asyncpg.connect(proxy.dsn(user="md5user"))
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError) as ei:
            await conn.execute(f"INSERT INTO {SCHEMA}.people VALUES (100, 'n', 'south', 'x')")
        assert "new row violates the row filter" in str(ei.value)
        await conn.execute(f"INSERT INTO {SCHEMA}.people VALUES (100, 'n', 'north', 'x')")
        with pytest.raises(asyncpg.InsufficientPrivilegeError) as ei:
            await conn.execute(f"UPDATE {SCHEMA}.people SET region = 'south' WHERE id = 100")
        assert "assigns region" in str(ei.value)
        assert await conn.execute(f"DELETE FROM {SCHEMA}.people WHERE id >= 100") == "DELETE 1"
    finally:
        await conn.close()
        direct = await asyncpg.connect(pg.dsn())
        await direct.execute(f"DELETE FROM {SCHEMA}.people WHERE id >= 100")
        await direct.close()


async def test_update_condition_is_fenced_behind_the_row_filter(
    pg: PgCluster, soundness_schema: str, proxy_factory: Any, tmp_path: Path
) -> None:
    """An error-based probe of rows outside the filter: `1 / (ascii(region) - 115)`
    divides by zero on south rows only. Written after a filter the planner finds
    dearer, it used to run first (and answer "is there a south row?"); fenced behind
    the filter with CASE it never sees one."""
    dear = "upper(lower(btrim(region))) = upper(:region)"
    rules_file = tmp_path / "dear.yaml"
    rules_file.write_text(
        RULES.replace(
            'row_filter: "region = :region"\n    columns: {ssn: redact}\n    statements',
            f'row_filter: "{dear}"\n    columns: {{ssn: redact}}\n    statements',
        )
    )
    assert dear in rules_file.read_text()
    hooks = Enforcer(load_rules(rules_file), await load_catalog(pg.dsn()), None)
    proxy = await proxy_factory(hooks=hooks, rules=rules_file)
    conn = await asyncpg.connect(proxy.dsn(user="md5user"))
    try:
        probe = "1 / (ascii(region) - 115) = 1"
        assert await conn.execute(f"UPDATE {SCHEMA}.people SET name = name WHERE {probe}") == (
            "UPDATE 0"
        )
        tag = await conn.execute(f"UPDATE {SCHEMA}.people SET name = name WHERE id > 0")
        assert tag == f"UPDATE {len(NORTH)}"
    finally:
        await conn.close()


# Names sqlglot parses into nodes of its own (`month` -> Month, `ifnull` -> Coalesce),
# and a real built-in (`left`), each made after the catalog snapshot in public.
LATE_FUNCTIONS = {
    "month": "month(v int)",
    "hex": "hex(v int)",
    "ifnull": "ifnull(a int, b int)",
    "agg": "agg(v int)",
    "left": "left(s text, n int)",
}
LEAK = f"$$ SELECT string_agg(ssn, ',') FROM {SCHEMA}.people $$"


async def test_functions_named_like_sqlglot_models_are_checked_by_written_name(
    setup: tuple[Any, Enforcer], pg: PgCluster, run_sync: Any
) -> None:
    proxy, _ = setup

    def scenario() -> dict[str, str]:
        with psycopg.connect(pg.dsn(), autocommit=True) as direct:
            for sig in LATE_FUNCTIONS.values():
                direct.execute(f"CREATE FUNCTION public.{sig} RETURNS text LANGUAGE sql AS {LEAK}")
        refused: dict[str, str] = {}
        try:
            with psycopg.connect(proxy.dsn(user="scramuser"), autocommit=True) as conn:
                for sql in (
                    "SELECT month(1)",
                    "SELECT hex(1)",
                    "SELECT ifnull(1, 2)",
                    "SELECT agg(1)",
                    "SELECT public.month(1)",
                    "SELECT pg_catalog.hex(1)",
                ):
                    with pytest.raises(psycopg.errors.InsufficientPrivilege) as ei:
                        conn.execute(sql)
                    refused[sql] = str(ei.value)
                # pg_catalog is searched first: `left` is the built-in, and works.
                assert conn.execute("SELECT left('abc', 2)").fetchone() == ("ab",)
                with pytest.raises(psycopg.errors.InsufficientPrivilege) as ei:
                    conn.execute("SET search_path = public, pg_catalog; SELECT left('abc', 2)")
                refused["left after SET"] = str(ei.value)
                conn.execute("SET search_path = public, pg_catalog")
                with pytest.raises(psycopg.errors.InsufficientPrivilege) as ei:
                    conn.execute("SELECT left('abc', 2)")
                refused["left"] = str(ei.value)
                assert conn.execute("SELECT pg_catalog.left('abc', 2)").fetchone() == ("ab",)
        finally:
            with psycopg.connect(pg.dsn(), autocommit=True) as direct:
                for sig in LATE_FUNCTIONS.values():
                    name, _, args = sig.partition("(")
                    types = ", ".join(a.split()[1] for a in args.rstrip(")").split(", "))
                    direct.execute(f"DROP FUNCTION public.{name}({types})")
        return refused

    refused = await run_sync(scenario)
    for sql, name in (
        ("SELECT month(1)", "month"),
        ("SELECT hex(1)", "hex"),
        ("SELECT ifnull(1, 2)", "ifnull"),
        ("SELECT agg(1)", "agg"),
    ):
        assert f"function {name} is not in the proxy's catalog" in refused[sql], refused[sql]
    assert (
        "function public.month is not in the proxy's catalog" in refused["SELECT public.month(1)"]
    )
    assert "function pg_catalog.hex is not in" in refused["SELECT pg_catalog.hex(1)"]
    assert "function left could be one in public" in refused["left after SET"]
    assert "function left could be one in public" in refused["left"]
    assert not any("ssn-" in m for m in refused.values())


async def test_a_relation_shadowing_a_system_catalog_is_refused(
    setup: tuple[Any, Enforcer], pg: PgCluster, run_sync: Any
) -> None:
    """A `public.pg_class` made behind the proxy's back, under a path that puts public
    before pg_catalog, is what `pg_class` reads: refused, never taken for the catalog's."""
    proxy, _ = setup

    def scenario() -> tuple[str, Any]:
        with psycopg.connect(pg.dsn(), autocommit=True) as direct:
            direct.execute("CREATE TABLE public.pg_class (relname text)")
            direct.execute(f"INSERT INTO public.pg_class SELECT ssn FROM {SCHEMA}.people")
            direct.execute("GRANT SELECT ON public.pg_class TO scramuser")
        try:
            with psycopg.connect(proxy.dsn(user="scramuser"), autocommit=True) as conn:
                conn.execute("SET search_path = public, pg_catalog")
                with pytest.raises(psycopg.errors.InsufficientPrivilege) as ei:
                    conn.execute("SELECT relname FROM pg_class LIMIT 1")
                qualified = conn.execute(
                    "SELECT relname FROM pg_catalog.pg_class WHERE relname = 'pg_proc'"
                ).fetchone()
                return str(ei.value), qualified
        finally:
            with psycopg.connect(pg.dsn(), autocommit=True) as direct:
                direct.execute("DROP TABLE public.pg_class")

    message, qualified = await run_sync(scenario)
    assert "relation pg_class could be one in public" in message, message
    assert "ssn-" not in message
    assert qualified == ("pg_proc",)


async def test_builtins_sqlglot_renames_keep_working(
    setup: tuple[Any, Enforcer], run_sync: Any
) -> None:
    proxy, _ = setup

    def scenario() -> tuple[Any, ...] | None:
        with psycopg.connect(proxy.dsn(user="scramuser"), autocommit=True) as conn:
            return conn.execute(
                "SELECT strpos('abc', 'c'), left('abc', 2), coalesce(NULL, 1), "
                "substring('abc', 2, 1), substring('abc' FROM 3), extract(year FROM "
                "date '2024-05-01')::int, string_agg(name, ',' ORDER BY id), "
                f"date_trunc('year', timestamp '2024-05-01')::date::text FROM {SCHEMA}.people"
            ).fetchone()

    row = await run_sync(scenario)
    assert row == (3, "ab", 1, "b", "c", 2024, "p3,p6,p9,p12", "2024-01-01")
