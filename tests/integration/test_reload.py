"""A running `oversight serve` follows its rules and the catalog.

Rules reload on file change and on SIGHUP; an invalid set is refused with
its reasons and the last good set stays in force; DDL seen through the proxy
refreshes the catalog, so a table created after start is governed at once.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from openrules import OPEN_RULES
from pgcluster import PgCluster
from polling import eventually
from serveproc import Served, start_serve

RULES = (
    OPEN_RULES
    + """\
users:
  scramuser: {{groups: [analysts]}}
rules:
  - id: reload-mask
    match: {{groups: [analysts]}}
    table: public.reload_people
    columns: {{ssn: {policy}}}
  - id: late-mask
    match: {{groups: [analysts]}}
    table: public.reload_late
    columns: {{ssn: redact}}
"""
)


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules" / "rules.yaml"
    path.parent.mkdir()
    path.write_text(RULES.format(policy="redact"))
    return path


@pytest.fixture
async def served(pg: PgCluster, rules_file: Path, tmp_path: Path) -> AsyncIterator[Served]:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS reload_people, reload_late")
        conn.execute("CREATE TABLE reload_people (id int, ssn text)")
        conn.execute("INSERT INTO reload_people VALUES (1, '123-45-6789')")
        conn.execute("GRANT SELECT ON reload_people TO scramuser")
    proc = await asyncio.to_thread(
        start_serve,
        {
            "OVERSIGHT_LISTEN": "127.0.0.1:0",
            "OVERSIGHT_UPSTREAM": pg.dsn() + "?sslmode=disable",
            "OVERSIGHT_RULES": str(rules_file.parent),
            "OVERSIGHT_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
            "OVERSIGHT_ADMIN_LISTEN": "",
        },
    )
    yield proc
    await asyncio.to_thread(proc.stop)
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS reload_people, reload_late")


async def _ssn(pg: PgCluster, port: int, table: str = "reload_people") -> Any:
    dsn = pg.dsn("scramuser").replace(f":{pg.port}/", f":{port}/")
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(f"SELECT * FROM {table}")
        row = await cur.fetchone()
        return row[1] if row else None


async def _becomes(check: Any, want: Any) -> None:
    async def fits() -> bool:
        return bool(await check() == want)

    await eventually(fits, what=f"{want!r}")


async def test_rules_follow_file_changes_and_sighup(
    pg: PgCluster, served: Served, rules_file: Path
) -> None:
    assert await _ssn(pg, served.port) == "****"
    rules_file.write_text(RULES.format(policy="partial"))  # file change
    await _becomes(lambda: _ssn(pg, served.port), "***6789")

    rules_file.write_text(RULES.format(policy="no-such-policy"))

    async def refused() -> bool:
        return any("reload refused" in line for line in served.log)

    await eventually(refused, what="the watcher to refuse the broken set")
    assert await _ssn(pg, served.port) == "***6789"  # the last good set stays

    # SIGHUP reloads too (the watcher may beat it to it: either way, it applies).
    rules_file.write_text(RULES.format(policy="null"))
    served.proc.send_signal(signal.SIGHUP)
    await _becomes(lambda: _ssn(pg, served.port), None)


async def test_ddl_through_the_proxy_refreshes_the_catalog(pg: PgCluster, served: Served) -> None:
    admin = pg.dsn().replace(f":{pg.port}/", f":{served.port}/")
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        await conn.execute("CREATE TABLE reload_late (id int, ssn text)")
        await conn.execute("INSERT INTO reload_late VALUES (1, '987-65-4321')")
        await conn.execute("GRANT SELECT ON reload_late TO scramuser")

    async def late() -> Any:
        try:
            return await _ssn(pg, served.port, "reload_late")
        except psycopg.errors.InsufficientPrivilege:
            return "blocked"

    # Until the refresh lands the engine cannot expand * and refuses; never the secret.
    first = await late()
    assert first in ("blocked", "****")
    await _becomes(late, "****")
