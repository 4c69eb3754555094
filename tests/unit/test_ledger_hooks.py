"""The ledger's hook side: hashing what statements searched for, canaries, their alerts.

No network and no database: the Enforcer over a catalog with column types,
the canary set and tripwire, the statement tally merge and alert routing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from proxy.alerts import alerts_for
from proxy.alerts.formats import to_cef, to_ocsf
from proxy.catalog import Catalog, Relation
from proxy.enforce import Enforcer
from proxy.errors import Blocked
from proxy.identity import SessionFacts
from proxy.ledger.canaries import Canaries, Tripwire
from proxy.ledger.hashing import subject_hash
from proxy.ledger.statement import statement_tally
from proxy.ledger.tally import Tally
from proxy.plumbing import effects
from proxy.rules import AlertRoute, RuleSet, load_rules
from proxy.statement import StatementRecord

KEY = b"unit-ledger-key"
RULES = """
version: 1
subjects:
  - id: person
    table: public.people
    key: id
    lookups: [ssn]
    via: [{table: public.cases, column: person_id}]
canaries:
  - {id: decoys, subject: person, keys: [900001], action: block}
  - {id: quiet, subject: person, keys: [900002]}
"""
BOB = SessionFacts(user="bob", database="db", session_id="s-bob")
EVE = SessionFacts(user="eve", database="db", session_id="s-eve")
CATALOG = Catalog(
    {
        "public.people": Relation(
            "public", "people", columns=("id", "ssn", "name"), types=("int8", "text", "text")
        ),
        "public.cases": Relation(
            "public", "cases", columns=("id", "person_id"), types=("int4", "int8")
        ),
    }
)


@pytest.fixture
def rules(tmp_path: Path) -> RuleSet:
    (tmp_path / "r.yaml").write_text(RULES)
    return load_rules(tmp_path)


def ssn_hash(v: str) -> str:
    return subject_hash(KEY, "person", v, "ssn")


def key_hash(v: str) -> str:
    return subject_hash(KEY, "person", v)


async def test_literals_are_hashed_at_decision_per_statement(rules: RuleSet) -> None:
    e = Enforcer(rules, CATALOG, None, ledger_key=KEY)
    adm = await e.decide(
        "SELECT 1; SELECT * FROM people WHERE ssn = '078-05-1120' OR id IN (7, 8)",
        BOB,
        extended=False,
    )
    assert adm.looked_up == {
        1: (
            ("person", "ssn", ssn_hash("078-05-1120")),
            ("person", "id", key_hash("7")),
            ("person", "id", key_hash("8")),
        )
    }
    none = await e.decide("SELECT * FROM cases WHERE id = 7", BOB, extended=False)
    assert none.looked_up == {}


async def test_bound_values_are_hashed_at_each_run_not_at_parse(rules: RuleSet) -> None:
    e = Enforcer(rules, CATALOG, None, ledger_key=KEY)
    parsed = await e.decide("SELECT * FROM cases WHERE person_id = $1", BOB, extended=True)
    assert parsed.looked_up == {} and parsed.per_execute
    first = await e.execute(BOB, parsed, ("41",))
    second = await e.execute(BOB, parsed, ("\\x000000000000002a",))  # binary int8 42
    assert first.looked_up == {0: (("person", "person_id", key_hash("41")),)}
    assert second.looked_up == {0: (("person", "person_id", key_hash("42")),)}
    assert parsed.looked_up == {}  # the statement's own admission is not changed


async def test_execute_arguments_reach_the_prepared_statements_parameters(
    rules: RuleSet,
) -> None:
    e = Enforcer(rules, CATALOG, None, ledger_key=KEY)
    prep = await e.decide(
        "PREPARE s(int, text) AS SELECT * FROM people WHERE ssn = $2 AND id = $1",
        BOB,
        extended=False,
    )
    sub = prep.effects[0].admission
    assert sub is not None
    run_sql = "EXECUTE s(upper('x'), '078-05-1120')"
    ran = await e.decide(run_sql, BOB, extended=False)
    (effect,) = effects(run_sql, ran.token.decision.statements).values()
    adm = await e.execute(BOB, sub, effect.params)
    assert adm.looked_up == {0: (("person", "ssn", ssn_hash("078-05-1120")),)}


def test_canaries_hit_once_per_statement_by_key_or_via_never_by_lookup(rules: RuleSet) -> None:
    c = Canaries(KEY, rules.canaries)
    t = Tally()
    for _ in range(3):
        t.seen("person", key_hash("900001"))
    t.seen("person", key_hash("5"))
    t.looked_up("person", "person_id", key_hash("900002"))
    t.looked_up("person", "ssn", subject_hash(KEY, "person", "900001", "ssn"))
    hits = c.hits(t)
    assert [(h.canary, h.how, h.action) for h in hits] == [
        ("quiet", "looked_up", "alert"),
        ("decoys", "seen", "block"),
    ]
    assert c.hits(None) == [] and c.hits(Tally()) == []
    # Searched for past the tally's cap: found in what the hooks handed over.
    many = [("person", "id", key_hash(str(i))) for i in range(1500)]
    full = Tally()
    for s, col, h in [*many, ("person", "id", key_hash("900001"))]:
        full.looked_up(s, col, h)
    assert c.hits(full) == []
    (hit,) = c.hits(full, [*many, ("person", "id", key_hash("900001"))])
    assert (hit.canary, hit.how) == ("decoys", "looked_up")
    c.load([])
    assert c.hits(t) == [] and not c


def test_statement_tally_joins_seen_and_looked_up() -> None:
    assert statement_tally(None, ()) is None
    seen = Tally()
    seen.seen("person", "a" * 32)
    merged = statement_tally(seen, [("person", "ssn", "b" * 32)])
    assert merged is seen
    assert merged.field() == {
        "person": {
            "seen": ["a" * 32],
            "seen_count": 1,
            "looked_up": [{"column": "ssn", "hash": "b" * 32}],
            "looked_up_count": 1,
        }
    }
    alone = statement_tally(None, [("person", "id", "c" * 32)])
    assert alone is not None and alone.field()["person"]["seen"] == []


async def test_a_tripped_session_is_refused_and_others_are_not(rules: RuleSet) -> None:
    wire = Tripwire()
    e = Enforcer(rules, CATALOG, None, ledger_key=KEY, tripwire=wire)
    parsed = await e.decide("SELECT * FROM people WHERE id = $1", BOB, extended=True)
    wire.trip("s-bob", "decoys")
    wire.trip("s-bob", "quiet")  # the first canary names the refusal
    for adm in (
        await e.decide("SELECT 1", BOB, extended=False),
        await e.execute(BOB, parsed, ("1",)),
        await e.function_call(BOB, 42),
    ):
        assert isinstance(adm.error, Blocked) and adm.action == "block"
        assert adm.error.message == (
            "oversight: blocked by decoys: this session touched a canary record"
        )
        assert adm.rules == ("decoys",)
    assert (await e.decide("SELECT 1", EVE, extended=False)).error is None
    wire.forget("s-bob")
    assert (await e.decide("SELECT 1", BOB, extended=False)).error is None


def record(**extra: Any) -> StatementRecord:
    return StatementRecord(
        ts="2026-12-04T17:00:00.000000Z",
        session="s1",
        user="bob",
        groups=[],
        client="10.0.0.5:5555",
        application="psql",
        database="app",
        sql="SELECT * FROM people",
        fingerprint="abc123",
        kind="select",
        tables=["public.people"],
        columns=[],
        decision="allow",
        rules=[],
        reason="",
        rewritten=None,
        rows=300,
        bytes=0,
        duration_ms=0.1,
        error=None,
        extra=extra,
    )


def test_a_canary_alert_goes_to_canary_routes_only_and_names_the_canary() -> None:
    canary_route = AlertRoute.model_validate(
        {"id": "soc", "when": {"canaries": True}, "webhook": "http://x/"}
    )
    blocks = AlertRoute.model_validate(
        {"id": "ops", "when": {"decisions": ["block"]}, "webhook": "http://x/"}
    )
    rec = record(canaries=["decoys"])
    alert = alerts_for(rec, canary_route)
    assert alert is not None and alert.trigger == "canary" and alert.rule == "decoys"
    assert "decoys" in alert.reason and alert.rules == ("decoys",)
    assert alerts_for(rec, blocks) is None
    assert alerts_for(record(), canary_route) is None
    assert b"canary decoys touched by bob" in to_ocsf(alert)
    assert "canary:allow" in to_cef(alert)


def test_a_canary_key_past_the_cap_is_listed_all_the_same() -> None:
    """The row reader stops hashing new keys at the cap, except canary keys."""
    from dataclasses import dataclass

    from proxy.ledger.rows import Column, RowReader
    from proxy.ledger.tally import CAP

    @dataclass
    class Owner:
        subjects: Tally | None = None

    owner = Owner()
    col = Column(0, "person", 20)  # int8, text format
    reader = RowReader((col,), KEY, bytes.decode, owner, {"person": frozenset({"900001"})})
    for i in range(1, CAP + 500):
        reader.values([str(i)])
    reader.values(["900001"])
    tally = owner.subjects
    assert tally is not None
    person = tally.subjects["person"]
    assert person.seen_count == CAP + 500 and len(person.seen) == CAP + 1
    assert key_hash("900001") in person.seen
    assert [h.canary for h in Canaries(KEY, [_decoys()]).hits(tally)] == ["decoys"]


def _decoys() -> Any:
    from proxy.rules.subjects import CanaryRule

    return CanaryRule(id="decoys", subject="person", keys=["900001"], action="block")
