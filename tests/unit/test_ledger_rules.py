"""The `subjects:`/`canaries:` sections, the ledger hash and the per-statement tally."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.ledger.hashing import subject_hash
from proxy.ledger.tally import CAP, Tally
from proxy.rules import RulesError, load_rules

GOOD = """
version: 1
subjects:
  - id: person
    table: public.people
    key: id
    lookups: [ssn, phone]
    via: [{table: public.cases, column: person_id}]
canaries:
  - {id: decoys, subject: person, keys: [900001, "900002"], action: block}
"""


def _write(tmp_path: Path, *texts: str) -> Path:
    for i, t in enumerate(texts):
        (tmp_path / f"{i:02d}.yaml").write_text(t)
    return tmp_path


def test_subjects_and_canaries_load(tmp_path: Path) -> None:
    rs = load_rules(_write(tmp_path, GOOD))
    (person,) = rs.subjects
    assert person.key_columns() == [("public.people", "id"), ("public.cases", "person_id")]
    assert rs.canaries[0].keys == ["900001", "900002"]
    assert rs.canaries[0].action == "block"
    assert rs.subject("person") is person and rs.subject("nobody") is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("subjects: [{id: p, table: people, key: id}]", "subjects.0.table: 'people': write"),
        ("subjects: [{id: p, table: public.people, key: Id}]", "subjects.0.key: 'Id'"),
        ("subjects: [{id: p, table: public.people}]", "subjects.0.key"),
        ("subjects: [{id: p, table: public.people, key: id, lookups: [id]}]", "id is the key"),
        ("subjects: [{id: p, table: public.p, key: id, bogus: 1}]", "subjects.0.bogus"),
        ("canaries: [{id: c, subject: nobody, keys: [1]}]", "canary c: subject: no subject"),
        ("canaries: [{id: c, subject: p, keys: []}]", "canaries.0.keys"),
        ("canaries: [{id: c, subject: p, keys: [1.5]}]", "a canary key is a string or"),
        ("canaries: [{id: c, subject: p, keys: [1], action: shout}]", "canaries.0.action"),
    ],
)
def test_mistakes_are_explained(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(RulesError) as e:
        load_rules(_write(tmp_path, f"version: 1\n{text}\n"))
    assert any(problem in p for p in e.value.problems), e.value.problems


def test_a_column_claimed_by_two_subjects_and_duplicate_ids(tmp_path: Path) -> None:
    other = """
version: 1
subjects:
  - {id: patient, table: public.people, key: id}
  - {id: person, table: public.x, key: id}
"""
    with pytest.raises(RulesError) as e:
        load_rules(_write(tmp_path, GOOD, other))
    text = "\n".join(e.value.problems)
    assert "public.people.id: already a column of subject person" in text
    assert "rule person: id: duplicate" in text


def test_canary_may_name_a_subject_of_another_file(tmp_path: Path) -> None:
    subj, can = GOOD.split("canaries:")
    rs = load_rules(_write(tmp_path, subj, "version: 1\ncanaries:" + can))
    assert rs.canaries[0].subject == "person"


def test_hash_is_keyed_and_separates_roles() -> None:
    k = b"k1"
    h = subject_hash(k, "person", "42")
    assert len(h) == 32 and int(h, 16) >= 0
    assert h == subject_hash(k, "person", "42")
    assert h != subject_hash(b"k2", "person", "42")  # keyed
    assert h != subject_hash(k, "patient", "42")  # per subject
    assert h != subject_hash(k, "person", "42", "phone")  # a key is not a phone number
    assert "42" not in subject_hash(k, "person", "4242")


def test_tally_caps_lists_and_keeps_counting() -> None:
    t = Tally()
    assert not t
    for i in range(CAP + 5):
        t.seen("person", f"h{i}")
        t.seen("person", f"h{i}")  # a repeat within the cap is not counted twice
    t.looked_up("person", "ssn", "x")
    t.looked_up("person", "ssn", "x")
    t.looked_up("person", "id", "x")
    f = t.field()["person"]
    # Past the cap the list stops and every occurrence counts: "at least" from there on.
    assert len(f["seen"]) == CAP and f["seen_count"] == CAP + 10
    assert f["seen"][:2] == ["h0", "h1"]
    assert f["looked_up"] == [{"column": "ssn", "hash": "x"}, {"column": "id", "hash": "x"}]
    assert f["looked_up_count"] == 2
    assert "h0" in t.hashes() and "x" in t.hashes()
