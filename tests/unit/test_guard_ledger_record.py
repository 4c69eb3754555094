"""A ledger detector's hit reaches the record of the statement that caused it, and its alerts.

Enforcer, Guard, Recorder and a real AuditLog; the statement's subject tally
is put on its Running the way the session's result stream fills it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from proxy.actions import Plan, Running
from proxy.alerts import Alerter, alerts_for
from proxy.audit import AuditConfig, AuditLog
from proxy.catalog import Catalog, Relation
from proxy.enforce import Enforcer
from proxy.errors import Blocked
from proxy.guard import Guard, MemoryStore
from proxy.identity import SessionFacts
from proxy.ledger.hashing import subject_hash
from proxy.ledger.tally import Tally
from proxy.recorder import Recorder
from proxy.recorder import Tally as SessionTally
from proxy.rules import AlertRoute, Defaults, ExtractionRule, RuleSet
from proxy.rules.subjects import SubjectRule
from proxy.statement import StatementRecord

KEY = b"k"
FACTS = SessionFacts(user="alice", database="db", session_id="s-1")
CATALOG = Catalog({"public.people": Relation("public", "people", reltuples=1000)})


class Observed(Alerter):
    """The records the recorder hands to the alerts, kept for the test."""

    def __init__(self) -> None:
        super().__init__([])
        self.records: list[StatementRecord] = []

    def observe(self, record: StatementRecord) -> None:
        self.records.append(record)


def enforcer(*entries: dict[str, Any]) -> Enforcer:
    rules = RuleSet(
        defaults=Defaults(unparsed="allow", statements=["all"]),
        extraction=[ExtractionRule.model_validate(e) for e in entries],
        subjects=[SubjectRule(id="person", table="public.people", key="id")],
    )
    return Enforcer(rules, CATALOG, Guard(rules, MemoryStore(), CATALOG, ledger_key=KEY))


async def test_the_hit_is_in_the_statements_own_record_and_alerted(tmp_path: Path) -> None:
    hooks = enforcer(
        {"id": "scan", "detect": "unfiltered_scan", "min_rows": 10, "action": "log"},
        {
            "id": "vip",
            "detect": "restricted_lookup",
            "subject": "person",
            "keys": [7],
            "action": "block",
        },
    )
    path = tmp_path / "audit.jsonl"
    log = AuditLog(AuditConfig(path=str(path)))
    await log.start()
    alerts = Observed()
    recorder = Recorder(log, hooks, alerts=alerts)
    sql = "SELECT * FROM people"
    adm = await hooks.decide(sql, FACTS, extended=False)
    assert adm.error is None and [h["detector"] for h in adm.audit["detectors"]] == [
        "unfiltered_scan"
    ]
    tally = Tally()
    tally.seen("person", subject_hash(KEY, "person", "7"))
    stmt = Running(Plan(sql, adm, extended=False), rows=1, bytes=10, subjects=tally)
    await recorder.statement(FACTS, stmt, SessionTally())
    # The admission's own list is shared by every run: it is left alone.
    assert [h["detector"] for h in adm.audit["detectors"]] == ["unfiltered_scan"]
    # The next statement is refused while the hit stands, and its refusal is recorded.
    refused = await hooks.decide("SELECT 1", FACTS, extended=False)
    assert isinstance(refused.error, Blocked) and refused.error.sqlstate == "42501"
    assert refused.error.message.startswith("oversight: blocked by vip: looked up a restricted")
    await log.close()
    first = orjson.loads(path.read_bytes().splitlines()[0])
    assert first["decision"] == "allow" and first["rows"] == 1  # it ran: said so, not hidden
    assert first["detectors"] == [
        {
            "rule": "scan",
            "detector": "unfiltered_scan",
            "action": "log",
            "table": "public.people",
            "reltuples": 1000,
            "threshold": 10,
        },
        {
            "rule": "vip",
            "detector": "restricted_lookup",
            "action": "block",
            "subject": "person",
            "restricted": [{"hash": subject_hash(KEY, "person", "7"), "how": "seen"}],
            "restricted_seen": 1,
            "window_s": 30 * 86400.0,
        },
    ]
    route = AlertRoute.model_validate(
        {"id": "soc", "when": {"detectors": ["restricted_lookup"]}, "webhook": "https://x/y"}
    )
    alert = alerts_for(alerts.records[0], route)
    assert alert is not None and alert.trigger == "detector" and alert.rule == "vip"
    assert alert.detectors == ("restricted_lookup",)


async def test_no_tally_no_late_hits(tmp_path: Path) -> None:
    hooks = enforcer({"id": "cov", "detect": "coverage", "subject": "person", "share": 0.001})
    path = tmp_path / "audit.jsonl"
    log = AuditLog(AuditConfig(path=str(path)))
    await log.start()
    adm = await hooks.decide("SELECT 1", FACTS, extended=False)
    await Recorder(log, hooks).statement(
        FACTS, Running(Plan("SELECT 1", adm, extended=False)), SessionTally()
    )
    tally = Tally()
    tally.seen("person", subject_hash(KEY, "person", "1"))
    await Recorder(log, hooks).statement(
        FACTS, Running(Plan("SELECT 1", adm, extended=False), subjects=tally), SessionTally()
    )
    await log.close()
    quiet, hit = (orjson.loads(line) for line in path.read_bytes().splitlines())
    assert "detectors" not in quiet
    assert hit["detectors"][0]["detector"] == "coverage" and hit["detectors"][0]["of"] == 1000
