"""TLS between client and proxy, with a CA and certificate made by trustme.

The proxy terminates TLS (`tls_cert`/`tls_key`); the upstream leg stays
plain here. SCRAM is relayed, so the proxy must never offer
SCRAM-SHA-256-PLUS: channel binding cannot survive a terminated channel
(PROTOCOL.md items 11, 12, 19, 20).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pg8000.native
import psycopg
import pytest
import trustme
from polling import until_running


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    issued = ca.issue_cert("localhost", "127.0.0.1")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    issued.private_key_pem.write_to_path(str(d / "server.key"))
    (d / "server.pem").write_bytes(b"".join(p.bytes() for p in issued.cert_chain_pems))
    trustme.CA().cert_pem.write_to_path(str(d / "other-ca.pem"))
    return Certs(d / "ca.pem", d / "server.pem", d / "server.key", d / "other-ca.pem")


@pytest.fixture
async def tls_proxy(proxy_factory: Any, certs: Certs) -> Any:
    return await proxy_factory(tls_cert=str(certs.cert), tls_key=str(certs.key))


def _session(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        row = conn.execute("SELECT current_user, 6 * 7").fetchone()
        return {
            "ssl": conn.pgconn.ssl_in_use,
            "row": row,
        }


@pytest.mark.parametrize("user", ["scramuser", "md5user", "plainuser"])
async def test_sslmode_require(tls_proxy: Any, run_sync: Any, user: str) -> None:
    got = await run_sync(_session, tls_proxy.dsn(user=user) + "?sslmode=require")
    assert got["ssl"] is True
    assert got["row"] == (user, 42)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
async def test_verify_full(tls_proxy: Any, certs: Certs, run_sync: Any, host: str) -> None:
    dsn = (
        f"host={host} hostaddr=127.0.0.1 port={tls_proxy.port} dbname=oversight_test"
        f" user=scramuser password={tls_proxy.pg.roles['scramuser']}"
        f" sslmode=verify-full sslrootcert={certs.ca}"
    )
    got = await run_sync(_session, dsn)
    assert (got["ssl"], got["row"]) == (True, ("scramuser", 42))


async def test_verify_full_rejects_unknown_ca(tls_proxy: Any, certs: Certs, run_sync: Any) -> None:
    dsn = tls_proxy.dsn() + f"?sslmode=verify-full&sslrootcert={certs.other_ca}"
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        await run_sync(_session, dsn)


async def test_verify_full_rejects_wrong_host(tls_proxy: Any, certs: Certs, run_sync: Any) -> None:
    dsn = (
        f"host=db.example.invalid hostaddr=127.0.0.1 port={tls_proxy.port}"
        f" dbname=oversight_test user=postgres password={tls_proxy.pg.password}"
        f" sslmode=verify-full sslrootcert={certs.ca}"
    )
    with pytest.raises(psycopg.OperationalError, match="does not match host name"):
        await run_sync(_session, dsn)


async def test_plain_client_still_served(tls_proxy: Any, run_sync: Any) -> None:
    got = await run_sync(_session, tls_proxy.dsn() + "?sslmode=disable")
    assert (got["ssl"], got["row"]) == (False, ("postgres", 42))


async def test_channel_binding_required_fails_cleanly(tls_proxy: Any, run_sync: Any) -> None:
    dsn = tls_proxy.dsn(user="scramuser") + "?sslmode=require&channel_binding=require"
    with pytest.raises(psycopg.OperationalError, match="channel binding"):
        await run_sync(_session, dsn)
    got = await run_sync(_session, tls_proxy.dsn(user="scramuser") + "?sslmode=require")
    assert got["row"] == ("scramuser", 42)


async def test_direct_tls_negotiation(tls_proxy: Any, certs: Certs, run_sync: Any) -> None:
    # libpq 17+: TLS handshake first, no SSLRequest; ALPN "postgresql" is required.
    dsn = tls_proxy.dsn() + f"?sslmode=verify-full&sslnegotiation=direct&sslrootcert={certs.ca}"
    dsn = dsn.replace("@127.0.0.1:", "@localhost:")
    got = await run_sync(_session, dsn)
    assert (got["ssl"], got["row"]) == (True, ("postgres", 42))


async def test_asyncpg_and_pg8000_over_tls(tls_proxy: Any, certs: Certs, run_sync: Any) -> None:
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    conn = await asyncpg.connect(tls_proxy.dsn(user="scramuser"), ssl=ctx, timeout=10)
    try:
        assert await conn.fetchval("SELECT $1::int * 2", 21) == 42
        assert conn.get_server_pid() == await conn.fetchval("SELECT pg_backend_pid()")
    finally:
        await conn.close()

    def via_pg8000() -> Any:
        con = pg8000.native.Connection(
            **tls_proxy.params(user="md5user"), ssl_context=ctx, timeout=10
        )
        try:
            return con.run("SELECT current_user")
        finally:
            con.close()

    assert await run_sync(via_pg8000) == [["md5user"]]


async def test_require_against_proxy_without_tls(proxy_factory: Any, run_sync: Any) -> None:
    plain = await proxy_factory()
    with pytest.raises(psycopg.OperationalError, match="server does not support SSL"):
        await run_sync(_session, plain.dsn() + "?sslmode=require")
    got = await run_sync(_session, plain.dsn() + "?sslmode=prefer")
    assert (got["ssl"], got["row"]) == (False, ("postgres", 42))


async def test_cancel_over_tls(pg: Any, tls_proxy: Any) -> None:
    # libpq 17's cancel connection follows sslmode: CancelRequest inside TLS.
    dsn = tls_proxy.dsn() + "?sslmode=require"
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    async with conn:
        assert conn.pgconn.ssl_in_use
        task = asyncio.create_task(conn.execute("SELECT pg_sleep(20), 'tls-cancel'"))
        await until_running(pg.dsn(), "tls-cancel")
        await conn.cancel_safe(timeout=10)
        with pytest.raises(psycopg.errors.QueryCanceled):
            await asyncio.wait_for(task, 10)
        cur = await conn.execute("SELECT 'after cancel'")
        assert await cur.fetchone() == ("after cancel",)
