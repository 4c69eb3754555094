"""Proxy auth mode end to end: Oversight checks SCRAM verifiers; upstream sees its own account."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pgcluster import PgCluster

from proxy.scram import make_verifier


@pytest.fixture
async def proxy_auth(pg: PgCluster, proxy_factory: Any, tmp_path: Path) -> Any:
    users = tmp_path / "users.scram"
    users.write_text(f"analyst:{make_verifier('s3cret-pw')}\n")
    users.chmod(0o600)
    return await proxy_factory(auth="proxy", users_file=str(users))


def _dsn(p: Any, user: str, password: str) -> str:
    return f"postgresql://{user}:{password}@{p.host}:{p.port}/{p.pg.dbname}"


async def test_verifier_login_runs_as_service_account(pg: PgCluster, proxy_auth: Any) -> None:
    async with await psycopg.AsyncConnection.connect(_dsn(proxy_auth, "analyst", "s3cret-pw")) as c:
        cur = await c.execute("SELECT current_user")
        assert await cur.fetchone() == (pg.user,)  # the upstream URI's account
    await proxy_auth.stop()
    records = [json.loads(line) for line in proxy_auth.audit_log.read_text().splitlines()]
    statements = [r for r in records if r["event"] == "statement"]
    assert statements and all(r["user"] == "analyst" for r in statements)


@pytest.mark.parametrize(("user", "password"), [("analyst", "wrong"), ("nobody", "s3cret-pw")])
async def test_wrong_password_or_unknown_user(proxy_auth: Any, user: str, password: str) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed") as e:
        await psycopg.AsyncConnection.connect(_dsn(proxy_auth, user, password))
    assert e.value.sqlstate in (None, "28P01")  # libpq reports startup errors without it
    await proxy_auth.stop()
    records = [json.loads(line) for line in proxy_auth.audit_log.read_text().splitlines()]
    assert [r["user"] for r in records if r["event"] == "auth_failure"] == [user]
