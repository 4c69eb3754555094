"""The ledger's `looked_up` and canaries through the proxy, against real PostgreSQL (#16, #17).

A `Service` as `oversight serve` composes it (rules, ledger key, canaries,
alerts), a schema of its own with people and their cases, and a real HTTP
receiver for the canary alerts. Each test reads the audit file: the hashes
must be the ones the contract names, and the plaintext search value must not
appear anywhere in it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from alertreceivers import HttpReceiver
from pgcluster import PgCluster
from polling import eventually

from proxy.audit import verify_files
from proxy.ledger.hashing import subject_hash
from proxy.rules import load_rules
from proxy.run import Service
from proxy.settings import Settings

BOB, PASSWORD = "led_bob", "led-secret-1"
KEY = "it-ledger-key"
SSN = "078-05-1120"
SUBJECTS = """\
version: 1
subjects:
  - id: person
    table: ledger_it.people
    key: id
    lookups: [ssn, full_name]
    via: [{table: ledger_it.cases, column: person_id}]
"""


def canaries(action: str) -> str:
    return (
        "canaries:\n"
        f"  - {{id: decoys, subject: person, keys: [900001, 900002], action: {action}}}\n"
    )


@pytest.fixture(scope="module")
def schema(pg: PgCluster) -> Iterator[None]:
    def drop(conn: psycopg.Connection[Any]) -> None:
        conn.execute("DROP SCHEMA IF EXISTS ledger_it CASCADE")
        conn.execute(f"DROP ROLE IF EXISTS {BOB}")

    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        drop(conn)
        conn.execute(f"CREATE ROLE {BOB} LOGIN PASSWORD '{PASSWORD}'")
        conn.execute("CREATE SCHEMA ledger_it")
        conn.execute(
            "CREATE TABLE ledger_it.people (id bigint PRIMARY KEY, full_name text, ssn text)"
        )
        conn.execute("CREATE TABLE ledger_it.cases (id int, person_id bigint)")
        conn.execute(
            "INSERT INTO ledger_it.people SELECT i, 'Person ' || i,"
            " lpad(i::text, 3, '0') || '-00-' || lpad(i::text, 4, '0')"
            " FROM generate_series(1, 1500) i WHERE i <> 61"
        )
        conn.execute(
            "INSERT INTO ledger_it.people VALUES (900001, 'Dana Decoy', '900-00-0001'),"
            f" (900002, 'Evan Decoy', '900-00-0002'), (61, 'Real Person', '{SSN}')"
        )
        conn.execute("INSERT INTO ledger_it.cases SELECT i, i FROM generate_series(1, 20) i")
        conn.execute(f"GRANT USAGE ON SCHEMA ledger_it TO {BOB}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA ledger_it TO {BOB}")
    yield
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        drop(conn)


Start = Callable[[str], Any]


@pytest.fixture
async def serve(pg: PgCluster, schema: None, tmp_path: Path) -> AsyncIterator[Start]:
    services: list[Service] = []

    async def start(extra_yaml: str) -> Service:
        rules = tmp_path / "rules.yaml"
        rules.write_text(SUBJECTS + extra_yaml)
        settings = Settings(
            listen="127.0.0.1:0",
            upstream=pg.dsn(),
            rules=str(rules),
            audit_log=str(tmp_path / "audit.jsonl"),
            admin_listen="127.0.0.1:0",
            ledger_key=KEY,
        )
        service = Service(settings, load_rules(rules))
        await service.start()
        services.append(service)
        return service

    yield start
    for s in services:
        await s.stop()


async def connect(pg: PgCluster, service: Service) -> psycopg.AsyncConnection[Any]:
    assert service.server is not None
    dsn = f"host=127.0.0.1 port={service.server.port} dbname={pg.dbname}"
    return await psycopg.AsyncConnection.connect(
        f"{dsn} user={BOB} password={PASSWORD}", autocommit=True
    )


def events(path: Path, event: str = "statement") -> list[dict[str, Any]]:
    return [r for r in map(orjson.loads, path.read_bytes().splitlines()) if r["event"] == event]


def looked_up(record: dict[str, Any]) -> list[dict[str, str]]:
    return list(record.get("subjects", {}).get("person", {}).get("looked_up", []))


def key_hash(value: str) -> str:
    return subject_hash(KEY.encode(), "person", value)


async def test_a_prepared_ssn_lookup_is_hashed_and_never_written_in_plaintext(
    pg: PgCluster, serve: Start, tmp_path: Path
) -> None:
    service = await serve("")
    other = "010-00-0010"
    async with await connect(pg, service) as conn:
        for ssn in (SSN, other):  # one prepared statement, two executions
            cur = await conn.execute(
                "SELECT * FROM ledger_it.people WHERE ssn = %s", (ssn,), prepare=True
            )
            assert len(await cur.fetchall()) == 1
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):  # the server quotes it
            await conn.execute(f"SELECT * FROM ledger_it.people WHERE id = '{SSN}'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # does not tokenize
            await conn.execute(f"SELECT * FROM ledger_it.people WHERE ssn = '{SSN}")
    audit = tmp_path / "audit.jsonl"
    mine = [r for r in events(audit) if "ssn = $1" in r["sql"]]
    assert [looked_up(r) for r in mine] == [
        [{"column": "ssn", "hash": subject_hash(KEY.encode(), "person", ssn, "ssn")}]
        for ssn in (SSN, other)
    ]
    assert all(r["subjects"]["person"]["looked_up_count"] == 1 for r in mine)
    text = audit.read_text()
    assert SSN not in text and other not in text
    assert verify_files([str(audit)], None).ok


async def test_literals_in_lists_arrays_and_execute_arguments(
    pg: PgCluster, serve: Start, tmp_path: Path
) -> None:
    service = await serve("")
    async with await connect(pg, service) as conn:
        await conn.execute("SELECT full_name FROM ledger_it.people p WHERE p.id IN (41, 42)")
        await conn.execute("SELECT * FROM ledger_it.cases WHERE person_id = ANY(ARRAY[7, 8])")
        await conn.execute("SELECT count(*) FROM ledger_it.people WHERE id = '0043'")
        await conn.execute(
            "PREPARE s(text) AS SELECT * FROM ledger_it.people WHERE ssn = $1", prepare=False
        )
        await conn.execute(f"EXECUTE s('{SSN}')", prepare=False)
        await conn.execute("SELECT * FROM ledger_it.cases WHERE id = 5")  # not a subject column
        await conn.execute("SELECT ssn FROM ledger_it.people WHERE id = %b", (44,))  # binary
        for i in range(10, 16):  # one shape, six values: the shape cache must keep each one
            await conn.execute(f"SELECT ssn FROM ledger_it.people WHERE full_name = 'Person {i}'")
    audit = tmp_path / "audit.jsonl"
    by_sql = {r["sql"]: r for r in events(audit)}
    ids = by_sql["SELECT full_name FROM ledger_it.people p WHERE p.id IN (?, ?)"]
    assert looked_up(ids) == [{"column": "id", "hash": key_hash(v)} for v in ("41", "42")]
    via = by_sql["SELECT * FROM ledger_it.cases WHERE person_id = ANY(ARRAY[?, ?])"]
    assert looked_up(via) == [{"column": "person_id", "hash": key_hash(v)} for v in ("7", "8")]
    padded = by_sql["SELECT count(*) FROM ledger_it.people WHERE id = ?"]
    assert looked_up(padded) == [{"column": "id", "hash": key_hash("43")}]
    executed = by_sql["EXECUTE s(?)"]
    assert looked_up(executed) == [
        {"column": "ssn", "hash": subject_hash(KEY.encode(), "person", SSN, "ssn")}
    ]
    not_a_search = by_sql["SELECT * FROM ledger_it.cases WHERE id = ?"]
    assert looked_up(not_a_search) == []  # case 5's person_id was seen, not searched for
    assert not_a_search["subjects"]["person"]["seen"] == [key_hash("5")]
    binary = by_sql["SELECT ssn FROM ledger_it.people WHERE id = $1"]
    assert looked_up(binary) == [{"column": "id", "hash": key_hash("44")}]
    names = [r for r in events(audit) if "full_name = ?" in r["sql"]]
    assert [looked_up(r) for r in names] == [
        [
            {
                "column": "full_name",
                "hash": subject_hash(KEY.encode(), "person", f"Person {i}", "full_name"),
            }
        ]
        for i in range(10, 16)
    ]
    assert SSN not in audit.read_text()


async def test_a_refused_search_is_recorded_too(
    pg: PgCluster, serve: Start, tmp_path: Path
) -> None:
    service = await serve("")
    async with await connect(pg, service) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute(f"DELETE FROM ledger_it.people WHERE ssn = '{SSN}'")
    (refused,) = [r for r in events(tmp_path / "audit.jsonl") if r["sql"].startswith("DELETE")]
    assert refused["decision"] == "block"
    assert looked_up(refused) == [
        {"column": "ssn", "hash": subject_hash(KEY.encode(), "person", SSN, "ssn")}
    ]


async def test_a_canary_search_with_no_rows_alerts_once_and_writes_a_canary_event(
    pg: PgCluster, serve: Start, tmp_path: Path
) -> None:
    web = await HttpReceiver().start()
    try:
        service = await serve(
            canaries("alert")
            + f"alerts:\n  - {{id: it-canary, when: {{canaries: true}}, webhook: '{web.url}'}}\n"
        )
        async with await connect(pg, service) as conn:
            cur = await conn.execute(
                "SELECT * FROM ledger_it.cases WHERE person_id IN (900002, 900002, 3)"
            )
            assert await cur.fetchall() == [(3, 3)]  # no case of the decoy: still a search
            cur = await conn.execute("SELECT 1")  # an alert canary blocks nothing
            assert await cur.fetchall() == [(1,)]
        await eventually(lambda: _async(web.bodies), what="the canary alert")
        (alert,) = web.bodies
        assert alert["rule"] == "decoys" and alert["user"] == BOB
        assert "canary" in alert["reason"]
        audit = tmp_path / "audit.jsonl"
        (event,) = events(audit, "canary")
        assert event["canary"] == "decoys" and event["how"] == "looked_up"
        assert event["subject"] == "person" and event["user"] == BOB
        assert event["fingerprint"] and event["session"] and event["action"] == "alert"
        assert "900002" not in audit.read_text()
    finally:
        await web.stop()


async def test_a_blocking_canary_refuses_the_sessions_later_statements(
    pg: PgCluster, serve: Start, tmp_path: Path
) -> None:
    service = await serve(canaries("block"))
    async with await connect(pg, service) as conn:
        cur = await conn.execute("SELECT full_name FROM ledger_it.people WHERE id = %s", (900001,))
        assert await cur.fetchall() == [("Dana Decoy",)]  # it ran: the touch is seen after
        for sql in ("SELECT 1", "SELECT * FROM ledger_it.people WHERE id = 1"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
                await conn.execute(sql)
            assert str(e.value).startswith(
                "oversight: blocked by decoys: this session touched a canary record"
            )
    async with await connect(pg, service) as other:  # another session is not touched
        cur = await other.execute("SELECT 1")
        assert await cur.fetchall() == [(1,)]
    refused = [r for r in events(tmp_path / "audit.jsonl") if r["decision"] == "block"]
    assert len(refused) == 2 and all(r["rules"] == ["decoys"] for r in refused)


async def test_a_bulk_read_holding_canary_rows_alerts_once_past_the_listed_keys(
    pg: PgCluster, serve: Start, tmp_path: Path
) -> None:
    """1,500 people, then the two decoys of one canary: the tally lists the first 1,000
    keys, and the decoys, read past that cap, still trip the canary, once."""
    web = await HttpReceiver().start()
    try:
        service = await serve(
            canaries("alert")
            + f"alerts:\n  - {{id: it-canary, when: {{canaries: true}}, webhook: '{web.url}'}}\n"
        )
        async with await connect(pg, service) as conn:
            cur = await conn.execute("SELECT id, full_name FROM ledger_it.people ORDER BY id")
            assert len(await cur.fetchall()) == 1502
            cur = await conn.execute("SELECT count(*) FROM ledger_it.people")  # no key read
            assert await cur.fetchall() == [(1502,)]
        await eventually(lambda: _async(web.bodies), what="the canary alert")
        audit = tmp_path / "audit.jsonl"
        bulk = next(r for r in events(audit) if "ORDER BY id" in r["sql"])
        person = bulk["subjects"]["person"]
        assert person["seen_count"] == 1502 and person["looked_up"] == []
        assert key_hash("900001") in person["seen"] and key_hash("900002") in person["seen"]
        assert bulk["canaries"] == ["decoys"]
        (event,) = events(audit, "canary")
        assert (event["canary"], event["how"]) == ("decoys", "seen")
        assert len(web.bodies) == 1 and web.bodies[0]["rule"] == "decoys"
        assert "900001" not in audit.read_text()
    finally:
        await web.stop()


async def _async(value: Any) -> Any:
    return value
