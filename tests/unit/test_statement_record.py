"""The typed statement record: the audit line it seals, and extras that cannot overwrite."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import orjson

from proxy.actions import Plan, Running
from proxy.audit import AuditConfig, AuditLog, verify_files
from proxy.audit.record import GENESIS, seal
from proxy.hooks import ALLOW_ALL, Admission
from proxy.identity import SessionFacts
from proxy.metrics import Metrics
from proxy.recorder import Recorder, Tally
from proxy.statement import CORE, StatementRecord


def record(**extra: object) -> StatementRecord:
    return StatementRecord(
        ts="2026-12-04T10:00:00.000001Z",
        session="s-1",
        user="alice",
        groups=["analysts"],
        client="127.0.0.1:5000",
        application="psql",
        database="db",
        sql="SELECT ? FROM t",
        fingerprint="abc",
        kind="select",
        tables=["public.t"],
        columns=["public.t.a"],
        decision="rewrite",
        rules=["r1"],
        reason="row filter",
        rewritten=None,
        rows=3,
        bytes=120,
        duration_ms=1.5,
        error=None,
        extra=dict(extra),
    )


def as_dict(rec: StatementRecord) -> dict[str, object]:
    d = asdict(rec)
    return {**{k: v for k, v in d.items() if k != "extra"}, **d["extra"]}


def test_sealed_line_is_the_one_the_dict_form_gives(tmp_path: Path) -> None:
    rec = record(dry_run=True, detail={"z": 1, "a": [1, 2]})
    line, digest = seal(rec, GENESIS, b"k")
    assert (line, digest) == seal(as_dict(rec), GENESIS, b"k")
    parsed = orjson.loads(line)
    assert list(parsed)[: len(CORE)] == list(CORE)
    assert list(parsed)[len(CORE) :] == ["detail", "dry_run", "prev", "hash"]
    path = tmp_path / "a.jsonl"
    path.write_bytes(line)
    assert verify_files([str(path)], b"k").ok


def test_extras_never_overwrite_core_fields() -> None:
    rec = record()
    for name in ("decision", "user", "rows", "prev", "hash", "ts"):
        assert not rec.add_extra(name, "forged")
    assert rec.add_extra("hook.note", 1)
    assert not rec.add_extra("hook.note", 2)  # first writer wins, no silent replace
    # Even an extra put in directly cannot reach the line in place of a core field.
    rec.extra["decision"] = "allow"
    parsed = orjson.loads(seal(rec, GENESIS, None)[0])
    assert parsed["decision"] == "rewrite" and parsed["user"] == "alice" and parsed["rows"] == 3
    assert parsed["hook.note"] == 1


def test_dashboard_feeds_shape_the_record_when_read() -> None:
    m = Metrics(clock=lambda: 60.0)
    blocked = record()
    blocked.decision, blocked.sql = "block", "SELECT " + "x" * 5000
    blocked.purpose = "CASE-7 review"  # the dashboard shows purposes (#17)
    m.statement(record(), 0.0015, 0.0001)
    m.statement(blocked, 0.002, 0.0001)
    stmts = m.recent("statement")
    assert [s["decision"] for s in stmts] == ["rewrite", "block"]
    assert stmts[0] == {
        "user": "alice",
        "purpose": None,
        "decision": "rewrite",
        "rules": ["r1"],
        "rows": 3,
        "bytes": 120,
        "duration_ms": 1.5,
        "seq": 1,
        "ts": 60.0,
    }
    (feed,) = m.recent("blocked")
    assert feed["ts"] == blocked.ts and feed["decision"] == "block"
    assert feed["purpose"] == "CASE-7 review" and stmts[1]["purpose"] == "CASE-7 review"
    assert len(feed["sql"]) == 2001 and feed["sql"].endswith("…")
    assert m.summary()["statements"] == {"rewrite": 1, "block": 1}
    assert m.rows_by_user(hours=1)["users"]["alice"][-1] == 6


async def test_hook_fields_cannot_forge_the_record(tmp_path: Path) -> None:
    """What the hooks put in Admission.audit lands after the core fields, never over them."""
    path = tmp_path / "a.jsonl"
    log = AuditLog(AuditConfig(path=str(path)))
    await log.start()
    forged = {"decision": "allow", "user": "mallory", "rows": 0, "hash": "x", "note": "kept"}
    adm = Admission(action="rewrite", rules=("r1",), audit={"groups": ["g"], **forged})
    stmt = Running(Plan("SELECT 1", adm, extended=False), rows=7, bytes=70)
    facts = SessionFacts(user="alice", database="db", session_id="s-1")
    await Recorder(log, ALLOW_ALL).statement(facts, stmt, Tally())
    await log.close()
    (line,) = path.read_bytes().splitlines()
    parsed = orjson.loads(line)
    assert (parsed["decision"], parsed["user"], parsed["rows"]) == ("rewrite", "alice", 7)
    assert parsed["groups"] == ["g"] and parsed["note"] == "kept"
    assert verify_files([str(path)], None).ok
