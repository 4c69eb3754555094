"""Groups from upstream role membership (`groups_from_roles`) against real PostgreSQL roles.

dave logs in through the proxy; whether the `analysts` rule (a row filter on
his `region` and a masked ssn) applies to him is decided by nothing but
`GRANT`/`REVOKE` on the upstream, through a nested role (dave -> team ->
analysts). The same statement text is asked before and after, so a decision
cached for his old groups would show.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pgcluster import PgCluster

from proxy.catalog import load_catalog
from proxy.enforce import Enforcer
from proxy.rules import load_rules

SCHEMA = "identity_roles"
DAVE, DAVE_PW = "idr_dave", "dave-secret-1"
ANALYSTS, TEAM = "idr_analysts", "idr_team"
QUERY = f"SELECT id, ssn FROM {SCHEMA}.people ORDER BY id"

RULES = f"""\
version: 1
users:
  {DAVE}: {{attributes: {{region: north}}}}
rules:
  - id: analysts-by-region
    match: {{groups: [{ANALYSTS}]}}
    table: {SCHEMA}.people
    row_filter: "region = :region"
    columns: {{ssn: redact}}
"""
ALL_ROWS = [(1, "ssn-1"), (2, "ssn-2"), (3, "ssn-3"), (4, "ssn-4")]
NORTH_MASKED = [(1, "****"), (3, "****")]


def _sql(pg: PgCluster, *statements: str) -> None:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        for s in statements:
            conn.execute(s)


@pytest.fixture(scope="module")
def roles(pg: PgCluster) -> Iterator[None]:
    _sql(
        pg,
        f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE",
        f"DROP ROLE IF EXISTS {DAVE}",
        f"DROP ROLE IF EXISTS {TEAM}",
        f"DROP ROLE IF EXISTS {ANALYSTS}",
        f"CREATE ROLE {DAVE} LOGIN PASSWORD '{DAVE_PW}'",
        f"CREATE ROLE {ANALYSTS} NOLOGIN",
        f"CREATE ROLE {TEAM} NOLOGIN",
        f"GRANT {ANALYSTS} TO {TEAM}",
        f"CREATE SCHEMA {SCHEMA}",
        f"CREATE TABLE {SCHEMA}.people (id int PRIMARY KEY, region text, ssn text)",
        f"INSERT INTO {SCHEMA}.people SELECT i, CASE WHEN i % 2 = 1 THEN 'north' "
        "ELSE 'south' END, 'ssn-' || i FROM generate_series(1, 4) i",
        f"GRANT USAGE ON SCHEMA {SCHEMA} TO {DAVE}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA {SCHEMA} TO {DAVE}",
    )
    yield
    _sql(
        pg,
        f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE",
        f"DROP ROLE IF EXISTS {DAVE}",
        f"DROP ROLE IF EXISTS {TEAM}",
        f"DROP ROLE IF EXISTS {ANALYSTS}",
    )


async def _proxy(pg: PgCluster, proxy_factory: Any, tmp_path: Path, **settings: Any) -> Any:
    rules_file = tmp_path / "identity.yaml"
    rules_file.write_text(RULES)
    hooks = Enforcer(load_rules(rules_file), await load_catalog(pg.dsn()), None)
    return await proxy_factory(hooks=hooks, rules=rules_file, groups_from_roles=True, **settings)


async def _rows(proxy: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(proxy.dsn(DAVE, DAVE_PW)) as c:
        cur = await c.execute(QUERY)
        return await cur.fetchall()


def _records(proxy: Any, event: str) -> list[dict[str, Any]]:
    lines = proxy.audit_log.read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


async def test_grant_and_revoke_of_a_nested_role_decide_the_rules(
    pg: PgCluster, roles: None, proxy_factory: Any, tmp_path: Path
) -> None:
    proxy = await _proxy(pg, proxy_factory, tmp_path, identity_cache=0)
    assert await _rows(proxy) == ALL_ROWS  # not a member: the analysts rule does not apply

    _sql(pg, f"GRANT {TEAM} TO {DAVE}")  # dave -> team -> analysts
    assert await _rows(proxy) == NORTH_MASKED  # his rule-file region binds the filter

    _sql(pg, f"REVOKE {TEAM} FROM {DAVE}")
    assert await _rows(proxy) == ALL_ROWS

    await proxy.stop()
    mine = [r for r in _records(proxy, "statement") if "people" in r.get("sql", "")]
    groups = [r["groups"] for r in mine if r["user"] == DAVE]
    assert groups == [[], [ANALYSTS, TEAM], []]


async def test_cached_groups_last_the_cache_lifetime(
    pg: PgCluster, roles: None, proxy_factory: Any, tmp_path: Path
) -> None:
    proxy = await _proxy(pg, proxy_factory, tmp_path, identity_cache=3600)
    _sql(pg, f"GRANT {TEAM} TO {DAVE}")
    try:
        assert await _rows(proxy) == NORTH_MASKED
        _sql(pg, f"REVOKE {TEAM} FROM {DAVE}")
        assert await _rows(proxy) == NORTH_MASKED  # cached for the configured lifetime
        proxy.server.identities.forget(DAVE)  # what the lifetime running out does
        assert await _rows(proxy) == ALL_ROWS
    finally:
        _sql(pg, f"REVOKE {TEAM} FROM {DAVE}")


async def test_lookup_failure_refuses_the_login_and_audits_it(
    pg: PgCluster,
    roles: None,
    proxy_factory: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Oversight's own account cannot log in, so it cannot read dave's roles: no session."""
    bad = pg.dsn(password="not-the-password")
    proxy = await _proxy(pg, proxy_factory, tmp_path, upstream=bad)
    with pytest.raises(psycopg.OperationalError, match="identity source roles is unavailable"):
        await _rows(proxy)
    await proxy.stop()
    failures = _records(proxy, "auth_failure")
    assert [(r["user"], r["error"][:6]) for r in failures] == [(DAVE, "28000:")]
    assert "not-the-password" not in proxy.audit_log.read_text()
    assert "identity source roles failed" in caplog.text  # the operator is told why
    assert "not-the-password" not in caplog.text
    assert _records(proxy, "statement") == []
