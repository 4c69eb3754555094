"""Password authentication passes through the proxy to the upstream.

In passthrough mode the upstream checks the client's own credentials: the
proxy relays SCRAM-SHA-256, MD5 and cleartext exchanges (the suite's
pg_hba.conf gives `scramuser` scram-sha-256, `md5user` md5 and `plainuser`
password) and a refusal reaches the client as PostgreSQL's own 28P01.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import asyncpg
import pg8000.native
import psycopg
import pytest
from pgcluster import PgCluster

METHODS = {"scramuser": "scram-sha-256", "md5user": "md5", "plainuser": "password"}
ODD_USER = "odd user-ä"
ODD_PASSWORD = "pä$s wörd:@/%?&"


@pytest.fixture(scope="module")
def odd_role(pg: PgCluster) -> Iterator[str]:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP ROLE IF EXISTS "{ODD_USER}"')
        conn.execute(f"CREATE ROLE \"{ODD_USER}\" LOGIN PASSWORD '{ODD_PASSWORD}'")
    yield ODD_USER
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP ROLE IF EXISTS "{ODD_USER}"')


def _who_psycopg(dsn: str) -> tuple[Any, ...]:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        row = conn.execute("SELECT current_user, session_user, system_user").fetchone()
        assert row is not None
        return tuple(row)


def _who_pg8000(params: dict[str, Any]) -> tuple[Any, ...]:
    con = pg8000.native.Connection(**params, timeout=10)
    try:
        return tuple(con.run("SELECT current_user, session_user, system_user")[0])
    finally:
        con.close()


async def _who_asyncpg(dsn: str) -> tuple[Any, ...]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        row = await conn.fetchrow("SELECT current_user, session_user, system_user")
        assert row is not None
        return tuple(row)
    finally:
        await conn.close()


@pytest.mark.parametrize("user", sorted(METHODS))
async def test_password_methods(endpoint: Any, run_sync: Any, user: str) -> None:
    # system_user (PostgreSQL 16+) shows which method the upstream really used.
    expected = (user, user, f"{METHODS[user]}:{user}")
    assert await run_sync(_who_psycopg, endpoint.dsn(user=user)) == expected
    assert await _who_asyncpg(endpoint.dsn(user=user)) == expected
    assert await run_sync(_who_pg8000, endpoint.params(user=user)) == expected


async def test_odd_user_and_password(endpoint: Any, run_sync: Any, odd_role: str) -> None:
    expected = (ODD_USER, ODD_USER, f"scram-sha-256:{ODD_USER}")
    dsn = endpoint.dsn(user=ODD_USER, password=ODD_PASSWORD)
    assert await run_sync(_who_psycopg, dsn) == expected
    assert await _who_asyncpg(dsn) == expected
    params = endpoint.params(user=ODD_USER, password=ODD_PASSWORD)
    assert await run_sync(_who_pg8000, params) == expected


@pytest.mark.parametrize("user", [*sorted(METHODS), "postgres", "no_such_user"])
async def test_wrong_password(endpoint: Any, run_sync: Any, user: str) -> None:
    message = f'password authentication failed for user "{user}"'
    with pytest.raises(asyncpg.InvalidPasswordError) as apg:
        await _who_asyncpg(endpoint.dsn(user=user, password="wrong"))
    assert (apg.value.sqlstate, str(apg.value)) == ("28P01", message)

    with pytest.raises(psycopg.OperationalError) as psy:
        await run_sync(_who_psycopg, endpoint.dsn(user=user, password="wrong"))
    assert f"FATAL:  {message}" in str(psy.value)

    with pytest.raises(pg8000.native.DatabaseError) as p8k:
        await run_sync(_who_pg8000, endpoint.params(user=user, password="wrong"))
    fields = p8k.value.args[0]
    assert (fields["S"], fields["C"], fields["M"]) == ("FATAL", "28P01", message)

    # The proxy is still serving after refusals.
    assert await _who_asyncpg(endpoint.dsn(user="scramuser")) == (
        "scramuser",
        "scramuser",
        "scram-sha-256:scramuser",
    )


async def test_missing_password(endpoint: Any, run_sync: Any) -> None:
    # libpq gives up when asked for a password it lacks; the proxy must cope.
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        await run_sync(
            _who_psycopg, endpoint.dsn(user="scramuser", password="") + "?passfile=/nonexistent"
        )
    assert await run_sync(_who_psycopg, endpoint.dsn(user="md5user")) == (
        "md5user",
        "md5user",
        "md5:md5user",
    )


async def test_unknown_database(endpoint: Any) -> None:
    with pytest.raises(asyncpg.InvalidCatalogNameError) as info:
        await asyncpg.connect(endpoint.dsn(dbname="no_such_db"), timeout=10)
    assert info.value.sqlstate == "3D000"
    assert str(info.value) == 'database "no_such_db" does not exist'


async def test_startup_parameters_relayed(endpoint: Any) -> None:
    conn = await asyncpg.connect(
        endpoint.dsn(),
        server_settings={"application_name": "auth-test", "search_path": "pg_catalog, public"},
        timeout=10,
    )
    try:
        row = await conn.fetchrow(
            "SELECT current_setting('application_name'), current_schemas(false)"
        )
        assert row is not None and tuple(row) == ("auth-test", ["pg_catalog", "public"])
    finally:
        await conn.close()
