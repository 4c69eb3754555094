"""The admin HTTP endpoint: metrics count what happened, probes answer, the dashboard is guarded.

These run the real AdminServer on a loopback port with its own Metrics
instance, and the dashboard in headless Chromium (Debian's `chromium`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from records import done

from proxy import metrics as metrics_module
from proxy.admin import AdminServer
from proxy.metrics import Metrics

TOKEN = "test-admin-token-123"


class Probe:
    """The readiness callable the server is given; tests flip it."""

    def __init__(self) -> None:
        self.state: bool | Exception = True

    async def __call__(self) -> bool:
        if isinstance(self.state, Exception):
            raise self.state
        return self.state


async def http(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET"):
    """One request over a fresh connection: (status, headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    hdrs = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), hdrs, body


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def admin() -> AsyncIterator[tuple[AdminServer, Metrics, Probe]]:
    m = Metrics()
    probe = Probe()
    server = AdminServer("127.0.0.1:0", TOKEN, probe, metrics=m)
    await server.start()
    assert server.port > 0
    try:
        yield server, m, probe
    finally:
        await server.stop()


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_count_what_happened(admin: tuple[AdminServer, Metrics, Probe]) -> None:
    server, m, _ = admin
    m.session_opened()
    m.session_opened()
    m.session_closed()
    done(m, "alice", "rewrite", ["people-by-region"], 120, 4800, 0.02, 0.0004)
    done(m, "alice", "cutoff", ["analyst-result-cap"], 1000, 40000, 0.3, 0.0002)
    done(m, "bob", "block", ["cases-by-region"], 0, 0, 0.001, 0.0003)
    m.upstream_latency(0.004)
    m.rules_reloaded(True)
    m.rules_reloaded(False)
    m.rules_reloaded(False)

    status, headers, body = await http(server.port, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    got = samples(body)
    assert got[("oversight_sessions_total", ())] == 2
    assert got[("oversight_sessions_active", ())] == 1
    assert got[("oversight_statements_total", (("decision", "rewrite"),))] == 1
    assert got[("oversight_statements_total", (("decision", "cutoff"),))] == 1
    assert got[("oversight_statements_total", (("decision", "block"),))] == 1
    assert got[("oversight_blocks_total", (("rule", "cases-by-region"),))] == 1
    assert got[("oversight_blocks_total", (("rule", "analyst-result-cap"),))] == 1
    assert ("oversight_blocks_total", (("rule", "people-by-region"),)) not in got
    assert got[("oversight_rows_total", (("user", "alice"),))] == 1120
    assert got[("oversight_bytes_total", (("user", "alice"),))] == 44800
    assert ("oversight_rows_total", (("user", "bob"),)) not in got
    assert got[("oversight_decision_seconds_count", ())] == 3
    assert got[("oversight_statement_seconds_count", ())] == 3
    assert got[("oversight_upstream_latency_seconds_count", ())] == 1
    assert got[("oversight_rule_reloads_total", (("result", "ok"),))] == 1
    assert got[("oversight_rule_reloads_total", (("result", "failed"),))] == 2


async def test_module_functions_feed_the_process_metrics() -> None:
    """The server calls the module-level functions; they land in METRICS."""
    server = AdminServer("127.0.0.1:0", None, Probe())  # the default, process-wide metrics
    await server.start()
    try:
        before = samples((await http(server.port, "/metrics"))[2])
        metrics_module.session_opened()
        done(metrics_module.METRICS, "zed", "allow", [], 7, 70, 0.01, 0.001)
        metrics_module.blocked({"user": "zed", "sql": "SELECT 1", "decision": "block"})
        metrics_module.session_closed()
        after = samples((await http(server.port, "/metrics"))[2])
    finally:
        await server.stop()
    key = ("oversight_statements_total", (("decision", "allow"),))
    assert after[key] - before.get(key, 0) == 1
    assert after[("oversight_rows_total", (("user", "zed"),))] == 7
    assert metrics_module.recent("blocked")[-1]["user"] == "zed"


async def test_health_and_readiness(admin: tuple[AdminServer, Metrics, Probe]) -> None:
    server, _, probe = admin
    assert (await http(server.port, "/healthz"))[0] == 200
    assert (await http(server.port, "/readyz"))[0] == 200
    probe.state = False
    assert (await http(server.port, "/readyz"))[0] == 503
    probe.state = ConnectionRefusedError("upstream down")
    status, _, body = await http(server.port, "/readyz")
    assert status == 503 and b"ConnectionRefusedError" in body
    assert (await http(server.port, "/healthz"))[0] == 200  # alive though not ready


async def test_dashboard_and_api_need_the_token(admin: tuple[AdminServer, Metrics, Probe]) -> None:
    server, m, _ = admin
    m.blocked({"user": "alice", "sql": "SELECT notes FROM cases", "rules": ["x"]})
    for path in ("/", "/api/blocked", "/api/summary", "/api/rows", "/api/rules"):
        status, headers, body = await http(server.port, path)
        assert status == 401, path
        assert headers["www-authenticate"] == "Bearer"
        assert b"notes" not in body
        assert (await http(server.port, path, bearer("wrong-token")))[0] == 401, path
        assert (await http(server.port, path, bearer(TOKEN[:-1])))[0] == 401, path
        assert (await http(server.port, path, {"Authorization": TOKEN}))[0] == 401, path
        assert (await http(server.port, path, bearer()))[0] == 200, path
    # ?token= opens the HTML page only, never the data.
    status, headers, body = await http(server.port, f"/?token={TOKEN}")
    assert status == 200 and b"<svg" in body
    assert headers["referrer-policy"] == "no-referrer"
    assert "connect-src 'self'" in headers["content-security-policy"]
    assert (await http(server.port, "/?token=nope"))[0] == 401
    assert (await http(server.port, f"/api/blocked?token={TOKEN}"))[0] == 401


async def test_without_a_token_the_dashboard_is_off() -> None:
    m = Metrics()
    server = AdminServer("127.0.0.1:0", None, Probe(), metrics=m)
    await server.start()
    try:
        status, _, body = await http(server.port, "/")
        assert status == 403 and b"disabled" in body and b"OVERSIGHT_ADMIN_TOKEN" in body
        assert (await http(server.port, "/api/blocked", bearer()))[0] == 403
        assert (await http(server.port, "/api/blocked", bearer("")))[0] == 403
        assert (await http(server.port, "/metrics"))[0] == 200
        assert (await http(server.port, "/healthz"))[0] == 200
    finally:
        await server.stop()


async def test_api_serves_recent_events(admin: tuple[AdminServer, Metrics, Probe]) -> None:
    server, m, _ = admin
    m.blocked(
        {
            "user": "alice",
            "sql": "SELECT notes FROM cases",
            "rules": ["cases-by-region"],
            "decision": "block",
            "reason": "reads denied column notes",
            "secret": "x",
        }
    )
    m.blocked({"user": "bob", "sql": "COPY people TO STDOUT", "decision": "block"})
    done(m, "alice", "rewrite", ["people-by-region"], 5, 50, 0.01, 0.001)
    _, _, body = await http(server.port, "/api/blocked", bearer())
    events = orjson.loads(body)
    assert [e["user"] for e in events] == ["alice", "bob"]
    assert "secret" not in events[0]  # only audit fields reach the dashboard
    _, _, body = await http(server.port, f"/api/blocked?after={events[0]['seq']}", bearer())
    assert [e["user"] for e in orjson.loads(body)] == ["bob"]
    _, _, body = await http(server.port, "/api/rows?hours=1", bearer())
    rows = orjson.loads(body)
    assert sum(rows["users"]["alice"]) == 5 and len(rows["users"]["alice"]) == 60
    _, _, body = await http(server.port, "/api/rules", bearer())
    assert orjson.loads(body) == [{"rule": "people-by-region", "count": 1}]
    _, _, body = await http(server.port, "/api/summary", bearer())
    assert orjson.loads(body)["statements"] == {"rewrite": 1}


async def test_bad_requests(admin: tuple[AdminServer, Metrics, Probe]) -> None:
    server, _, _ = admin
    assert (await http(server.port, "/metrics", method="POST"))[0] == 405
    assert (await http(server.port, "/nope"))[0] == 404
    assert (await http(server.port, "/metrics", {"X-Big": "a" * 20000}))[0] == 431
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"garbage\r\n\r\n")
    raw = await reader.read()
    writer.close()
    assert raw.startswith(b"HTTP/1.1 400")


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Debian's chromium is needed: apt-get install -y chromium"
    return path


def _chromium_run(url: str, out_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={out_dir / 'chromium-profile'}",
        "--window-size=1200,900",
        "--virtual-time-budget=5000",
        *args,
        url,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def _feed_dashboard(m: Metrics, clock: list[float]) -> None:
    """Three users reading over the last hours, some refusals, as a live proxy would."""
    now = clock[0]
    for minute in range(0, 300, 3):
        clock[0] = now - 300 * 60 + minute * 60
        done(m, "alice", "rewrite", ["people-by-region"], 200 + minute * 3, 9000, 0.02, 0.0003)
        if minute % 2 == 0:
            done(m, "bob", "rewrite", ["cases-by-region"], 1500 - minute * 4, 40000, 0.05, 0.0004)
        if minute > 200:
            done(m, "carol", "allow", ["people-supervisors"], 4000, 1_000_000, 0.4, 0.0002)
    clock[0] = now
    m.session_opened()
    for i, (user, sql, rule, decision, reason) in enumerate(
        [
            (
                "alice",
                "SELECT notes FROM cases WHERE id = 42",
                "cases-by-region",
                "block",
                "reads denied column public.cases.notes",
            ),
            (
                "bob",
                "SELECT * FROM internal.audit_notes",
                "internal-schema",
                "block",
                "access to internal.audit_notes denied",
            ),
            (
                "alice",
                "SELECT id, status FROM cases",
                "analyst-result-cap",
                "cutoff",
                "result limit of 1000 rows reached",
            ),
            ("bob", "COPY people TO STDOUT", "analyst-no-copy-out", "block", "copy_out detected"),
        ]
    ):
        done(m, user, decision, [rule], 1000 if decision == "cutoff" else 0, 0, 0.01, 0.001)
        m.blocked(
            {
                "ts": now - 60 + i * 10,
                "user": user,
                "sql": sql,
                "rules": [rule],
                "decision": decision,
                "reason": reason,
            }
        )


async def test_dashboard_renders_with_data(tmp_path: Path) -> None:
    clock = [time.time()]
    m = Metrics(clock=lambda: clock[0])
    _feed_dashboard(m, clock)
    m.blocked(
        {
            "user": "<img src=x onerror=alert(1)>",
            "sql": "<script>bad()</script>",
            "decision": "block",
            "rules": ["xss-probe"],
        }
    )
    server = AdminServer("127.0.0.1:0", TOKEN, Probe(), metrics=m)
    await server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/?token={TOKEN}"
        out_dir = Path(os.environ.get("OVERSIGHT_TEST_OUTPUT", tmp_path))
        out_dir.mkdir(parents=True, exist_ok=True)
        shot = out_dir / "dashboard.png"
        run = asyncio.to_thread
        dom = await run(_chromium_run, url, tmp_path, "--dump-dom")
        assert dom.returncode == 0, dom.stderr[-2000:]
        html = dom.stdout
        shot_run = await run(_chromium_run, url, tmp_path, f"--screenshot={shot}")
        assert shot_run.returncode == 0, shot_run.stderr[-2000:]
    finally:
        await server.stop()
    print(f"\ndashboard screenshot: {shot}")
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    # The JavaScript ran with the token and drew the data.
    assert "SELECT notes FROM cases WHERE id = 42" in html
    assert "analyst-no-copy-out" in html
    assert "<path" in html and "alice · " in html and "carol · " in html
    assert "people-by-region" in html  # top rules chart
    assert 'id="login" style="display: none' in html
    # Audit text is shown as text, never parsed as markup.
    assert "&lt;script&gt;bad()&lt;/script&gt;" in html
    assert "<script>bad()" not in html and "<img src=x" not in html


def test_dashboard_memory_is_bounded() -> None:
    from proxy import metrics as mod

    clock = [1_000_000.0]
    m = Metrics(clock=lambda: clock[0])
    for i in range(mod.RING_SIZE + 50):
        m.blocked({"user": f"u{i}", "sql": "x" * (mod.SQL_CHARS + 10)})
    events = m.recent("blocked", limit=10_000)
    assert len(events) == mod.RING_SIZE
    assert events[-1]["user"] == f"u{mod.RING_SIZE + 49}"
    assert len(events[0]["sql"]) == mod.SQL_CHARS + 1  # cut, with an ellipsis
    # Rows older than the history fall out of the chart; users beyond the cap are evicted.
    done(m, "old", "allow", [], 10, 0, 0, 0)
    clock[0] += mod.HISTORY_S + 3600
    done(m, "new", "allow", [], 20, 0, 0, 0)
    chart = m.rows_by_user(hours=6)
    assert chart["users"] == {"new": [0] * 71 + [20]}
    assert chart["bucket_s"] == 300
    for i in range(mod.MAX_USERS + 5):
        done(m, f"user{i}", "allow", [], 1, 0, 0, 0)
    assert len(m.rows_by_user(hours=1)["users"]) == mod.MAX_USERS
