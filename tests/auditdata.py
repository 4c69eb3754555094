"""Audit files for report tests, written by the real writer (proxy/audit/writer.py).

Two proxy instances' logs under `root`: instance `a` rotates (daily, as the
writer does at UTC midnight), so its records span a rotated file and the live
one; instance `b` has one file. The records are StatementRecords with
`subjects` fields made by the real Tally and ledger hash, plus session and
canary events, so the reports read exactly what a running proxy writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from proxy.audit import AuditConfig, AuditLog
from proxy.ledger.hashing import subject_hash
from proxy.ledger.tally import Tally
from proxy.statement import StatementRecord

AUDIT_KEY = b"audit-key"
OLD_KEY = b"ledger-key-2025"  # the ledger key before a rotation
NEW_KEY = b"ledger-key-2026"
DAY1 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
HOSTILE = "<script>alert('x')</script>"
KEY_COLUMNS = ("id", "person_id")


class Clock:
    def __init__(self, when: datetime) -> None:
        self.now = when

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Stmt:
    """One synthesized statement record."""

    user: str
    session: str
    when: datetime
    rows: int = 0
    nbytes: int = 0
    seen: tuple[str, ...] = ()
    looked: tuple[tuple[str, str], ...] = ()  # (column, value)
    subject: str = "person"
    key: bytes = NEW_KEY
    decision: str = "allow"
    reason: str = ""
    sql: str = "SELECT * FROM people WHERE id = ?"
    purpose: str | None = None
    tables: tuple[str, ...] = ("public.people",)
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self) -> StatementRecord:
        tally = Tally()
        for value in self.seen:
            tally.seen(self.subject, subject_hash(self.key, self.subject, value))
        for column, value in self.looked:
            hashed_as = "" if column in KEY_COLUMNS else column
            tally.looked_up(
                self.subject, column, subject_hash(self.key, self.subject, value, hashed_as)
            )
        extra = dict(self.extra)
        if tally:
            extra["subjects"] = tally.field()
        return StatementRecord(
            ts="",  # set by write()
            session=self.session,
            user=self.user,
            groups=["analysts"],
            client="10.0.0.7:50000",
            application="psql",
            database="warehouse",
            sql=self.sql,
            fingerprint="fp-" + self.sql[:8],
            kind="select",
            tables=list(self.tables),
            columns=[f"{t}.id" for t in self.tables],
            decision=self.decision,
            rules=["people-by-region"] if self.decision != "allow" else [],
            reason=self.reason,
            rewritten=None,
            rows=self.rows,
            bytes=self.nbytes,
            duration_ms=1.5,
            error=None,
            purpose=self.purpose,
            extra=extra,
        )


Item = Stmt | tuple[datetime, dict[str, Any]]  # a statement or (when, event record)


async def write_log(path: Path, items: list[Item]) -> None:
    """Write `items` in order with the real writer; a day change rotates the file."""
    first = items[0].when if isinstance(items[0], Stmt) else items[0][0]
    clock = Clock(first)
    log = AuditLog(AuditConfig(path=str(path), key=AUDIT_KEY, fsync_interval=0), clock=clock)
    await log.start()
    for item in items:
        if isinstance(item, Stmt):
            clock.now = item.when
            rec = item.record()
            rec.ts = log.now()
            await log.write(rec)
        else:
            clock.now = item[0]
            await log.write(dict(item[1]))
    await log.close()


def scenario() -> dict[str, list[Item]]:
    """The two instances' records. Person 42 is received or searched for by alice (before
    the ledger key rotation), carol (via a case's person_id) and the hostile user; bob
    searched for an SSN; dave touched 42 only as another subject and as a name."""
    d1, d2, d3 = DAY1, DAY1 + timedelta(days=1), DAY1 + timedelta(days=2)
    a: list[Item] = [
        (d1, {"event": "connect", "session": "s1", "user": "alice"}),
        Stmt(
            "alice",
            "s1",
            d1 + timedelta(minutes=1),
            rows=2,
            nbytes=200,
            seen=("42", "43"),
            looked=(("id", "42"),),
            key=OLD_KEY,
            purpose="CASE-1 fraud review",
        ),
        Stmt(
            "alice",
            "s1",
            d1 + timedelta(minutes=30),
            rows=10,
            nbytes=1000,
            seen=("43", "44", "45"),
            key=OLD_KEY,
            purpose="CASE-1 fraud review",
        ),
        (d1 + timedelta(hours=1), {"event": "disconnect", "session": "s1", "user": "alice"}),
        Stmt(
            "bob",
            "s2",
            d2 + timedelta(hours=5),
            rows=1,
            nbytes=50,
            looked=(("ssn", "123-45-6789"),),
        ),
        Stmt(
            "bob",
            "s2",
            d2 + timedelta(hours=5, minutes=1),
            decision="block",
            reason="reads denied column public.people.ssn",
        ),
        Stmt(
            "alice",
            "s4",
            d2 + timedelta(hours=14),
            rows=7,
            nbytes=700,
            extra={
                "detectors": [
                    {"rule": "scrape", "detector": "enumeration", "action": "alert", "pages": 12}
                ]
            },
        ),
        (
            d2 + timedelta(hours=14, minutes=1),
            {
                "event": "canary",
                "session": "s4",
                "user": "alice",
                "canary": "decoy-people",
                "subject": "person",
                "action": "alert",
            },
        ),
        Stmt(
            "alice",
            "s4",
            d2 + timedelta(hours=14, minutes=2),
            decision="cutoff",
            rows=1000,
            nbytes=5000,
            reason="result limit of 1000 rows reached",
        ),
        Stmt("dave", "s5", d2 + timedelta(hours=15), rows=3, subject="account", seen=("42",)),
        Stmt(
            "dave", "s5", d2 + timedelta(hours=15, minutes=5), rows=1, looked=(("full_name", "42"),)
        ),
    ]
    b: list[Item] = [
        Stmt(
            "carol",
            "s3",
            d3 + timedelta(hours=8),
            rows=5,
            nbytes=500,
            looked=(("person_id", "42"),),
            tables=("public.cases",),
        ),
        Stmt(
            HOSTILE,
            "s6",
            d3 + timedelta(hours=9),
            rows=1,
            nbytes=10,
            seen=("42",),
            sql="SELECT '<script>bad()</script>' FROM people",
        ),
        Stmt(
            "alice",
            "s7",
            d3 + timedelta(hours=23),
            rows=4,
            nbytes=40,
            seen=tuple(str(i) for i in range(100, 110)),
            extra={},
        ),
    ]
    return {"a": a, "b": b}


async def write_scenario(root: Path) -> dict[str, Path]:
    """Both instances' logs under root/a and root/b; returns their live paths."""
    out = {}
    for name, items in scenario().items():
        (root / name).mkdir(parents=True, exist_ok=True)
        out[name] = root / name / "oversight-audit.jsonl"
        await write_log(out[name], items)
    return out


def read_records(files: list[str]) -> list[dict[str, Any]]:
    """Every record of `files` as parsed JSON (the ground truth the reports must match)."""
    out = []
    for name in files:
        out += [orjson.loads(line) for line in Path(name).read_bytes().splitlines() if line]
    return out
