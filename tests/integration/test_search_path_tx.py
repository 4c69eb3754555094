"""The proxy reads unqualified names under the search_path the server really has (#12).

`public.people` is governed (a row filter keeps region north only);
`tx.people` is not. The role's search_path is `public`. After a SET of the
path to `tx` that the server undoes (a rolled-back block, SET LOCAL, ROLLBACK
TO SAVEPOINT, a failing implicit transaction, a failed block, RESET, DISCARD
ALL), an unqualified `people` is public.people for the server, so through the
proxy it must be the filtered public.people. A proxy following only the last
completed SET would read tx.people (id 100) instead; one resetting to the
built-in default `"$user", public` would read the role's own schema's people.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pgcluster import PgCluster

from proxy.catalog import load_catalog
from proxy.enforce import Enforcer
from proxy.rules import load_rules

ROLE, PASSWORD = "sptx_analyst", "sptx-secret-1"
RULES = f"""\
version: 1
users:
  {ROLE}: {{groups: [analysts]}}
rules:
  - id: people-north
    match: {{groups: [analysts]}}
    table: public.people
    row_filter: "region = 'north'"
"""
PUBLIC = [(1,)]  # public.people, filtered
TX = [(100,)]  # tx.people


@pytest.fixture(scope="module")
def two_schemas(pg: PgCluster) -> Iterator[None]:
    def drop(conn: psycopg.Connection[Any]) -> None:
        conn.execute("DROP SCHEMA IF EXISTS tx CASCADE")
        conn.execute(f"DROP SCHEMA IF EXISTS {ROLE} CASCADE")
        conn.execute("DROP TABLE IF EXISTS public.people")
        conn.execute(f"DROP ROLE IF EXISTS {ROLE}")

    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        drop(conn)
        conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
        conn.execute(f"ALTER ROLE {ROLE} SET search_path = public")
        conn.execute("CREATE TABLE public.people (id int, region text)")
        conn.execute("INSERT INTO public.people VALUES (1, 'north'), (2, 'south')")
        conn.execute("CREATE SCHEMA tx")
        conn.execute("CREATE TABLE tx.people (id int, region text)")
        conn.execute("INSERT INTO tx.people VALUES (100, 'north')")
        conn.execute(f"GRANT USAGE ON SCHEMA tx TO {ROLE}")
        conn.execute(f"CREATE SCHEMA {ROLE} AUTHORIZATION {ROLE}")
        conn.execute(f"CREATE TABLE {ROLE}.people (id int, region text)")
        conn.execute(f"INSERT INTO {ROLE}.people VALUES (200, 'north')")
        conn.execute(f"ALTER TABLE {ROLE}.people OWNER TO {ROLE}")
        conn.execute(f"GRANT SELECT ON public.people, tx.people TO {ROLE}")
    yield
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        drop(conn)


@pytest.fixture
async def proxy_dsn(
    pg: PgCluster, two_schemas: None, proxy_factory: Any, tmp_path: Path
) -> AsyncIterator[str]:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES)
    hooks = Enforcer(load_rules(rules_file), await load_catalog(pg.dsn()), None)
    p = await proxy_factory(hooks=hooks, rules=rules_file)
    yield p.dsn(ROLE, PASSWORD)


async def connect(dsn: str) -> psycopg.AsyncConnection[Any]:
    # ClientCursor: statements go as simple Query messages, several to a string.
    return await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, cursor_factory=psycopg.AsyncClientCursor
    )


async def people(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
    cur = await conn.execute("SELECT id FROM people ORDER BY id")
    return await cur.fetchall()


async def run(conn: psycopg.AsyncConnection[Any], *statements: str) -> None:
    for sql in statements:
        await conn.execute(sql)


async def test_the_set_is_followed_while_in_force(proxy_dsn: str) -> None:
    async with await connect(proxy_dsn) as conn:
        assert await people(conn) == PUBLIC
        await run(conn, "SET search_path = tx")
        assert await people(conn) == TX


async def test_a_rolled_back_set(proxy_dsn: str) -> None:
    async with await connect(proxy_dsn) as conn:
        await run(conn, "BEGIN", "SET search_path = tx")
        assert await people(conn) == TX
        await run(conn, "ROLLBACK")
        assert await people(conn) == PUBLIC


async def test_a_rolled_back_set_config(proxy_dsn: str) -> None:
    async with await connect(proxy_dsn) as conn:
        await run(conn, "BEGIN", "SELECT set_config('search_path', 'tx', false)", "ROLLBACK")
        assert await people(conn) == PUBLIC


async def test_set_local_ends_with_its_transaction(proxy_dsn: str) -> None:
    async with await connect(proxy_dsn) as conn:
        await run(conn, "BEGIN", "SET LOCAL search_path = tx")
        assert await people(conn) == TX
        await run(conn, "COMMIT")
        assert await people(conn) == PUBLIC


async def test_rollback_to_savepoint(proxy_dsn: str) -> None:
    async with await connect(proxy_dsn) as conn:
        await run(conn, "BEGIN", "SAVEPOINT a", "SET search_path = tx")
        assert await people(conn) == TX
        await run(conn, "ROLLBACK TO SAVEPOINT a")
        assert await people(conn) == PUBLIC
        await run(conn, "COMMIT")
        assert await people(conn) == PUBLIC


async def test_a_failing_implicit_transaction_in_one_query_string(proxy_dsn: str) -> None:
    async with await connect(proxy_dsn) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            await conn.execute("SET search_path = tx; SELECT 1/0")
        assert await people(conn) == PUBLIC


async def test_a_failed_block_loses_its_set_at_commit(proxy_dsn: str) -> None:
    async with await connect(proxy_dsn) as conn:
        await run(conn, "BEGIN", "SET search_path = tx")
        with pytest.raises(psycopg.errors.DivisionByZero):
            await conn.execute("SELECT 1/0")
        await run(conn, "COMMIT")  # answered ROLLBACK
        assert await people(conn) == PUBLIC


async def test_reset_goes_back_to_the_role_setting(proxy_dsn: str) -> None:
    async with await connect(proxy_dsn) as conn:
        for undo in ("RESET search_path", "SET search_path TO DEFAULT", "RESET ALL"):
            await run(conn, "SET search_path = tx")
            assert await people(conn) == TX
            await run(conn, undo)
            assert await people(conn) == PUBLIC, undo


async def test_discard_all(proxy_dsn: str) -> None:
    async with await connect(proxy_dsn) as conn:
        await run(conn, "SET search_path = tx", "DISCARD ALL")
        assert await people(conn) == PUBLIC


async def test_a_path_set_where_the_proxy_cannot_read_it_is_refused(proxy_dsn: str) -> None:
    async with await connect(proxy_dsn) as conn:
        # A SET LOCAL in a string that then COMMITs: the engine, deciding the whole
        # string before it runs, cannot tell the path for the rest of it (fail closed).
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="search_path"):
            await conn.execute("BEGIN; SET LOCAL search_path = tx; COMMIT; SELECT * FROM people")
        assert await people(conn) == PUBLIC


async def test_a_failing_extended_batch_before_its_sync(proxy_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(proxy_dsn, autocommit=True) as conn:
        # Pipeline mode: both statements go before one Sync, one implicit transaction.
        with pytest.raises(psycopg.errors.DivisionByZero):
            async with conn.pipeline():
                await conn.execute("SET search_path = tx")
                await conn.execute("SELECT 1/0")
        assert await people(conn) == PUBLIC
