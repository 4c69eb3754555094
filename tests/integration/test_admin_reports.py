"""Reports in the browser: the dashboard's user page and subject search, and the --html pages.

The real AdminServer on a loopback port reads audit files written by the real
writer (tests/auditdata.py); its answers must be the CLI's (the same report
module), and the searched value must never be needed in an address or show
up in a log. Headless Chromium (Debian's `chromium`) renders the pages.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from auditdata import AUDIT_KEY, HOSTILE, NEW_KEY, OLD_KEY, read_records, write_scenario

from proxy.admin import AdminServer
from proxy.metrics import Metrics
from proxy.reports.api import ReportConfig, run_subject, run_user
from proxy.reports.files import resolve
from proxy.reports.render_html import subject_html, user_html
from proxy.rules import load_rules

TOKEN = "reports-admin-token-456"
RULES = Path(__file__).resolve().parents[2] / "rules"
SSN = "123-45-6789"


async def ready() -> bool:
    return True


async def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    token: str | None = TOKEN,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    is_json = b"application/json" in head
    return status, orjson.loads(payload) if is_json else payload.decode()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[AdminServer, ReportConfig]]:
    logs = await write_scenario(tmp_path)
    rules = load_rules(RULES)
    config = ReportConfig(
        audit=[str(logs["a"]), str(logs["b"])],
        audit_key=AUDIT_KEY,
        ledger_keys=[NEW_KEY, OLD_KEY],
        rules=lambda: rules,
    )
    server = AdminServer("127.0.0.1:0", TOKEN, ready, metrics=Metrics(), reports=config)
    await server.start()
    try:
        yield server, config
    finally:
        await server.stop()


async def test_user_report_needs_the_token_and_equals_the_cli_report(
    served: tuple[AdminServer, ReportConfig],
) -> None:
    server, config = served
    path = "/api/report/user?user=alice&since=all"
    assert (await request(server.port, "GET", path, token=None))[0] == 401
    assert (await request(server.port, "GET", path, token="wrong"))[0] == 401
    status, report = await request(server.port, "GET", path)
    assert status == 200
    assert report == orjson.loads(orjson.dumps(run_user(config, "alice", None)))
    records = read_records(resolve(config.audit))
    mine = [r for r in records if r.get("user") == "alice" and r["event"] == "statement"]
    assert report["statements"] == len(mine) and report["rows"] == sum(r["rows"] for r in mine)
    assert report["chain_ok"] is True
    status, answer = await request(server.port, "GET", "/api/report/user?since=all")
    assert status == 400 and "user" in answer["error"]
    status, answer = await request(server.port, "GET", "/api/report/user?user=a&since=soon")
    assert status == 400 and "since" in answer["error"]


async def test_subject_search_is_a_post_behind_the_token(
    served: tuple[AdminServer, ReportConfig], caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = served
    caplog.set_level(logging.DEBUG)
    key = orjson.dumps({"subject": "person", "key": "42", "since": "all"})
    status, _ = await request(server.port, "POST", "/api/report/subject", key, token=None)
    assert status == 401
    assert (await request(server.port, "POST", "/api/report/subject", key, token="x"))[0] == 401
    status, answer = await request(server.port, "POST", "/api/report/subject", key)
    assert status == 200
    assert [(x["user"], x["how"], x["column"]) for x in answer["lines"]] == [
        ("alice", "seen", None),
        ("alice", "looked_up", "id"),
        ("carol", "looked_up", "person_id"),
        (HOSTILE, "seen", None),
    ]
    lookup = {"subject": "person", "column": "ssn", "value": SSN, "since": "all"}
    status, answer = await request(server.port, "POST", "/api/report/subject", orjson.dumps(lookup))
    assert status == 200 and [x["user"] for x in answer["lines"]] == ["bob"]
    # Mistakes are answered without echoing the value searched for.
    for form in (
        {"subject": "nobody", "key": SSN},
        {"subject": "person", "column": "nope", "value": SSN},
        {"subject": "person"},
    ):
        status, answer = await request(
            server.port, "POST", "/api/report/subject", orjson.dumps(form)
        )
        assert status == 400 and SSN not in answer["error"]
    assert (await request(server.port, "POST", "/api/report/subject", b"{nope"))[0] == 400
    assert (await request(server.port, "POST", "/api/report/subject"))[0] == 411
    big = orjson.dumps({"subject": "person", "key": "4" * 5000})
    assert (await request(server.port, "POST", "/api/report/subject", big))[0] == 413
    # No address form of the search: a GET cannot carry the value.
    status, _ = await request(server.port, "GET", f"/api/report/subject?key=42&value={SSN}")
    assert status == 404
    assert (await request(server.port, "POST", "/api/summary", b"{}"))[0] == 405
    assert SSN not in caplog.text and "42" not in caplog.text


async def test_subject_list_for_the_search_form(served: tuple[AdminServer, ReportConfig]) -> None:
    server, _ = served
    assert (await request(server.port, "GET", "/api/report/subjects", token=None))[0] == 401
    status, data = await request(server.port, "GET", "/api/report/subjects")
    assert status == 200
    assert data["subjects"] == [
        {
            "id": "person",
            "key": "id",
            "columns": ["id", "person_id", "ssn", "full_name", "phone", "email"],
        }
    ]
    assert [s[1] for s in data["layout"]["sections"]][:2] == ["session_list", "purposes"]


async def test_reports_off_without_an_audit_file() -> None:
    server = AdminServer("127.0.0.1:0", TOKEN, ready, metrics=Metrics())
    await server.start()
    try:
        status, answer = await request(server.port, "GET", "/api/report/user?user=alice")
        assert status == 404 and "reports are off" in answer["error"]
    finally:
        await server.stop()


def _chromium_dom(url: str, profile: Path) -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is needed: apt-get install -y chromium"
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        url,
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def tile(dom: str, tile_id: str) -> str:
    """The value shown in the tile with this id (`<div class="tile" id=..><div class="v">X`)."""
    start = dom.index(f'id="{tile_id}"')
    value = dom.index('class="v">', start) + len('class="v">')
    return dom[value : dom.index("<", value)]


async def test_dashboard_user_page_in_chromium(
    served: tuple[AdminServer, ReportConfig], tmp_path: Path
) -> None:
    server, config = served
    url = f"http://127.0.0.1:{server.port}/dashboard?token={TOKEN}&user=alice&since=all"
    dom = await asyncio.to_thread(_chromium_dom, url, tmp_path / "profile")
    records = read_records(resolve(config.audit))
    mine = [r for r in records if r.get("user") == "alice" and r["event"] == "statement"]
    assert tile(dom, "u-statements") == str(len(mine))
    assert tile(dom, "u-rows") == str(sum(r["rows"] for r in mine))
    assert "audit chain intact" in dom
    assert "CASE-1 fraud review" in dom and "decoy-people" in dom
    if os.environ.get("OVERSIGHT_TEST_OUTPUT"):
        Path(os.environ["OVERSIGHT_TEST_OUTPUT"], "dashboard-user.html").write_text(dom)


async def test_html_report_pages_render_in_chromium(
    served: tuple[AdminServer, ReportConfig], tmp_path: Path
) -> None:
    """The --html pages: a browser renders them, the totals shown are the records'."""
    _, config = served
    for user in ("alice", HOSTILE):
        page = tmp_path / "user.html"
        page.write_text(user_html(run_user(config, user, None)), encoding="utf-8")
        dom = await asyncio.to_thread(_chromium_dom, page.as_uri(), tmp_path / "profile")
        records = read_records(resolve(config.audit))
        mine = [r for r in records if r.get("user") == user and r["event"] == "statement"]
        assert tile(dom, "t-statements") == str(len(mine))
        assert tile(dom, "t-rows") == str(sum(r["rows"] for r in mine))
        assert tile(dom, "t-bytes") == str(sum(r["bytes"] for r in mine))
        assert tile(dom, "t-refused") == str(
            sum(r["decision"] in ("block", "cutoff") for r in mine)
        )
        assert 'id="chain" class="ok"' in dom
        assert "<script" not in dom  # the hostile name and SQL stayed text
    assert "&lt;script&gt;alert('x')&lt;/script&gt;" in dom
    lines = run_subject(config, "person", "42", None, None)
    page = tmp_path / "subject.html"
    page.write_text(subject_html(lines, "Disclosures of person 42"), encoding="utf-8")
    dom = await asyncio.to_thread(_chromium_dom, page.as_uri(), tmp_path / "profile")
    assert "4 disclosures by 3 users" in dom
    assert dom.count("<tr>") == 1 + len(lines) and "<script" not in dom
