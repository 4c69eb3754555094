"""Name resolution follows the session's real search_path, not a guess.

The role `sp_analyst` owns a schema of its own name holding an ungoverned
`people`, but its role setting puts only `public` on the search path. A
proxy assuming the default `"$user", public` would pin `people` to the
ungoverned table: the analyst would read another table than direct. The
proxy reads the real path at startup and follows SET and set_config after.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pgcluster import PgCluster

from proxy.catalog import load_catalog
from proxy.enforce import Enforcer
from proxy.rules import load_rules

ROLE, PASSWORD = "sp_analyst", "sp-secret-1"
RULES = f"""\
version: 1
users:
  {ROLE}: {{groups: [analysts]}}
rules:
  - id: people-masked
    match: {{groups: [analysts]}}
    table: public.people
    columns: {{ssn: redact}}
"""


@pytest.fixture(scope="module")
def shadowed(pg: PgCluster) -> Iterator[None]:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {ROLE} CASCADE")
        conn.execute("DROP TABLE IF EXISTS public.people")
        conn.execute(f"DROP ROLE IF EXISTS {ROLE}")
        conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
        conn.execute(f"ALTER ROLE {ROLE} SET search_path = public")
        conn.execute("CREATE TABLE public.people (id int, ssn text)")
        conn.execute("INSERT INTO public.people VALUES (1, '123-45-6789')")
        conn.execute(f"CREATE SCHEMA {ROLE} AUTHORIZATION {ROLE}")
        conn.execute(f"CREATE TABLE {ROLE}.people (id int, ssn text)")
        conn.execute(f"INSERT INTO {ROLE}.people VALUES (2, 'harmless')")
        conn.execute(f"GRANT SELECT ON public.people TO {ROLE}")
        conn.execute(f"GRANT SELECT ON {ROLE}.people TO {ROLE}")
    yield
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {ROLE} CASCADE")
        conn.execute("DROP TABLE IF EXISTS public.people")
        conn.execute(f"DROP ROLE IF EXISTS {ROLE}")


async def test_role_search_path_is_honoured(
    pg: PgCluster, shadowed: None, proxy_factory: Any, tmp_path: Path
) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES)
    hooks = Enforcer(load_rules(rules_file), await load_catalog(pg.dsn()), None)
    p = await proxy_factory(hooks=hooks, rules=rules_file)
    async with await psycopg.AsyncConnection.connect(p.dsn(ROLE, PASSWORD)) as conn:
        cur = await conn.execute("SELECT id, ssn FROM people")
        assert await cur.fetchall() == [(1, "****")]
        # Moving the path at run time is followed too.
        await conn.execute(f"SET search_path = {ROLE}, public")
        cur = await conn.execute("SELECT id, ssn FROM people")
        assert await cur.fetchall() == [(2, "harmless")]
        await conn.execute("SELECT set_config('search_path', 'public', false)")
        cur = await conn.execute("SELECT id, ssn FROM people")
        assert await cur.fetchall() == [(1, "****")]
