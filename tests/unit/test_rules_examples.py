"""The example rule files in rules/ validate, show every feature they promise, and ship intact.

rules/ is what a DBA copies and what `oversight demo` runs, and the one copy:
proxy/demo_rules is a symbolic link to it, which a wheel build resolves into
real files, so `pip install .` + `oversight demo` works anywhere.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import orjson
import pytest
import yaml

from proxy.rules import (
    ExtractionRule,
    FunctionRule,
    RulesError,
    SqlMask,
    TableRule,
    load_rules,
)

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "rules"
PACKAGED = ROOT / "proxy" / "demo_rules"
SCHEMA = RULES / "demo-schema.json"


def test_example_rules_load_without_problems() -> None:
    rs = load_rules(RULES)
    assert len(rs.rules) >= 6
    assert rs.defaults.mode == "enforce"
    assert set(rs.users) == {"alice", "bob", "carol"}
    assert rs.users["alice"].attributes == {"region": "north"}
    assert rs.users["bob"].attributes == {"region": "south"}


def test_examples_cover_every_feature() -> None:
    rs = load_rules(RULES)
    by_id = {r.id: r for r in rs.rules}
    people = by_id["people-by-region"]
    assert people.row_filter == "region = :region"
    assert people.columns["ssn"] == "redact"
    assert people.columns["phone"] == "partial"
    assert people.columns["email"] == "hash"
    assert isinstance(people.columns["dob"], SqlMask)
    assert by_id["cases-by-region"].columns["notes"] == "deny"
    internal = by_id["internal-schema"]
    assert (internal.table, internal.access, internal.match) == ("internal.*", "deny", None)
    assert any("public.age_band" in f.allow for f in rs.functions)
    extraction = {e.id: e for e in rs.extraction}
    assert extraction["analyst-result-cap"].max_rows_per_query == 1000
    assert extraction["analyst-hourly-volume"].window == 3600
    assert extraction["analyst-no-copy-out"].detect == "copy_out"
    assert extraction["analyst-no-copy-out"].action == "block"
    assert extraction["analyst-enumeration"].detect == "enumeration"
    decisions = {t.expect.decision for t in rs.tests}
    assert decisions == {"allow", "rewrite", "block"}


def test_every_rule_and_test_names_a_known_user_or_group() -> None:
    rs = load_rules(RULES)
    groups = {g for u in rs.users.values() for g in u.groups}
    items: list[TableRule | FunctionRule | ExtractionRule] = [
        *rs.rules,
        *rs.functions,
        *rs.extraction,
    ]
    for item in items:
        if item.match is not None:
            assert set(item.match.groups or ()) <= groups, item.id
    ids = {r.id for r in items}
    for t in rs.tests:
        assert set(t.expect.rules or ()) <= ids, t.sql


def test_schema_file_matches_the_demo_data() -> None:
    """rules/demo-schema.json stands in for the catalog in CI; it must be the demo's schema."""
    from proxy.demo.data import schema_catalog

    assert orjson.loads(SCHEMA.read_bytes()) == schema_catalog()


def test_rule_file_tests_pass(capsys: pytest.CaptureFixture[str]) -> None:
    """What `oversight test rules/ --schema rules/demo-schema.json` runs in CI."""
    from proxy.commands.rules import cmd_test

    rc = cmd_test(str(RULES), str(SCHEMA), None)
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"{len(load_rules(RULES).tests)} passed, 0 failed" in out


def test_the_packaged_rules_are_rules_dir_itself() -> None:
    """One source of truth: the package's demo rules are a link to rules/, not a copy."""
    assert PACKAGED.is_symlink(), "proxy/demo_rules must stay a link: ln -s ../rules"
    assert PACKAGED.resolve() == RULES.resolve()
    packaged = files("proxy") / "demo_rules"
    names = sorted(p.name for p in packaged.iterdir() if p.name.endswith(".yaml"))
    assert names and names == sorted(p.name for p in RULES.glob("*.yaml"))


def test_a_broken_copy_is_refused(tmp_path: Path) -> None:
    """The loader really checks these files: a typo in a copied file is reported."""
    for p in RULES.glob("*.yaml"):
        (tmp_path / p.name).write_bytes(p.read_bytes())
    people = tmp_path / "10-people.yaml"
    doc = yaml.safe_load(people.read_text())
    doc["rules"][1]["columns"]["ssn"] = "redacted"
    people.write_text(yaml.safe_dump(doc))
    with pytest.raises(RulesError) as err:
        load_rules(tmp_path)
    assert any("people-by-region" in p for p in err.value.problems)
