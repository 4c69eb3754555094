"""`oversight serve` as operators run it: bad settings exit 2, TLS on both legs, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trustme
from openrules import OPEN_RULES
from pgcluster import PgCluster, running_cluster
from polling import eventually, until_running
from serveproc import start_serve


async def _refuses(dsn: str) -> bool:
    try:
        conn = await psycopg.AsyncConnection.connect(dsn, connect_timeout=2)
    except psycopg.OperationalError:
        return True
    await conn.close()
    return False


def _serve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("OVERSIGHT_")}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", "serve", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({}, "no upstream"),
        ({"OVERSIGHT_LISTEN": "nowhere:notaport"}, "bad setting listen: bad port"),
        ({"OVERSIGHT_LISTEN": "127.0.0.1:70000"}, "bad setting listen: port out of range"),
        (
            {"OVERSIGHT_TLS_CERT": "/nonexistent.pem", "OVERSIGHT_TLS_KEY": "/nonexistent.key"},
            "cannot read /nonexistent.pem",
        ),
        ({"OVERSIGHT_TLS_CERT": "/etc/hostname"}, "tls_cert and tls_key must be set together"),
        ({"OVERSIGHT_UPSTREAM": "mysql://x@y/z"}, "postgresql:// URI"),
        ({"OVERSIGHT_UPSTREAM": "postgresql://x@y/z?sslmode=bogus"}, "unknown sslmode"),
        ({"OVERSIGHT_MAX_CLIENTS": "-3"}, "bad setting max_clients"),
    ],
)
def test_bad_settings_one_line_exit_2(env: dict[str, str], says: str, tmp_path: Path) -> None:
    env = {"OVERSIGHT_UPSTREAM": "postgresql://u:p@127.0.0.1:1/db", **env}
    if "no upstream" in says:
        env.pop("OVERSIGHT_UPSTREAM")
    os.chdir(tmp_path)  # no stray oversight.toml
    r = _serve(env)
    assert r.returncode == 2, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], r.stderr


def test_broken_rules_refuse_to_start(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\nrules:\n  - id: x\n    table: public.t\n    columns: {a: bogus}\n"
    )
    r = _serve(
        {"OVERSIGHT_UPSTREAM": "postgresql://u:p@127.0.0.1:1/db", "OVERSIGHT_RULES": str(rules)}
    )
    assert r.returncode == 2
    assert "rule x" in r.stderr and "columns" in r.stderr


async def test_sigterm_lets_sessions_finish(pg: Any, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(OPEN_RULES)
    audit = tmp_path / "audit.jsonl"
    served = await asyncio.to_thread(
        start_serve,
        {
            "OVERSIGHT_LISTEN": "127.0.0.1:0",
            "OVERSIGHT_UPSTREAM": pg.dsn() + "?sslmode=disable",
            "OVERSIGHT_RULES": str(tmp_path / "rules.yaml"),
            "OVERSIGHT_AUDIT_LOG": str(audit),
            "OVERSIGHT_ADMIN_LISTEN": "",
            "OVERSIGHT_SHUTDOWN_GRACE": "20",
        },
    )
    dsn = pg.dsn().replace(f":{pg.port}/", f":{served.port}/")
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    query = asyncio.create_task(conn.execute("SELECT pg_sleep(2), 'drained'"))
    await until_running(pg.dsn(), "'drained'")
    served.proc.send_signal(signal.SIGTERM)
    # No new sessions while draining (the running statement still finishes, below).
    await eventually(lambda: _refuses(dsn), what="the proxy to stop accepting sessions")
    cur = await query
    assert (await cur.fetchone())[1] == "drained"  # type: ignore[index]
    await conn.close()
    assert await asyncio.to_thread(served.proc.wait, 15) == 0
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    sleeps = [r for r in records if "pg_sleep" in (r.get("sql") or "")]
    assert len(sleeps) == 1 and sleeps[0]["error"] is None  # it ran to the end
    assert any(r["event"] == "disconnect" for r in records)


# ---------------------------------------------------------------- TLS on both legs


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    out = {"ca": d / "ca.pem", "cert": d / "cert.pem", "key": d / "key.pem"}
    ca.cert_pem.write_to_path(out["ca"])
    cert.cert_chain_pems[0].write_to_path(out["cert"])
    cert.private_key_pem.write_to_path(out["key"])
    return out


def _system_pg_bin() -> str:
    """A PostgreSQL build with TLS: the pgserver wheel's has none (.ci/run installs Debian's)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    assert found, "TLS upstream tests need Debian's postgresql package (see .ci/run)"
    return str(found[-1].parent)


@pytest.fixture(scope="module")
def tls_upstream(tls_files: dict[str, Path]) -> Iterator[PgCluster]:
    """A second cluster, from a TLS-capable build, with ssl = on."""
    saved = {k: os.environ.pop(k, None) for k in ("OVERSIGHT_TEST_DSN", "OVERSIGHT_TEST_PG_BIN")}
    os.environ["OVERSIGHT_TEST_PG_BIN"] = _system_pg_bin()
    try:
        with running_cluster() as pg:
            assert pg.datadir is not None
            owner = pg.datadir.stat()
            for name in ("cert", "key"):
                target = pg.datadir / f"oversight-test-{name}.pem"
                shutil.copy(tls_files[name], target)
                os.chown(target, owner.st_uid, owner.st_gid)
                target.chmod(0o600)
            with psycopg.connect(pg.dsn(), autocommit=True) as conn:
                conn.execute("ALTER SYSTEM SET ssl_cert_file = 'oversight-test-cert.pem'")
                conn.execute("ALTER SYSTEM SET ssl_key_file = 'oversight-test-key.pem'")
                conn.execute("ALTER SYSTEM SET ssl = on")
                conn.execute("SELECT pg_reload_conf()")
            with psycopg.connect(pg.dsn() + "?sslmode=require") as conn:
                assert conn.pgconn.ssl_in_use
            yield pg
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v


async def test_scram_with_tls_on_both_legs(
    tls_upstream: Any, proxy_factory: Any, tls_files: dict[str, Path]
) -> None:
    pg = tls_upstream
    p = await proxy_factory(
        upstream=pg.dsn() + "?sslmode=require",
        tls_cert=str(tls_files["cert"]),
        tls_key=str(tls_files["key"]),
    )
    base = f"postgresql://scramuser:{pg.roles['scramuser']}@127.0.0.1:{p.port}/{pg.dbname}"
    dsn = base + f"?sslmode=verify-full&sslrootcert={tls_files['ca']}"
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        assert conn.pgconn.ssl_in_use
        cur = await conn.execute(
            "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        )
        assert await cur.fetchone() == ("scramuser", True)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        await psycopg.AsyncConnection.connect(
            p.dsn(user="scramuser", password="wrong") + "?sslmode=require"
        )
    # channel_binding=require cannot be honoured through a TLS-terminating proxy.
    with pytest.raises(psycopg.OperationalError, match="channel binding"):
        await psycopg.AsyncConnection.connect(dsn + "&channel_binding=require")
