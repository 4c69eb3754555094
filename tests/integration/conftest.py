"""A policy-active proxy for the client compatibility tests (`compat_proxy`).

Every client test runs the same scenario against it: the analyst (the suite's
`scramuser`, in group `analysts`) reads `compat.people`, whose `ssn` is
masked to '****' and whose `notes` is denied (42501, "oversight: blocked by
compat-people ..."); after the refusal the session goes on. `compat.scratch`
is the analyst's own table for writes and COPY FROM; COPY TO is allowed (and
masked like a SELECT) so that clients' COPY paths can be exercised.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pgcluster import PgCluster

COMPAT_SCHEMA = "compat"
COMPAT_USER = "scramuser"
COMPAT_PEOPLE = [(i, f"person {i}", f"{i:03d}-55-{i:04d}", f"note {i}") for i in range(1, 11)]
MASKED = "****"

COMPAT_RULES = f"""\
version: 1
defaults:
  unknown_tables: allow
  unparsed: block
  statements: [select, explain, show, set, begin, commit, rollback, declare, fetch, close,
               prepare, execute, deallocate, discard, listen, notify, copy]
users:
  {COMPAT_USER}: {{groups: [analysts]}}
rules:
  - id: compat-people
    match: {{groups: [analysts]}}
    table: {COMPAT_SCHEMA}.people
    columns: {{ssn: redact, notes: deny}}
  - id: compat-scratch
    match: {{groups: [analysts]}}
    table: {COMPAT_SCHEMA}.scratch
    statements: [insert, update, delete, copy, truncate]
"""


@pytest.fixture(scope="session")
def compat_schema(pg: PgCluster) -> Iterator[str]:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {COMPAT_SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {COMPAT_SCHEMA}")
        conn.execute(
            f"CREATE TABLE {COMPAT_SCHEMA}.people "
            "(id int PRIMARY KEY, name text NOT NULL, ssn text, notes text)"
        )
        conn.execute(f"CREATE TABLE {COMPAT_SCHEMA}.scratch (id int, label text)")
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {COMPAT_SCHEMA}.people VALUES (%s, %s, %s, %s)", COMPAT_PEOPLE
            )
        conn.execute(f'GRANT USAGE ON SCHEMA {COMPAT_SCHEMA} TO "{COMPAT_USER}"')
        conn.execute(f'GRANT SELECT ON {COMPAT_SCHEMA}.people TO "{COMPAT_USER}"')
        conn.execute(f'GRANT ALL ON {COMPAT_SCHEMA}.scratch TO "{COMPAT_USER}"')
    yield COMPAT_SCHEMA
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {COMPAT_SCHEMA} CASCADE")


def clear_scratch(pg: PgCluster, ids: range) -> None:
    """Delete a test file's own id range from the shared compat.scratch (directly, as owner)."""
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(
            f"DELETE FROM {COMPAT_SCHEMA}.scratch WHERE id BETWEEN %s AND %s", (ids[0], ids[-1])
        )


@pytest.fixture
async def compat_proxy(
    pg: PgCluster, compat_schema: str, proxy_factory: Any, tmp_path: Path
) -> Any:
    """A proxy with the production hooks and COMPAT_RULES; connect as COMPAT_USER."""
    from proxy.catalog import load_catalog
    from proxy.enforce import Enforcer
    from proxy.rules import load_rules

    rules_file = tmp_path / "compat.yaml"
    rules_file.write_text(COMPAT_RULES)
    rules = load_rules(rules_file)
    catalog = await load_catalog(pg.dsn())
    return await proxy_factory(hooks=Enforcer(rules, catalog, None), rules=rules_file)
