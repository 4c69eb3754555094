"""Two `oversight serve` processes sharing one redis-server enforce one budget.

The production path end to end: rule files, the policy engine, the guard on
a RedisStore built from OVERSIGHT_REDIS_URL, each proxy its own process, as
two instances behind a TCP load balancer would run.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fix_guard import RedisServer, redis_server
from serveproc import start_serve

__all__ = ["redis_server"]  # the fixture, imported from fix_guard

RULES = """\
version: 1
defaults: {unparsed: allow, statements: [all]}
extraction:
  - id: team-hourly
    window: 1h
    max_rows: 1000
    action: block
"""


def serve(pg: Any, rules: Path, audit: Path, redis_url: str) -> tuple[subprocess.Popen[str], int]:
    served = start_serve(
        {
            "OVERSIGHT_LISTEN": "127.0.0.1:0",
            "OVERSIGHT_UPSTREAM": pg.dsn(),
            "OVERSIGHT_RULES": str(rules),
            "OVERSIGHT_AUDIT_LOG": str(audit),
            "OVERSIGHT_ADMIN_LISTEN": "",
            "OVERSIGHT_REDIS_URL": redis_url,
        }
    )
    return served.proc, served.port


@pytest.fixture
def two_proxies(pg: Any, tmp_path: Path, redis_server: RedisServer) -> Iterator[list[str]]:
    if redis_server.proc is None:
        redis_server.start()
    redis_server.flush()
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    procs = []
    dsns = []
    try:
        for i in range(2):
            proc, port = serve(pg, rules, tmp_path / f"audit-{i}.jsonl", redis_server.url)
            procs.append(proc)
            dsns.append(pg.dsn().replace(f"@{pg.host}:{pg.port}/", f"@127.0.0.1:{port}/"))
        yield dsns
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


async def test_two_processes_share_one_budget(two_proxies: list[str]) -> None:
    q = "SELECT g FROM generate_series(1, 300) g"
    conns = [await psycopg.AsyncConnection.connect(d, autocommit=True) for d in two_proxies]
    got = []
    try:
        for i in range(6):
            try:
                got.append(str(len(await (await conns[i % 2].execute(q)).fetchall())))
            except psycopg.Error as e:
                got.append(str(e.sqlstate))
    finally:
        for c in conns:
            await c.close()
    assert got == ["300", "300", "300", "54000", "53400", "53400"]
