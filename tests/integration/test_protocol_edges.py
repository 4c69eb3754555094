"""Protocol edge cases through the proxy, driven with a raw client (PROTOCOL.md items 11-28)."""

from __future__ import annotations

import struct
from typing import Any

import psycopg
import pytest
from polling import eventually, running_upstream, until_running
from rawclient import Raw, errors_in

from proxy import messages as m
from proxy.errors import Blocked
from proxy.hooks import Admission, Hooks, StreamLimits
from proxy.identity import SessionFacts


async def test_negotiate_protocol_version_sent_once(pg: Any, proxy_factory: Any) -> None:
    p = await proxy_factory()
    c = await Raw.open(p.port)
    version = (3 << 16) | 9999
    body = m.I32.pack(version) + m.cstr("user") + m.cstr(pg.user) + m.cstr("database")
    body += m.cstr(pg.dbname) + m.cstr("_pq_.bogus") + m.cstr("1") + b"\0"
    c.send(m.I32.pack(len(body) + 4) + body)
    t, payload = await c.frame()
    assert t == b"v"
    r = m.Reader(payload)
    assert r.i32() == 0  # newest minor version we speak
    assert r.i32() == 1
    assert r.cstr() == "_pq_.bogus"
    await c.authenticate(pg.user, pg.password)  # and no second 'v' on the way
    frames = await c.query("SELECT 1")
    assert [t for t, _ in frames] == [b"T", b"D", b"C", b"Z"]
    c.close()


async def test_gssenc_and_ssl_requests_answered_n_then_startup(pg: Any, proxy_factory: Any) -> None:
    p = await proxy_factory()
    c = await Raw.open(p.port)
    c.send(m.I32.pack(8) + m.I32.pack(m.GSSENC_REQUEST))
    assert await c.r.readexactly(1) == b"N"
    c.send(m.SSL_REQUEST_BYTES)
    assert await c.r.readexactly(1) == b"N"
    await c.login(pg.user, pg.password, pg.dbname)
    assert [t for t, _ in await c.query("SELECT 2")][-1] == b"Z"
    c.close()


async def test_replication_connection_refused(pg: Any, proxy_factory: Any) -> None:
    p = await proxy_factory()
    c = await Raw.open(p.port)
    c.send(m.startup_message({"user": pg.user, "database": pg.dbname, "replication": "database"}))
    t, body = await c.frame()
    fields = m.error_fields(body)
    assert (t, fields["S"], fields["C"]) == (b"E", "FATAL", "0A000")
    assert "replication" in fields["M"]


async def test_startup_packet_over_limit(proxy_factory: Any) -> None:
    p = await proxy_factory()
    c = await Raw.open(p.port)
    c.send(m.I32.pack(20_000) + m.I32.pack(m.PROTOCOL_3_0) + b"x" * 100)
    _, body = await c.frame()
    assert m.error_fields(body)["C"] == "08P01"


async def test_startup_timeout(proxy_factory: Any) -> None:
    p = await proxy_factory(startup_timeout=0.5)
    c = await Raw.open(p.port)
    t, body = await c.frame(timeout=5)
    fields = m.error_fields(body)
    assert (t, fields["C"]) == (b"E", "08P01") and "timeout" in fields["M"]
    assert await c.read_to_eof() == b""


async def test_bytes_before_tls_handshake_are_refused(proxy_factory: Any, tmp_path: Any) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    p = await proxy_factory(tls_cert=str(cert_file), tls_key=str(key_file))
    c = await Raw.open(p.port)
    # SSLRequest and a plaintext startup in one packet (CVE-2021-23214 shape).
    c.send(m.SSL_REQUEST_BYTES + m.startup_message({"user": "x"}))
    assert await c.r.readexactly(1) == b"S"
    _, body = await c.frame()
    assert m.error_fields(body)["C"] == "08P01"


async def test_malformed_message_ends_only_that_session(pg: Any, proxy_factory: Any) -> None:
    p = await proxy_factory(max_message_size=1 << 20)
    bystander = await psycopg.AsyncConnection.connect(p.dsn(), autocommit=True)
    for bad in (
        b"\x01" + struct.pack("!I", 8) + b"abcd",
        b"Q" + struct.pack("!I", 2),
        b"Q" + struct.pack("!I", 50 << 20),
    ):
        c = await Raw.open(p.port)
        await c.login(pg.user, pg.password, pg.dbname)
        c.send(bad)
        t, body = await c.frame()
        fields = m.error_fields(body)
        assert (t, fields["S"], fields["C"]) == (b"E", "FATAL", "08P01"), fields
        assert await c.read_to_eof() == b""
        cur = await bystander.execute("SELECT 40 + 2")
        assert await cur.fetchone() == (42,)
    await bystander.close()


async def test_max_clients(pg: Any, proxy_factory: Any) -> None:
    p = await proxy_factory(max_clients=2)
    a = await psycopg.AsyncConnection.connect(p.dsn())
    b = await psycopg.AsyncConnection.connect(p.dsn())
    with pytest.raises(psycopg.OperationalError, match="too many clients"):
        await psycopg.AsyncConnection.connect(p.dsn())
    await a.close()

    async def connect() -> psycopg.AsyncConnection[Any] | None:
        try:
            return await psycopg.AsyncConnection.connect(p.dsn())
        except psycopg.OperationalError:  # the proxy has not seen the close yet
            return None

    c = await eventually(connect, what="a free client slot after a close")
    await b.close()
    await c.close()


async def test_client_vanishing_mid_query_cancels_upstream(pg: Any, proxy_factory: Any) -> None:
    p = await proxy_factory()
    c = await Raw.open(p.port)
    await c.login(pg.user, pg.password, pg.dbname)
    c.send(m.query("SELECT pg_sleep(30), 'vanish-marker'"))
    await c.w.drain()
    await until_running(pg.dsn(), "vanish-marker")
    c.w.transport.abort()

    async def gone() -> bool:
        return await running_upstream(pg.dsn(), "vanish-marker") == 0

    await eventually(gone, what="the upstream statement to be cancelled")


async def test_upstream_fatal_reaches_the_client_alone(pg: Any, proxy_factory: Any) -> None:
    p = await proxy_factory()
    c = await Raw.open(p.port)
    await c.login(pg.user, pg.password, pg.dbname)
    frames = await c.query("SELECT pg_backend_pid()")
    pid = int(next(b for t, b in frames if t == b"D")[6:])
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    rest = await c.read_to_eof()
    errs = []
    while rest:
        (n,) = struct.unpack("!I", rest[1:5])
        if rest[:1] == b"E":
            errs.append(m.error_fields(rest[5 : 1 + n]))
        rest = rest[1 + n :]
    # The backend's own FATAL says why; the proxy adds no second one (08006
    # is for an upstream that vanishes without a word).
    assert [(e["S"], e["C"]) for e in errs] == [("FATAL", "57P01")]


async def test_cancel_request_after_ssl_request(pg: Any, proxy_factory: Any) -> None:
    p = await proxy_factory()
    c = await Raw.open(p.port)
    await c.login(pg.user, pg.password, pg.dbname)
    ((pid, key),) = p.server.connections  # what BackendKeyData gave the client
    frames = await c.query("SELECT pg_backend_pid()")
    assert int(next(b for t, b in frames if t == b"D")[6:]) == pid  # real PID kept (item 16)
    c.send(m.query("SELECT pg_sleep(20), 'ssl-cancel-marker'"))
    await c.w.drain()
    await until_running(pg.dsn(), "ssl-cancel-marker")
    x = await Raw.open(p.port)
    x.send(m.SSL_REQUEST_BYTES)
    assert await x.r.readexactly(1) == b"N"
    x.send(m.cancel_request(pid, key))
    assert await x.read_to_eof() == b""
    frames = await c.until(b"Z")
    assert [e["C"] for e in errors_in(frames)] == ["57014"]


async def test_cancel_with_wrong_key_does_nothing(pg: Any, proxy_factory: Any) -> None:
    p = await proxy_factory()
    c = await Raw.open(p.port)
    await c.login(pg.user, pg.password, pg.dbname)
    ((pid, key),) = p.server.connections
    x = await Raw.open(p.port)
    x.send(m.cancel_request(pid, bytes(b ^ 0xFF for b in key)))
    assert await x.read_to_eof() == b""
    frames = await c.query("SELECT pg_sleep(0.3), 1")
    assert errors_in(frames) == []


# ---------------------------------------------------------------- the two seams


class BlockOne(Hooks):
    """Refuses any statement mentioning `forbidden`; caps results of `capped` at 5 rows."""

    async def decide(
        self,
        sql: str,
        facts: SessionFacts,
        *,
        extended: bool,
        param_types: tuple[int, ...] | None = None,
    ) -> Admission:
        if "forbidden" in sql:
            err = Blocked("test-rule", "forbidden word")
            return Admission(action="block", error=err, rules=("test-rule",))
        if "capped" in sql:
            return Admission(limits=StreamLimits(max_rows=5, rule="test-cap"))
        return Admission()


async def test_blocked_statement_keeps_session_usable(pg: Any, proxy_factory: Any) -> None:
    p = await proxy_factory(hooks=BlockOne())
    async with await psycopg.AsyncConnection.connect(p.dsn(), autocommit=True) as conn:
        for prepare in (False, True):  # simple, then extended protocol
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="blocked by test-rule"):
                await conn.execute("SELECT 'forbidden'", prepare=prepare)
            cur = await conn.execute("SELECT 1", prepare=prepare)
            assert await cur.fetchone() == (1,)
        # Inside a transaction a refusal fails it, as any error would upstream.
        await conn.execute("CREATE TEMP TABLE seam (x int)")
        for prepare in (False, True):
            await conn.execute("BEGIN")
            await conn.execute("INSERT INTO seam VALUES (1)")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute("SELECT %s::text AS forbidden", ["x"], prepare=prepare)
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
            with pytest.raises(psycopg.errors.InFailedSqlTransaction):
                await conn.execute("SELECT count(*) FROM seam")
            await conn.execute("COMMIT")  # of a failed transaction: a rollback
        cur = await conn.execute("SELECT count(*) FROM seam")
        assert await cur.fetchone() == (0,)


async def test_observer_stops_stream_after_n_rows(pg: Any, proxy_factory: Any) -> None:
    p = await proxy_factory(hooks=BlockOne())
    async with await psycopg.AsyncConnection.connect(p.dsn(), autocommit=True) as conn:
        for binary in (False, True):
            cur = conn.cursor(binary=binary)
            with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="limit of 5 rows"):
                await cur.execute("SELECT g AS capped FROM generate_series(1, 100000) g")
            cur = await conn.execute("SELECT 7")
            assert await cur.fetchone() == (7,)
    # The rows that did reach the client are exactly the cap, seen from the wire.
    c = await Raw.open(p.port)
    await c.login(pg.user, pg.password, pg.dbname)
    frames = await c.query("SELECT g AS capped FROM generate_series(1, 100000) g")
    assert sum(t == b"D" for t, _ in frames) == 5
    assert [e["C"] for e in errors_in(frames)] == ["54000"]
    assert await running_upstream(pg.dsn(), "AS capped") == 0


# ---------------------------------------------------------------- fast-path function calls


def _function_call(oid: int, arg: bytes) -> bytes:
    body = struct.pack("!ih", oid, 1) + struct.pack("!h", 0)  # one text-format argument
    body += struct.pack("!h", 1) + struct.pack("!i", len(arg)) + arg + struct.pack("!h", 0)
    return b"F" + struct.pack("!I", len(body) + 4) + body


async def _int4abs_oid(pg: Any) -> int:
    async with await psycopg.AsyncConnection.connect(pg.dsn()) as conn:
        cur = await conn.execute("SELECT 'int4abs'::regproc::oid::int")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def test_function_call_relayed_without_policy(pg: Any, proxy_factory: Any) -> None:
    oid = await _int4abs_oid(pg)
    p = await proxy_factory()
    c = await Raw.open(p.port)
    await c.login(pg.user, pg.password, pg.dbname)
    c.send(_function_call(oid, b"-5"))
    frames = await c.until(b"Z")
    assert [t for t, _ in frames] == [b"V", b"Z"]
    assert frames[0][1] == struct.pack("!i", 1) + b"5"


async def test_function_call_refused_for_users_with_a_policy(
    pg: Any, proxy_factory: Any, tmp_path: Any
) -> None:
    from proxy.catalog import load_catalog
    from proxy.enforce import Enforcer
    from proxy.rules import load_rules

    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(
        "version: 1\nusers:\n  scramuser: {groups: [analysts]}\nrules:\n"
        "  - {id: hide, match: {groups: [analysts]}, table: public.nothing_here, access: deny}\n"
    )
    oid = await _int4abs_oid(pg)
    hooks = Enforcer(load_rules(rules_file), await load_catalog(pg.dsn()), None)
    p = await proxy_factory(hooks=hooks)
    c = await Raw.open(p.port)
    await c.login("scramuser", pg.roles["scramuser"], pg.dbname)
    c.send(_function_call(oid, b"-5"))
    frames = await c.until(b"Z")
    assert [e["C"] for e in errors_in(frames)] == ["42501"]
    assert "fastpath" in errors_in(frames)[0]["M"]
    assert [t for t, _ in await c.query("SELECT 1")][-1] == b"Z"  # the session goes on
