"""`oversight check`, `test` and `explain` as functions: output and exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.commands.rules import cmd_check, cmd_explain, cmd_test

FIX = Path(__file__).parent / "fixtures"
RULES, SCHEMA = str(FIX / "rules.yaml"), str(FIX / "schema.yaml")


def test_check_clean(capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_check(RULES, SCHEMA, None) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("ok: 5 table rules, 1 function rules, 3 extraction rules, 0 subjects")
    assert any("user dave has no attribute :region" in line for line in out)  # a warning


def test_check_without_catalog(capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_check(RULES, None, None) == 0
    assert "(no catalog)" in capsys.readouterr().out


def test_check_reports_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(
        """version: 1
rules:
  - {id: a, table: public.people, columns: {ssn: blur}}
  - {id: a, table: public.x, row_filter: "region = :nowhere"}
"""
    )
    assert cmd_check(str(p), SCHEMA, None) == 1
    out = capsys.readouterr().out
    assert f"{p}: rule a: columns.ssn: bad column policy 'blur'" in out
    assert f"{p}: rule a: id: duplicate" in out
    assert "unknown attribute :nowhere" in out
    assert "3 problem(s)" in out


def test_check_with_catalog_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "r.yaml"
    p.write_text(
        """version: 1
rules:
  - {id: nothing, table: nosuch.*}
  - {id: cols, table: public.people, columns: {salary: redact}, row_filter: "regoin = 'x'"}
functions:
  - {id: f, allow: [public.nosuch, pg_catalog.query_to_xml]}
"""
    )
    assert cmd_check(str(p), SCHEMA, None) == 1
    out = capsys.readouterr().out
    assert "rule nothing: table: nosuch.* matches no relation in the catalog" in out
    assert "rule cols: columns.salary: public.people has no column salary" in out
    assert "rule cols: row_filter: public.people has no column regoin" in out
    assert "rule f: allow: public.nosuch matches no function in the catalog" in out
    assert "query_to_xml" not in out


def test_check_bad_schema_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "s.yaml"
    bad.write_text("- just a list\n")
    assert cmd_check(RULES, str(bad), None) == 1
    assert "cannot load catalog" in capsys.readouterr().out


def test_test_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_test(RULES, SCHEMA, None) == 0
    assert "3 passed, 0 failed" in capsys.readouterr().out
    p = tmp_path / "t.yaml"
    p.write_text(
        (FIX / "rules.yaml").read_text()
        + """  - user: alice
    sql: SELECT notes FROM cases
    expect: {decision: allow}
  - user: bob
    sql: SELECT name FROM people
    expect: {decision: rewrite, rules: [people-by-region], sql_contains: ["'south'"]}
"""
    )
    assert cmd_test(str(p), SCHEMA, None) == 1
    out = capsys.readouterr().out
    assert "FAIL test 4: alice: SELECT notes FROM cases" in out
    assert "expected allow, got block" in out
    assert "actual: block ['no-case-notes']" in out
    assert "ok   test 5" in out
    assert "4 passed, 1 failed" in out


def test_explain(capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_explain("alice", "SELECT ssn FROM people", RULES, SCHEMA, None) == 0
    out = capsys.readouterr().out
    assert "decision: rewrite" in out and "rules:    people-by-region" in out
    assert "rewritten:\nSELECT ssn FROM (SELECT" in out
    assert cmd_explain("alice", "SELECT notes FROM cases", RULES, SCHEMA, None) == 0
    out = capsys.readouterr().out
    assert "decision: block" in out and "42501 oversight: blocked by no-case-notes" in out


def test_explain_bad_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "r.yaml"
    p.write_text("version: 3\n")
    assert cmd_explain("alice", "SELECT 1", str(p), None, None) == 1
    assert "version" in capsys.readouterr().out
