"""Rule-file models: loading, merging, every problem reported, matching, sizes."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from proxy.identity import SessionFacts
from proxy.rules import RulesError, load_rules, parse_duration, parse_size

FIXTURE = Path(__file__).parent / "fixtures" / "rules.yaml"


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def problems(path: Path) -> list[str]:
    with pytest.raises(RulesError) as ei:
        load_rules(path)
    return ei.value.problems


def test_fixture_loads() -> None:
    rs = load_rules(FIXTURE)
    assert [r.id for r in rs.rules][:2] == ["people-by-region", "no-case-notes"]
    assert len(rs.version) == 16
    assert rs.version == load_rules(FIXTURE).version


def test_principal_and_extraction_matching() -> None:
    rs = load_rules(FIXTURE)
    who = rs.principal(SessionFacts("alice", "db"))
    assert who.groups == {"analysts"} and who.attributes == {"region": "north"}
    assert rs.principal(SessionFacts("nobody", "db")).groups == frozenset()
    ids = [r.id for r in rs.matching_extraction(SessionFacts("alice", "db"))]
    assert ids == ["result-cap", "hourly-volume", "no-copy-out"]
    assert rs.matching_extraction(SessionFacts("carol", "db")) == []
    cap = rs.extraction[0]
    assert cap.max_rows_per_query == 10000 and cap.max_bytes_per_query == 50_000_000
    assert rs.extraction[1].window == 3600.0 and rs.extraction[1].action == "throttle"
    assert rs.extraction[2].detect == "copy_out"


@pytest.mark.parametrize(
    ("text", "value"),
    [("50MB", 50_000_000), ("1MiB", 1_048_576), ("10kb", 10_000), (123, 123), ("2G", 2 * 10**9)],
)
def test_sizes(text: str | int, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize(("text", "value"), [("1h", 3600), ("15m", 900), ("30", 30), (5, 5)])
def test_durations(text: str | int, value: float) -> None:
    assert parse_duration(text) == value


@pytest.mark.parametrize("bad", ["lots", "MB", True, "-1MB"])
def test_bad_sizes(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


def test_directory_merge_in_name_order(tmp_path: Path) -> None:
    write(tmp_path, "b.yaml", "version: 1\nrules:\n  - {id: second, table: public.b}\n")
    write(tmp_path, "a.yaml", "version: 1\nrules:\n  - {id: first, table: public.a}\n")
    write(tmp_path, "notes.txt", "not yaml rules")
    rs = load_rules(tmp_path)
    assert [r.id for r in rs.rules] == ["first", "second"]
    assert rs.sources["second"].endswith("b.yaml")


def test_every_problem_is_listed(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yaml",
        """version: 1
users:
  alice: {attributes: {region: north}}
rules:
  - id: r1
    table: people
    columns: {ssn: blur}
    bogus: 1
  - id: r2
    table: public.x
    row_filter: "a = :region and"
  - id: r3
    table: public.y
    row_filter: "a = :nope"
    columns: {dob: {sql: "date_trunc('year', dob"}}
extraction:
  - id: e1
    max_bytes_per_query: lots
  - id: e2
    max_rows: 5
""",
    )
    write(tmp_path, "b.yaml", "version: 1\nrules:\n  - {id: r2, table: public.z}\n")
    out = problems(tmp_path)
    text = "\n".join(out)
    assert "a.yaml: rule r1: table:" in text
    assert "a.yaml: rule r1: columns.ssn: bad column policy 'blur'" in text
    assert "a.yaml: rule r1: bogus: Extra inputs are not permitted" in text
    assert "a.yaml: rule r2: row_filter: does not parse" in text
    assert "a.yaml: rule r3: row_filter/columns: unknown attribute :nope" in text
    assert "a.yaml: rule r3: columns.dob: does not parse" in text
    assert "a.yaml: rule e1: max_bytes_per_query: bad size" in text
    assert "rule e2: (rule): max_rows/max_bytes/max_queries need a window" in text
    assert "b.yaml: rule r2: id: duplicate" in text
    assert len(out) == 9


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("version: 2\n", "version"),
        ("rules: []\n", "version: Field required"),
        ("- a\n", "version: a rule file is a mapping"),
        ("version: 1\ndefaults: {mode: loud}\n", "defaults.mode"),
        ("version: 1\ndefaults: {statements: select}\n", None),
        ("version: 1\nrules: {id: x}\n", "rules: must be a list"),
        ("version: 1\nrules:\n  - {id: x, table: public.t, access: maybe}\n", "rule x: access"),
        ("version: 1\nrules:\n  - {table: public.t}\n", "rules[0]: id: Field required"),
        ("version: 1\nfunctions:\n  - {id: f}\n", "rule f: allow: Field required"),
        (
            "version: 1\nrules:\n  - {id: x, table: public.t, match: {client_cidrs: [nope]}}\n",
            "bad network",
        ),
        ("version: 1\nrules:\n  - {id: x, table: public.t, match: {hours: [late]}}\n", "hours"),
        ("version: 1\nrules:\n  - {id: x, table: public.t, row_filter: 'SELECT 1'}\n", "not a"),
        ("version: 1\ntests:\n  - {user: a, sql: x, expect: {decision: maybe}}\n", "tests[0]"),
        ("version: 1\nextraction:\n  - {id: e, detect: telepathy}\n", "rule e: detect"),
        ("version: 1\n: [\n", "not valid YAML"),
    ],
)
def test_single_problems(tmp_path: Path, text: str, needle: str | None) -> None:
    p = write(tmp_path, "r.yaml", text)
    if needle is None:
        assert load_rules(p).defaults.statements == ["select"]
        return
    out = problems(p)
    assert any(needle in line for line in out), out
    assert all(line.startswith(str(p)) for line in out)


def test_two_defaults_conflict(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "version: 1\ndefaults: {mode: dry_run}\n")
    write(tmp_path, "b.yaml", "version: 1\ndefaults: {mode: enforce}\n")
    assert any("defaults: already set" in p for p in problems(tmp_path))


def test_missing_path(tmp_path: Path) -> None:
    assert "no such file" in problems(tmp_path / "nope.yaml")[0]
    assert "no *.yaml" in problems(tmp_path)[0]


def _rule_with_match(tmp_path: Path, match: str) -> Path:
    return write(
        tmp_path,
        "m.yaml",
        f"version: 1\nusers: {{u: {{groups: [g]}}}}\nrules:\n  - id: r\n"
        f"    table: public.t\n    match: {match}\n",
    )


@pytest.mark.parametrize(
    ("match", "facts", "fits"),
    [
        ("{users: [u]}", SessionFacts("u", "d"), True),
        ("{users: [u]}", SessionFacts("v", "d"), False),
        ("{users: u}", SessionFacts("u", "d"), True),
        ("{groups: [g]}", SessionFacts("u", "d"), True),
        ("{groups: [h]}", SessionFacts("u", "d"), False),
        ("{client_cidrs: [10.0.0.0/8]}", SessionFacts("u", "d", client_ip="10.1.2.3"), True),
        ("{client_cidrs: [10.0.0.0/8]}", SessionFacts("u", "d", client_ip="11.1.2.3"), False),
        ("{client_cidrs: ['::1/128']}", SessionFacts("u", "d", client_ip="::1"), True),
        (
            "{client_cidrs: [10.0.0.0/8]}",
            SessionFacts("u", "d", client_ip="::ffff:10.1.2.3"),
            True,
        ),
        ("{client_cidrs: [10.0.0.0/8]}", SessionFacts("u", "d", client_ip="/tmp/.s"), False),
        ("{applications: [psql]}", SessionFacts("u", "d", application="psql"), True),
        ("{applications: [psql]}", SessionFacts("u", "d", application="DBeaver"), False),
        ("{hours: ['08:00-18:00']}", SessionFacts("u", "d", now=datetime(2026, 1, 1, 9)), True),
        ("{hours: ['08:00-18:00']}", SessionFacts("u", "d", now=datetime(2026, 1, 1, 18)), False),
        ("{hours: ['22-6']}", SessionFacts("u", "d", now=datetime(2026, 1, 1, 23)), True),
        ("{hours: ['22-6']}", SessionFacts("u", "d", now=datetime(2026, 1, 1, 5, 59)), True),
        ("{hours: ['22-6']}", SessionFacts("u", "d", now=datetime(2026, 1, 1, 12)), False),
        ("{groups: [g], users: [v]}", SessionFacts("u", "d"), False),
    ],
)
def test_match(tmp_path: Path, match: str, facts: SessionFacts, fits: bool) -> None:
    rs = load_rules(_rule_with_match(tmp_path, match))
    assert [r.id for r in rs.matching_rules(facts)] == (["r"] if fits else [])


def test_uses_hours(tmp_path: Path) -> None:
    assert load_rules(_rule_with_match(tmp_path, "{hours: ['8-9']}")).uses_hours
    assert not load_rules(FIXTURE).uses_hours


def test_glob_names() -> None:
    rs = load_rules(FIXTURE)
    internal = next(r for r in rs.rules if r.id == "internal-schema")
    assert internal.names("internal.secrets")
    assert not internal.names("internal.a.b")
    assert not internal.names("public.internal")
