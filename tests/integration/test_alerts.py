"""Alerts end to end: a real proxy, a real PostgreSQL, receivers the test starts.

The webhook receiver is plain HTTP on asyncio streams; the syslog receiver
speaks TLS with a trustme CA. Nothing here measures time: the tests poll
until a receiver or a counter shows what they expect, and "delivery never
delays a statement" is shown by counting (every statement completes, the
queue and drop counters account for every alert).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import trustme
from alertreceivers import HttpReceiver, SyslogTlsReceiver, cef_extension
from pgcluster import PgCluster
from polling import eventually

from proxy.audit import verify_files
from proxy.rules import load_rules
from proxy.run import Service, alert_stats
from proxy.settings import Settings

COPY = "COPY (SELECT 1) TO STDOUT"  # refused: copy is not among the default statement kinds


@pytest.fixture
async def tls_receiver(tmp_path: Path) -> AsyncIterator[tuple[SyslogTlsReceiver, Path]]:
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    rx = await SyslogTlsReceiver(ctx).start()
    yield rx, ca_file
    await rx.stop()


Start = Callable[[str], Any]


@pytest.fixture
async def serve(pg: PgCluster, tmp_path: Path) -> AsyncIterator[Start]:
    services: list[Service] = []

    async def start(alerts_yaml: str) -> Service:
        rules = tmp_path / "rules.yaml"
        rules.write_text("version: 1\n" + alerts_yaml)
        settings = Settings(
            listen="127.0.0.1:0",
            upstream=pg.dsn(),
            rules=str(rules),
            audit_log=str(tmp_path / "audit.jsonl"),
            admin_listen="127.0.0.1:0",
        )
        service = Service(settings, load_rules(rules))
        await service.start()
        services.append(service)
        return service

    yield start
    for s in services:
        await s.stop()


def proxy_dsn(pg: PgCluster, service: Service) -> str:
    assert service.server is not None
    return pg.dsn().replace(f"@{pg.host}:{pg.port}/", f"@127.0.0.1:{service.server.port}/")


async def refused_copy(conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.PostgresError) as e:
        await conn.execute(COPY)
    assert e.value.sqlstate == "42501"


def audit_events(path: Path, event: str) -> list[dict[str, Any]]:
    lines = path.read_bytes().splitlines()
    return [r for r in map(orjson.loads, lines) if r["event"] == event]


async def test_a_blocked_copy_alerts_both_destinations_and_repeats_are_counted(
    pg: PgCluster, serve: Start, tls_receiver: tuple[SyslogTlsReceiver, Path], tmp_path: Path
) -> None:
    syslog, ca_file = tls_receiver
    web = await HttpReceiver().start()
    try:
        service = await serve(
            "alerts:\n"
            f"  - {{id: it-web, when: {{decisions: [block]}}, webhook: '{web.url}',"
            " suppress: 5s}\n"
            f"  - {{id: it-syslog, when: {{decisions: [block], canaries: true}},"
            f" syslog: 'tcp+tls://127.0.0.1:{syslog.port}', ca: '{ca_file}', suppress: 5s}}\n"
        )
        conn = await asyncpg.connect(proxy_dsn(pg, service), timeout=10)
        try:
            await refused_copy(conn)
            await until(lambda: web.bodies and syslog.messages, timeout=10)
            first = web.bodies[0]
            assert first["user"] == pg.user and first["decision"] == "block"
            assert first["rule"] and first["fingerprint"] and first["count"] == 1
            assert "purpose" in first and first["purpose"] is None
            ext = cef_extension(syslog.messages[0])
            assert ext["suser"] == pg.user and ext["cs2"] == first["fingerprint"]
            assert ext["cnt"] == "1" and ext["cs1"] == first["rule"]

            for _ in range(10):  # inside the 5 s window: counted, not sent
                await refused_copy(conn)
            await until(lambda: len(web.bodies) >= 2 and len(syslog.messages) >= 2)
        finally:
            await conn.close()
        # The window closed: one message carries the ten repeats.
        assert [b["count"] for b in web.bodies] == [1, 10]
        assert [cef_extension(m)["cnt"] for m in syslog.messages] == ["1", "10"]
        stats = alert_stats()
        assert stats.get("it-web", "suppressed") == 10 and stats.get("it-web", "sent") == 2
        assert stats.get("it-syslog", "suppressed") == 10
        audit = tmp_path / "audit.jsonl"
        await until(lambda: len(audit_events(audit, "alert")) >= 4)
        sent = audit_events(audit, "alert")
        assert {(e["destination"], e["status"]) for e in sent} == {
            ("it-web", "sent"),
            ("it-syslog", "sent"),
        }
        assert any(e["detail"] == "HTTP 202" for e in sent)
    finally:
        await web.stop()
    assert verify_files([str(audit)], None).ok  # alert events are in the same hash chain


async def test_a_hanging_or_dead_receiver_costs_statements_nothing(
    pg: PgCluster, serve: Start, tmp_path: Path
) -> None:
    hung = await HttpReceiver(hang=True).start()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    try:
        service = await serve(
            "alerts:\n"
            f"  - {{id: it-hung, when: {{decisions: [block]}}, webhook: '{hung.url}',"
            " queue: 2, timeout: 60s, retries: 0}\n"
            f"  - {{id: it-dead, when: {{decisions: [block]}},"
            f" syslog: 'tcp://127.0.0.1:{dead_port}', retries: 0}}\n"
        )
        conn = await asyncpg.connect(proxy_dsn(pg, service), timeout=10)
        try:
            for _ in range(20):
                await refused_copy(conn)
                assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
        stats = alert_stats()
        hung_dest = next(d for d in service.alerter.destinations if d.route.id == "it-hung")
        # Every alert accounted for: one with the hung receiver, two queued, the rest dropped.
        assert hung_dest.queue.qsize() == 2
        assert stats.get("it-hung", "dropped") == 20 - 2 - 1
        assert stats.get("it-hung", "sent") == 0
        await until(lambda: stats.get("it-dead", "failed") == 20)
        audit = tmp_path / "audit.jsonl"
        statements = audit_events(audit, "statement")
        assert len(statements) == 40  # all ran, none waited for a receiver
        await until(lambda: len(audit_events(audit, "alert")) >= 17 + 20)
        events = audit_events(audit, "alert")
        drops = [e for e in events if e["destination"] == "it-hung"]
        assert len(drops) == 17 and all(e["status"] == "dropped" for e in drops)
        assert "queue full (2 waiting)" in drops[0]["detail"] and drops[0]["user"] == pg.user
        fails = [e for e in events if e["destination"] == "it-dead"]
        assert len(fails) == 20 and all(e["status"] == "failed" for e in fails)
        assert "1 attempts" in fails[0]["detail"]
    finally:
        await hung.stop()


async def until(cond: Callable[[], Any], timeout: float = 15.0) -> None:
    async def probe() -> bool:
        return bool(cond())

    await eventually(probe, timeout=timeout)


async def test_alerts_test_command_says_what_each_destination_answered(
    tls_receiver: tuple[SyslogTlsReceiver, Path], tmp_path: Path
) -> None:
    syslog, ca_file = tls_receiver
    web = await HttpReceiver().start()
    broken = await HttpReceiver(status=500).start()
    rules = tmp_path / "alerts.yaml"
    rules.write_text(
        "version: 1\nalerts:\n"
        f"  - {{id: web, when: {{decisions: [block]}}, webhook: '{web.url}?token=s3cret',"
        " format: ocsf}\n"
        f"  - {{id: broken, when: {{decisions: [block]}}, webhook: '{broken.url}'}}\n"
        f"  - {{id: tls, when: {{decisions: [block]}},"
        f" syslog: 'tcp+tls://127.0.0.1:{syslog.port}', ca: '{ca_file}'}}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVERSIGHT_")}
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy.cli", "alerts", "test", str(rules),
            stdout=asyncio.subprocess.PIPE, env=env, cwd=tmp_path,
        )  # fmt: skip
        out, _ = await proc.communicate()
    finally:
        await web.stop()
        await broken.stop()
    text = out.decode()
    assert proc.returncode == 1  # one destination failed
    assert f"web: ocsf to http://127.0.0.1:{web.port}/alerts: ok: HTTP 202" in text
    assert "broken: json to" in text and "FAILED: HTTP 500" in text
    assert "tls: cef to tcp+tls://127.0.0.1" in text and ": ok: sent " in text
    assert "s3cret" not in text
    assert web.bodies[0]["class_uid"] == 2004 and web.bodies[0]["finding_info"]["uid"]
    await until(lambda: syslog.messages)
    assert cef_extension(syslog.messages[0])["suser"] == "oversight-test"
