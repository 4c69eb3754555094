"""COPY t TO reads t: all its columns or the listed ones; COPY t FROM writes t.

So `COPY t TO STDOUT` and `COPY t (id, notes) TO STDOUT` are refused when a column is
denied, like `SELECT *` and `SELECT notes`; masks and row filters still apply to
what is copied out; COPY FROM needs the rule's consent like any write.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.catalog import Catalog
from proxy.errors import Blocked
from proxy.policy.engine import PolicyEngine

from .copyrules import ALICE, PEOPLE, make


@pytest.fixture
def engine(tmp_path: Path, catalog: Catalog) -> PolicyEngine:
    return make(tmp_path, catalog)


@pytest.mark.parametrize(
    "sql",
    [
        "COPY cases TO STDOUT",
        "COPY public.cases TO STDOUT (FORMAT csv)",
        "COPY cases (id, notes) TO STDOUT",
        'COPY cases ("notes") TO STDOUT WITH CSV',
        "COPY BINARY cases TO STDOUT",
    ],
)
def test_copy_to_reading_a_denied_column_is_refused(engine: PolicyEngine, sql: str) -> None:
    d = engine.decide(sql, ALICE)
    assert d.action == "block"
    assert isinstance(d.error, Blocked) and d.error.rule == "cases"
    assert d.error.reason == "column public.cases.notes is denied"


def test_copy_to_reads_the_listed_or_all_columns(engine: PolicyEngine) -> None:
    (s,) = engine.decide("COPY people TO STDOUT", ALICE).statements
    assert s.columns == tuple(
        f"public.people.{c}" for c in ("dob", "email", "id", "name", "region", "ssn")
    )
    (s,) = engine.decide("COPY cases (id, status) TO STDOUT", ALICE).statements
    assert s.columns == ("public.cases.id", "public.cases.status") and s.copy_out


def test_copy_to_of_allowed_columns_is_masked(engine: PolicyEngine) -> None:
    d = engine.decide("COPY cases (id, status) TO STDOUT (FORMAT csv)", ALICE)
    assert d.action == "rewrite"
    assert d.sql.startswith("COPY (SELECT id, status FROM (SELECT ")
    assert "'****' AS \"status\"" in d.sql
    assert 'CASE WHEN FALSE THEN "notes" END AS "notes"' in d.sql
    d = engine.decide("COPY people TO STDOUT", ALICE)
    assert d.sql == f"COPY (SELECT * FROM {PEOPLE}) TO STDOUT"


def test_copy_to_of_a_denied_table_is_refused(engine: PolicyEngine) -> None:
    d = engine.decide("COPY internal.secrets (id) TO STDOUT (FORMAT csv)", ALICE)
    assert d.action == "block" and d.rules[0] == "secrets"


def test_copy_from_is_a_write_checked_by_the_rule(engine: PolicyEngine) -> None:
    sql = "COPY sandbox.scratch (a, b) FROM STDIN (FORMAT binary)"
    d = engine.decide(sql, ALICE)
    assert d.action == "allow" and d.sql == sql and d.rules == ("scratch",)
    assert not d.statements[0].copy_out
    for sql, rule, reason in (
        ("COPY cases FROM STDIN (FORMAT csv)", "cases", "COPY on governed table"),
        ("COPY people (id) FROM STDIN WITH CSV", "people", "COPY on governed table"),
        ("COPY internal.secrets FROM STDIN", "secrets", "access to internal.secrets"),
    ):
        d = engine.decide(sql, ALICE)
        assert d.action == "block" and d.rules[0] == rule, sql
        assert d.reason.startswith(reason), d.reason


def test_copy_to_or_from_a_server_file_is_refused(engine: PolicyEngine) -> None:
    for sql in (
        "COPY officers TO '/tmp/x' (FORMAT csv)",
        "COPY officers TO PROGRAM 'cat' CSV",
        "COPY sandbox.scratch FROM $$/etc/passwd$$",
        "COPY (SELECT 1) TO PROGRAM 'cat'",
    ):
        d = engine.decide(sql, ALICE)
        assert d.action == "block" and d.rules[0] == "defaults.side_channels", sql
