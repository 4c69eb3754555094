"""Views, per-database catalogs, refresh on miss and readiness, through a real proxy.

scramuser is an analyst who sees region north with ssn redacted; md5user has
no policy. The enforcer gets a CatalogSet as `oversight serve` builds it, so
catalogs are loaded per database with load_catalog against the suite's
PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from pgcluster import PgCluster
from psycopg import sql

from proxy.catalog import load_catalog
from proxy.catalogs import CatalogSet
from proxy.enforce import Enforcer
from proxy.rules import load_rules

SCHEMA = "views_e2e"
OTHER_DB = "views_other"
LOCKED_DB = "views_locked"
CATALOG_ROLE = "views_catalog_reader"
RULES = f"""\
version: 1
defaults:
  statements: [select, show, set, begin, commit, rollback]
users:
  scramuser: {{groups: [analysts], attributes: {{region: north}}}}
rules:
  - id: people-north
    match: {{groups: [analysts]}}
    table: {SCHEMA}.people
    row_filter: "region = :region"
    columns: {{ssn: redact}}
  - id: events-north
    match: {{groups: [analysts]}}
    table: {SCHEMA}.events
    row_filter: "region = :region"
  - id: open-lookup
    match: {{groups: [analysts]}}
    table: {SCHEMA}.lookup
"""

_TABLES = f"""
CREATE SCHEMA {SCHEMA};
CREATE TABLE {SCHEMA}.people (id int PRIMARY KEY, name text, region text, ssn text);
INSERT INTO {SCHEMA}.people
  SELECT i, 'p' || i, (ARRAY['north','south','east'])[i % 3 + 1], 'ssn-' || i
  FROM generate_series(1, 30) i;
CREATE TABLE {SCHEMA}.lookup (region text, label text);
INSERT INTO {SCHEMA}.lookup VALUES ('north', 'N'), ('south', 'S'), ('east', 'E');
CREATE TABLE {SCHEMA}.events (id int, region text, what text) PARTITION BY RANGE (id);
CREATE TABLE {SCHEMA}.events_1 PARTITION OF {SCHEMA}.events FOR VALUES FROM (0) TO (100);
INSERT INTO {SCHEMA}.events SELECT i, (ARRAY['north','south'])[i % 2 + 1], 'e' || i
  FROM generate_series(1, 20) i;
CREATE VIEW {SCHEMA}.people_view AS SELECT id, name, region, ssn FROM {SCHEMA}.people;
CREATE VIEW {SCHEMA}.labelled AS
  SELECT v.id, v.ssn, l.label FROM {SCHEMA}.people_view v JOIN {SCHEMA}.lookup l USING (region);
CREATE VIEW {SCHEMA}.barrier WITH (security_barrier) AS
  SELECT id, region FROM {SCHEMA}.people WHERE id > 3;
CREATE VIEW {SCHEMA}.lookup_view AS SELECT region, label FROM {SCHEMA}.lookup;
CREATE MATERIALIZED VIEW {SCHEMA}.people_mat AS SELECT id, region FROM {SCHEMA}.people;
"""


def _grant(conn: psycopg.Connection[Any], roles: list[str]) -> None:
    for role in roles:
        conn.execute(f'GRANT USAGE ON SCHEMA {SCHEMA} TO "{role}"')
        conn.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA {SCHEMA} TO "{role}"')
        conn.execute(
            f'ALTER DEFAULT PRIVILEGES IN SCHEMA {SCHEMA} GRANT SELECT ON TABLES TO "{role}"'
        )


@pytest.fixture(scope="module")
def views_db(pg: PgCluster) -> Iterator[str]:
    roles = list(pg.roles)
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute(_TABLES)
        _grant(conn, roles)
        for db in (OTHER_DB, LOCKED_DB):
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(db)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
        conn.execute(f"DROP ROLE IF EXISTS {CATALOG_ROLE}")
        conn.execute(f"CREATE ROLE {CATALOG_ROLE} LOGIN PASSWORD 'catalog-secret-1'")
        conn.execute(f"REVOKE CONNECT ON DATABASE {LOCKED_DB} FROM PUBLIC")
        for role in roles:
            conn.execute(f'GRANT CONNECT ON DATABASE {LOCKED_DB} TO "{role}"')
    # The other database has the same schema name with other columns and a view of its own.
    with psycopg.connect(pg.dsn(dbname=OTHER_DB), autocommit=True) as conn:
        conn.execute(
            f"CREATE SCHEMA {SCHEMA};"
            f"CREATE TABLE {SCHEMA}.people (id int, region text, ssn text, shoe_size int);"
            f"INSERT INTO {SCHEMA}.people VALUES (1, 'north', 's1', 40), (2, 'south', 's2', 41);"
            f"CREATE VIEW {SCHEMA}.only_here AS SELECT id, ssn, shoe_size FROM {SCHEMA}.people;"
        )
        _grant(conn, roles)
    yield SCHEMA
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        for db in (OTHER_DB, LOCKED_DB):
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db))
            )
        conn.execute(f"DROP ROLE IF EXISTS {CATALOG_ROLE}")


@pytest.fixture
async def served(pg: PgCluster, views_db: str, proxy_factory: Any, tmp_path: Path) -> Any:
    rules_file = tmp_path / "views.yaml"
    rules_file.write_text(RULES)
    rules = load_rules(rules_file)
    catalogs = CatalogSet(lambda db: load_catalog(pg.dsn(), database=db), pg.dbname)
    catalog = await catalogs.ensure(pg.dbname)
    assert catalog is not None
    hooks = Enforcer(rules, catalog, None, catalogs=catalogs)
    handle = await proxy_factory(hooks=hooks, rules=rules_file)
    handle.catalogs = catalogs
    return handle


async def _rows(dsn: str, query: str) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(query)
        return list(await cur.fetchall())


async def _error(dsn: str, query: str) -> psycopg.Error:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as info:
            await conn.execute(query)
        return info.value


def _ddl(pg: PgCluster, statements: str) -> None:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(statements)


def _direct(pg: PgCluster, query: str, dbname: str | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg.dsn(dbname=dbname), autocommit=True) as conn:
        return list(conn.execute(query).fetchall())


async def test_a_view_answers_as_if_the_table_held_only_the_permitted_rows(
    pg: PgCluster, served: Any
) -> None:
    dsn = served.dsn("scramuser")
    q = f"SELECT region, count(*) FROM {SCHEMA}.people_view GROUP BY region ORDER BY 1"
    expected = _direct(pg, f"SELECT 'north', count(*) FROM {SCHEMA}.people WHERE region = 'north'")
    assert await _rows(dsn, q) == expected
    ssns = await _rows(dsn, f"SELECT DISTINCT ssn FROM {SCHEMA}.people_view")
    assert ssns == [("****",)]
    labelled = await _rows(dsn, f"SELECT DISTINCT label, ssn FROM {SCHEMA}.labelled")
    assert labelled == [("N", "****")]
    barrier = await _rows(dsn, f"SELECT count(*) FROM {SCHEMA}.barrier")
    assert barrier == _direct(
        pg, f"SELECT count(*) FROM {SCHEMA}.people WHERE region = 'north' AND id > 3"
    )
    # A view over tables without a restrictive rule is sent as written.
    assert len(await _rows(dsn, f"SELECT * FROM {SCHEMA}.lookup_view")) == 3
    # The user with no policy reads the view as PostgreSQL defines it.
    everyone = await _rows(served.dsn("md5user"), f"SELECT count(*) FROM {SCHEMA}.people_view")
    assert everyone == [(30,)]


async def test_materialized_views_and_writes_through_views_are_refused(served: Any) -> None:
    dsn = served.dsn("scramuser")
    err = await _error(dsn, f"SELECT * FROM {SCHEMA}.people_mat")
    assert err.sqlstate == "42501" and "people-north" in str(err)
    err = await _error(dsn, f"UPDATE {SCHEMA}.people_view SET name = 'x'")
    assert err.sqlstate == "42501"


async def test_a_view_created_after_start_is_expanded_at_first_use(
    pg: PgCluster, served: Any
) -> None:
    dsn = served.dsn("scramuser")
    assert len(await _rows(dsn, f"SELECT id FROM {SCHEMA}.people_view")) == 10
    _ddl(
        pg,
        f"CREATE VIEW {SCHEMA}.late_view AS SELECT id, region, ssn FROM {SCHEMA}.people;"
        f"GRANT SELECT ON {SCHEMA}.late_view TO scramuser",
    )
    rows = await _rows(dsn, f"SELECT DISTINCT region, ssn FROM {SCHEMA}.late_view")
    assert rows == [("north", "****")]  # neither refused nor read raw
    for _ in range(100):  # the record is written after the reply
        records = [orjson.loads(x) for x in served.audit_log.read_bytes().splitlines()]
        refreshed = [r for r in records if r.get("catalog_refresh")]
        if refreshed:
            break
        await asyncio.sleep(0.05)
    assert refreshed[0]["catalog_refresh"] == [f"{SCHEMA}.late_view"]


async def test_a_partition_created_after_start_is_governed_like_its_parent(
    pg: PgCluster, served: Any
) -> None:
    dsn = served.dsn("scramuser")
    assert await _rows(dsn, f"SELECT count(*) FROM {SCHEMA}.events") == [(10,)]
    _ddl(
        pg,
        f"CREATE TABLE {SCHEMA}.events_2 PARTITION OF {SCHEMA}.events"
        " FOR VALUES FROM (100) TO (200);"
        f"INSERT INTO {SCHEMA}.events VALUES (101, 'south', 'x'), (102, 'north', 'y');"
        f"GRANT SELECT ON {SCHEMA}.events_2 TO scramuser",
    )
    assert await _rows(dsn, f"SELECT region, what FROM {SCHEMA}.events_2") == [("north", "y")]


async def test_each_database_is_decided_against_its_own_catalog(served: Any) -> None:
    dsn = served.dsn("scramuser", dbname=OTHER_DB)
    rows = await _rows(dsn, f"SELECT id, ssn, shoe_size FROM {SCHEMA}.people")
    assert rows == [(1, "****", 40)]  # the default database's people has no shoe_size
    assert await _rows(dsn, f"SELECT * FROM {SCHEMA}.only_here") == [(1, "****", 40)]
    assert OTHER_DB in served.catalogs.databases()


async def test_a_database_whose_catalog_cannot_be_read(
    pg: PgCluster, views_db: str, proxy_factory: Any, tmp_path: Path
) -> None:
    rules_file = tmp_path / "views.yaml"
    rules_file.write_text(RULES)
    rules = load_rules(rules_file)
    reader = pg.dsn(CATALOG_ROLE, "catalog-secret-1")
    catalogs = CatalogSet(lambda db: load_catalog(reader, database=db), pg.dbname)
    catalog = await catalogs.ensure(pg.dbname)
    assert catalog is not None
    handle = await proxy_factory(hooks=Enforcer(rules, catalog, None, catalogs=catalogs))
    err = await _error(handle.dsn("scramuser", dbname=LOCKED_DB), "SELECT 1")
    assert err.sqlstate == "57P03"
    assert f"catalog of database {LOCKED_DB} cannot be read" in str(err)
    # A user with no policy is let through (and audited): nothing of theirs depends on it.
    assert await _rows(handle.dsn("md5user", dbname=LOCKED_DB), "SELECT 1") == [(1,)]


async def test_readyz_waits_for_the_default_catalog(pg: PgCluster, tmp_path: Path) -> None:
    from proxy.run import Service
    from proxy.settings import Settings

    late = "views_late_db"
    _ddl(pg, f"DROP DATABASE IF EXISTS {late}")
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text("version: 1\ndefaults: {statements: [all]}\n")
    settings = Settings(
        listen="127.0.0.1:0",
        upstream=pg.dsn(dbname=late),
        rules=str(rules_file),
        audit_log=str(tmp_path / "audit.jsonl"),
        admin_listen="127.0.0.1:0",
    )
    service = Service(settings, load_rules(rules_file))
    await service.start()
    try:
        # The upstream answers, but the default database does not exist yet.
        assert not await service.ready()
        _ddl(pg, f"CREATE DATABASE {late}")
        for _ in range(300):  # the catalog loop retries every 5 s until it loads
            if await service.ready():
                break
            await asyncio.sleep(0.1)
        assert await service.ready()
    finally:
        await service.stop()
        _ddl(pg, f"DROP DATABASE IF EXISTS {late} WITH (FORCE)")
