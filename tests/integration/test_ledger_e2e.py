"""Who looked at person #42: the subject ledger end to end (#16's "Done when").

`oversight serve` against real PostgreSQL: alice lists 300 people including
#42, bob looks #42 up by SSN with a prepared statement, carol never touches
#42. Then `oversight report subject person 42` must name exactly alice (seen)
and bob (looked up, by ssn) at the times they ran; `--by-lookup ssn=...`
finds bob; and the audit file holds neither #42's key nor the SSN in
plaintext.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from pgcluster import PgCluster
from serveproc import Served, start_serve

PASSWORD = "ledger-secret-1"
USERS = ("alice", "bob", "carol")
LEDGER_KEY = "ledger-key-for-the-e2e-test"
RULES = """\
version: 1
defaults:
  statements: [select, set, show, begin, commit, rollback]
users:
  alice: {groups: [analysts]}
  bob: {groups: [analysts]}
  carol: {groups: [analysts]}
rules:
  - id: names-partial
    match: {groups: [analysts]}
    table: public.led_people
    columns: {full_name: partial}
subjects:
  - id: person
    table: public.led_people
    key: id
    lookups: [ssn, full_name]
    via: [{table: public.led_cases, column: person_id}]
"""


def ssn(i: int) -> str:
    return f"{700 + i}-{(i * 7) % 89 + 10:02d}-{5000 + i * 13}"


SSN42 = ssn(42)


@pytest.fixture(scope="module")
def tables(pg: PgCluster) -> Iterator[None]:
    def drop(conn: psycopg.Connection[Any]) -> None:
        conn.execute("DROP TABLE IF EXISTS public.led_people, public.led_cases")
        for u in USERS:
            conn.execute(f"DROP ROLE IF EXISTS {u}")

    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        drop(conn)
        conn.execute(
            "CREATE TABLE public.led_people (id bigint PRIMARY KEY, full_name text, ssn text)"
        )
        conn.execute("CREATE TABLE public.led_cases (id int, person_id bigint)")
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO public.led_people VALUES (%s, %s, %s)",
                [(i, f"Person Number {i}", ssn(i)) for i in range(1, 401)],
            )
        for u in USERS:
            conn.execute(f"CREATE ROLE {u} LOGIN PASSWORD '{PASSWORD}'")
            conn.execute(f"GRANT SELECT ON public.led_people, public.led_cases TO {u}")
    yield
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        drop(conn)


@pytest.fixture
async def served(pg: PgCluster, tables: None, tmp_path: Path) -> AsyncIterator[Served]:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text(RULES)
    proc = await asyncio.to_thread(start_serve, settings(pg, tmp_path))
    yield proc
    await asyncio.to_thread(proc.stop)


def settings(pg: PgCluster, tmp_path: Path) -> dict[str, str]:
    return {
        "OVERSIGHT_LISTEN": "127.0.0.1:0",
        "OVERSIGHT_UPSTREAM": pg.dsn() + "?sslmode=disable",
        "OVERSIGHT_RULES": str(tmp_path / "rules"),
        "OVERSIGHT_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "OVERSIGHT_LEDGER_KEY": LEDGER_KEY,
        "OVERSIGHT_ADMIN_LISTEN": "",
    }


def dsn(pg: PgCluster, port: int, user: str) -> str:
    return f"postgresql://{user}:{PASSWORD}@127.0.0.1:{port}/{pg.dbname}?sslmode=disable"


def report(pg: PgCluster, tmp_path: Path, *args: str) -> list[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVERSIGHT_")}
    env.update(settings(pg, tmp_path))
    out = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "report", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return [orjson.loads(line) for line in out.stdout.splitlines() if line.strip()]


async def test_who_looked_at_person_42(pg: PgCluster, served: Served, tmp_path: Path) -> None:
    times: dict[str, tuple[datetime, datetime]] = {}

    before = datetime.now(UTC)
    async with await psycopg.AsyncConnection.connect(dsn(pg, served.port, "alice")) as conn:
        cur = await conn.execute("SELECT id, full_name FROM led_people WHERE id <= 300 ORDER BY id")
        assert len(await cur.fetchall()) == 300
    times["alice"] = (before, datetime.now(UTC))

    before = datetime.now(UTC)
    async with await psycopg.AsyncConnection.connect(dsn(pg, served.port, "bob")) as conn:
        cur = await conn.execute(
            "SELECT full_name FROM led_people WHERE ssn = %s", (SSN42,), prepare=True
        )
        assert await cur.fetchall() == [("***r 42",)]
    times["bob"] = (before, datetime.now(UTC))

    async with await psycopg.AsyncConnection.connect(dsn(pg, served.port, "carol")) as conn:
        await conn.execute("SELECT count(*) FROM led_people")
        cur = await conn.execute("SELECT id, full_name FROM led_people WHERE id = 7")
        assert len(await cur.fetchall()) == 1

    await asyncio.to_thread(served.stop)  # everything flushed

    found = report(pg, tmp_path, "subject", "person", "42")
    by_user = {(r["user"], r["how"]) for r in found}
    assert by_user == {("alice", "seen"), ("bob", "looked_up")}, found
    for r in found:
        lo, hi = times[r["user"]]
        ts = datetime.fromisoformat(r["ts"].replace("Z", "+00:00"))
        assert lo <= ts <= hi, (r, lo, hi)
        assert r["fingerprint"] and r["decision"] in ("allow", "rewrite")
    (bob,) = [r for r in found if r["user"] == "bob"]
    assert bob["column"] == "ssn"

    by_ssn = report(pg, tmp_path, "subject", "person", "--by-lookup", f"ssn={SSN42}")
    assert {(r["user"], r["how"], r["column"]) for r in by_ssn} == {("bob", "looked_up", "ssn")}

    text = (tmp_path / "audit.jsonl").read_text()
    assert SSN42 not in text
    records = [orjson.loads(line) for line in text.splitlines()]
    for rec in records:
        person = (rec.get("subjects") or {}).get("person", {})
        held = [*person.get("seen", []), *(e["hash"] for e in person.get("looked_up", []))]
        assert all(len(h) == 32 and int(h, 16) >= 0 for h in held)  # hashes, not "42"
        assert "42" not in (rec.get("sql") or "")  # literals redacted
    carol = [r for r in records if r.get("user") == "carol" and r.get("event") == "statement"]
    # carol touched #7 (her transaction's BEGIN and ROLLBACK are records too), never #42.
    seen = [r["subjects"]["person"]["seen_count"] for r in carol if r.get("subjects")]
    assert seen == [1]
    (alice,) = report(pg, tmp_path, "user", "alice", "--since", "all")
    mine = [r for r in records if r.get("user") == "alice" and r.get("event") == "statement"]
    assert alice["statements"] == len(mine)
    assert alice["rows"] == sum(r["rows"] for r in mine) >= 300
    assert alice["bytes"] == sum(r["bytes"] for r in mine)
    assert alice["subjects_seen"] >= 300 and alice["chain_ok"] is True
