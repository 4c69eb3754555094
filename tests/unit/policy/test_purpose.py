"""The stated purpose in the engine and the rule models (DESIGN.md, Purpose; #17).

`oversight.purpose` is followed like search_path (tests/unit/test_gucs.py has
the transitions); here: what a statement's text does to it, the limits on a
purpose, `match.purposes`, `defaults.require_purpose` (for the matching group
only, moved along by SETs earlier in the same string, refused when unknown),
and that the decision cache keys on the purpose.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from proxy import purpose
from proxy.catalog import Catalog
from proxy.cli import main
from proxy.errors import BadPurpose, PurposeRequired
from proxy.gucs import PURPOSE, Change, SessionSettings, set_config_change
from proxy.identity import SessionFacts
from proxy.policy.changes import statement_change
from proxy.policy.engine import PolicyEngine
from proxy.policy.kinds import head
from proxy.policy.split import split
from proxy.rules import RulesError, load_rules

REQUIRE = """\
version: 1
defaults:
  require_purpose: {match: {groups: [analysts]}, pattern: "^CASE-[0-9]+ .{5,}"}
users:
  ann: {groups: [analysts], attributes: {region: north}}
  bob: {groups: [clerks], attributes: {region: north}}
rules:
  - id: cases-notes
    table: public.cases
    columns: {notes: deny}
"""
MATCHING = """\
version: 1
users:
  ann: {groups: [analysts]}
rules:
  - id: cases-for-case-7
    match: {purposes: ["CASE-7*"]}
    table: public.cases
    columns: {notes: redact}
  - id: cases-other
    table: public.cases
    access: deny
"""
ANN = SessionFacts("ann", "db")
BOB = SessionFacts("bob", "db")
GOOD = "CASE-42 fraud review"


def engine_for(tmp_path: Path, text: str, catalog: Catalog) -> PolicyEngine:
    f = tmp_path / "rules.yaml"
    f.write_text(text)
    return PolicyEngine(load_rules(f), catalog)


@pytest.fixture
def req(tmp_path: Path, catalog: Catalog) -> PolicyEngine:
    return engine_for(tmp_path, REQUIRE, catalog)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("CASE-1 fine", None),
        ("", None),
        ("x" * purpose.MAX_LENGTH, None),
        ("x" * (purpose.MAX_LENGTH + 1), "at most 200 characters"),
        ("two\nlines", "one line"),
        ("carriage\rreturn", "one line"),
        ("tab\there", "control characters"),
        ("bad \udcff surrogate", "UTF-8"),
        ("CASE-1 \ufffd", "UTF-8"),  # bytes the session's decoder could not read
    ],
)
def test_purpose_limits(value: str, why: str | None) -> None:
    got = purpose.problem(value)
    assert (got is None) if why is None else (got is not None and why in got)


@pytest.mark.parametrize(
    ("value", "globs", "fits"),
    [
        ("CASE-7 x", ["CASE-*"], True),
        ("CASE-7 a.b", ["CASE-7*"], True),  # `*` crosses dots and spaces in a purpose
        ("case-7 x", ["CASE-*"], False),  # case matters
        ("XCASE-7", ["CASE-*"], False),  # the whole purpose must match
        ("", ["*"], False),  # no purpose fits nothing
        ("CASE-1", ["CASE-?"], True),
    ],
)
def test_purpose_globs(value: str, globs: list[str], fits: bool) -> None:
    assert purpose.fits(value, globs) is fits


@pytest.mark.parametrize(
    ("sql", "change"),
    [
        (f"SET oversight.purpose = '{GOOD}'", Change("set", PURPOSE, (GOOD,))),
        ("SET LOCAL oversight.purpose TO 'CASE-1 x'", Change("local", PURPOSE, ("CASE-1 x",))),
        (
            "SET oversight.purpose = 'it''s, with a comma'",
            Change("set", PURPOSE, ("it's, with a comma",)),
        ),
        ("SET oversight.purpose = Folded", Change("set", PURPOSE, ("folded",))),
        ("SET oversight.purpose = 'default'", Change("set", PURPOSE, ("default",))),
        ("SET oversight.purpose TO DEFAULT", Change("set", PURPOSE, None)),
        ("RESET oversight.purpose", Change("set", PURPOSE, None)),
        ("SET oversight.purpose = a, b", Change("unknown", PURPOSE)),
    ],
)
def test_change_read_from_the_statement(sql: str, change: Change) -> None:
    (piece,) = split(sql)
    assert statement_change(head(piece), piece) == change


def test_set_config_of_the_purpose_is_one_string() -> None:
    c = set_config_change(["oversight.purpose", "CASE-1 a, b", "false"])
    assert c == Change("set", PURPOSE, ("CASE-1 a, b",))
    assert set_config_change(["oversight.purpose", None, "true"]) == Change("unknown", PURPOSE)


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ([("SET", Change("set", PURPOSE, ("A",))), "I"], "A"),
        ([("BEGIN", None), ("SET", Change("set", PURPOSE, ("A",))), ("ROLLBACK", None), "I"], "S"),
        ([("BEGIN", None), ("SET", Change("local", PURPOSE, ("A",))), ("COMMIT", None), "I"], "S"),
        ([("SET", Change("set", PURPOSE, ("A",))), "!error", "I"], "S"),
        (
            [("SET", Change("set", PURPOSE, ("A",))), "I", ("SET", Change("set", PURPOSE, None))],
            "S",
        ),
    ],
)
def test_purpose_follows_transactions(
    script: list[str | tuple[str, Change | None]], expected: str
) -> None:
    s = SessionSettings.start({"search_path": ("public",), PURPOSE: ("S",)})
    for step in script:
        if step == "!error":
            s.failed()
        elif isinstance(step, str):
            s.ready(step.encode())
        else:
            tag, change = step
            s.completed(tag, change)
    assert s.value(PURPOSE) == (expected,)


def test_required_purpose_refuses_the_matching_group_only(req: PolicyEngine) -> None:
    d = req.decide("SELECT id FROM cases", ANN)
    assert d.action == "block" and d.rules[0] == "defaults.require_purpose"
    assert isinstance(d.error, PurposeRequired)
    assert d.error.fields()["C"] == "42501"
    assert d.error.message == "oversight: a purpose is required"
    assert "SET oversight.purpose = 'CASE-" in (d.error.hint or "")
    assert req.decide("SELECT id FROM cases", BOB).action != "block"  # not an analyst
    assert req.decide("SELECT 1", ANN).action == "allow"  # no governed table
    assert req.decide("SELECT code FROM regions", ANN).action == "allow"
    assert req.decide("SELECT id FROM cases", replace(ANN, purpose=GOOD)).action != "block"
    short = replace(ANN, purpose="CASE-1 tiny")
    assert req.decide("SELECT id FROM cases", short).action == "block"
    # Unknown to the proxy (a computed set_config, a SET still in flight): refused.
    lost = replace(ANN, purpose=GOOD, purpose_known=False)
    assert req.decide("SELECT id FROM cases", lost).action == "block"


def test_required_purpose_follows_the_string(req: PolicyEngine) -> None:
    assert (
        req.decide(f"SET oversight.purpose = '{GOOD}'; SELECT id FROM cases", ANN).action != "block"
    )
    ok = replace(ANN, purpose=GOOD)
    for sql in (
        "RESET oversight.purpose; SELECT id FROM cases",
        "SET oversight.purpose = ''; SELECT id FROM cases",
        f"BEGIN; SET LOCAL oversight.purpose = '{GOOD}'; COMMIT; SELECT id FROM cases",
        "SELECT set_config(current_user, 'CASE-1 anything', false); SELECT id FROM cases",
    ):
        facts = ok if "''" in sql or "RESET" in sql else ANN
        d = req.decide(sql, facts)
        assert d.action == "block" and "defaults.require_purpose" in d.rules, sql


def test_a_bad_purpose_is_refused_before_the_server(req: PolicyEngine) -> None:
    for sql in (
        "SET oversight.purpose = '" + "x" * 201 + "'",
        "SET LOCAL oversight.purpose = E'two\\nlines'",
        "SELECT set_config('oversight.purpose', current_user, false)",
        "SET oversight.purpose = a, b",
    ):
        d = req.decide(sql, BOB)
        assert d.action == "block" and isinstance(d.error, BadPurpose), sql
        assert d.error.fields()["C"] == "22023"


def test_rules_match_on_the_purpose_and_the_cache_keys_on_it(
    tmp_path: Path, catalog: Catalog
) -> None:
    e = engine_for(tmp_path, MATCHING, catalog)
    assert e.decide("SELECT notes FROM cases", ANN).rules[0] == "cases-other"
    d = e.decide("SELECT notes FROM cases", replace(ANN, purpose="CASE-77 a"))
    assert d.action == "rewrite" and d.rules[0] == "cases-for-case-7"
    assert e.decide("SELECT notes FROM cases", replace(ANN, purpose="CASE-12 a")).action == "block"
    # Rules are chosen once per string: a SET before the read must come on its own.
    d = e.decide(
        "SET oversight.purpose = 'CASE-1 b'; SELECT notes FROM cases",
        replace(ANN, purpose="CASE-77 a"),
    )
    assert d.action == "block" and isinstance(d.error, PurposeRequired)


def test_a_bad_require_pattern_is_explained(tmp_path: Path) -> None:
    f = tmp_path / "rules.yaml"
    f.write_text(REQUIRE.replace("^CASE-[0-9]+ .{5,}", "^CASE-[0-9"))
    with pytest.raises(RulesError) as err:
        load_rules(f)
    assert any("require_purpose" in p and "bad pattern" in p for p in err.value.problems)


def test_oversight_check_names_a_bad_pattern(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "rules.yaml"
    f.write_text(REQUIRE.replace("^CASE-[0-9]+ .{5,}", "^CASE-[0-9"))
    assert main(["check", str(f)]) == 1
    out = capsys.readouterr()
    assert "defaults.require_purpose.pattern: bad pattern '^CASE-[0-9'" in out.out + out.err
