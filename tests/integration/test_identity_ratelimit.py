"""Failed logins in `proxy` auth mode are limited per client address and per user.

Clients connect from 127.0.0.1 and 127.0.0.2 (both loopback on Linux), so
the two limits can be told apart: after three wrong passwords for analyst
from .1, analyst is refused from .2 as well (per user) and bob from .1 (per
address), while bob from .2 still gets in. Every failure and refusal is an
auth_failure record; no password is written anywhere.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import scramp
from rawclient import Raw

from proxy import messages as m
from proxy.scram import make_verifier

PASSWORDS = {"analyst": "analyst-pw-1", "bob": "bob-pw-1"}


@pytest.fixture
async def proxy(proxy_factory: Any, tmp_path: Path) -> Any:
    users = tmp_path / "users.scram"
    users.write_text("".join(f"{u}:{make_verifier(p)}\n" for u, p in PASSWORDS.items()))
    return await proxy_factory(
        auth="proxy", users_file=str(users), login_max_failures=3, login_failure_window=3600
    )


async def _login(p: Any, source: str, user: str, password: str) -> str:
    """'ok', or the message of the error that ended the login."""
    raw = Raw(*await asyncio.open_connection(p.host, p.port, local_addr=(source, 0)))
    try:
        raw.send(m.startup_message({"user": user, "database": p.pg.dbname}))
        t, body = await raw.frame()
        if t == b"E":
            return m.error_fields(body)["M"]
        client = scramp.ScramClient(["SCRAM-SHA-256"], user, password)
        raw.send(m.sasl_initial_response("SCRAM-SHA-256", client.get_client_first().encode()))
        _, body = await raw.frame()
        client.set_server_first(m.parse_auth(body)[1].decode())
        raw.send(m.password_message(client.get_client_final().encode()))
        while True:
            t, body = await raw.frame()
            if t == b"E":
                return m.error_fields(body)["M"]
            if t == b"Z":
                return "ok"
    finally:
        raw.close()


async def test_failures_are_limited_per_address_and_per_user(proxy: Any) -> None:
    for _ in range(3):
        got = await _login(proxy, "127.0.0.1", "analyst", "wrong")
        assert got == 'password authentication failed for user "analyst"'
    too_many = "oversight: too many failed logins; try again later"
    assert await _login(proxy, "127.0.0.1", "analyst", PASSWORDS["analyst"]) == too_many
    assert await _login(proxy, "127.0.0.2", "analyst", PASSWORDS["analyst"]) == too_many
    assert await _login(proxy, "127.0.0.1", "bob", PASSWORDS["bob"]) == too_many
    assert await _login(proxy, "127.0.0.2", "bob", PASSWORDS["bob"]) == "ok"

    await proxy.stop()
    text = proxy.audit_log.read_text()
    failures = [r for r in map(json.loads, text.splitlines()) if r["event"] == "auth_failure"]
    assert [(r["user"], r["error"][:6]) for r in failures] == [
        ("analyst", "28P01:"),
        ("analyst", "28P01:"),
        ("analyst", "28P01:"),
        ("analyst", "28000:"),
        ("analyst", "28000:"),
        ("bob", "28000:"),
    ]
    assert not any(pw in text for pw in PASSWORDS.values())
