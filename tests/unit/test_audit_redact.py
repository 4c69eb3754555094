"""Literal redaction for the audit log's `sql` and `rewritten` fields."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.audit import redact_sql
from proxy.redact import redact_fallback

CASES = [
    ("SELECT * FROM people WHERE ssn = '123-45-6789'", "SELECT * FROM people WHERE ssn = ?"),
    (
        "select a from t where b = 5 and c > 2.5e3 limit 10",
        "select a from t where b = ? and c > ? limit ?",
    ),
    ("SELECT 'it''s', E'a\\'b', $$dollar$$, $t$x'y$t$", "SELECT ?, ?, ?, ?"),
    ("SELECT x'ff', b'01', N'nat', U&'d\\0061t'", "SELECT ?, ?, ?, ?"),
    ("SELECT name::text, '2024-01-01'::date FROM t", "SELECT name::text, ?::date FROM t"),
    (
        'SELECT a1, "col 2", t.x FROM s.t WHERE id IN (1, 2, 3)',
        'SELECT a1, "col 2", t.x FROM s.t WHERE id IN (?, ?, ?)',
    ),
    ("SELECT $1, $2 FROM t WHERE a = $1", "SELECT $1, $2 FROM t WHERE a = $1"),
    ("SELECT 1 -- keep 'comment'\n FROM t", "SELECT ? -- keep 'comment'\n FROM t"),
    ("SELECT -5, interval '1 day', true, null", "SELECT -?, interval ?, true, null"),
    ("SET search_path = 'secret', public", "SET search_path = ?, public"),
    ("SHOW search_path", "SHOW search_path"),
    (
        "INSERT INTO t VALUES (1, 'a'); DELETE FROM t WHERE x = 'b'",
        "INSERT INTO t VALUES (?, ?); DELETE FROM t WHERE x = ?",
    ),
]


@pytest.mark.parametrize(("sql", "expected"), CASES)
def test_redact_sql(sql: str, expected: str) -> None:
    assert redact_sql(sql) == expected


@pytest.mark.parametrize(("sql", "expected"), CASES[:4] + CASES[5:8])
def test_fallback_agrees_on_ordinary_sql(sql: str, expected: str) -> None:
    assert redact_fallback(sql) == expected


def test_unterminated_string_uses_fallback_and_hides_the_rest() -> None:
    assert redact_sql("SELECT * FROM t WHERE name = 'Jane Do") == "SELECT * FROM t WHERE name = ?"
    assert redact_sql("SELECT $$never ends") == "SELECT ?"
    assert redact_fallback("SELECT \"ident\" FROM t /* 'x' */ WHERE a='b") == (
        "SELECT \"ident\" FROM t /* 'x' */ WHERE a=?"
    )


@settings(max_examples=150, deadline=None)
@given(st.text(min_size=1).filter(lambda s: "\x00" not in s))
def test_no_string_literal_survives(value: str) -> None:
    quoted = "'" + value.replace("'", "''") + "'"
    sql = f"SELECT id FROM people WHERE name = {quoted} AND id > 7"
    assert redact_sql(sql) == "SELECT id FROM people WHERE name = ? AND id > ?"
    assert redact_fallback(sql) == "SELECT id FROM people WHERE name = ? AND id > ?"


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0) | st.floats(min_value=0, allow_nan=False, allow_infinity=False))
def test_no_number_survives(value: float) -> None:
    sql = f"SELECT * FROM t WHERE x = {value!r} LIMIT 5"
    assert redact_sql(sql) == "SELECT * FROM t WHERE x = ? LIMIT ?"


def test_large_statement_uses_the_scanner_with_the_same_result() -> None:
    rows = ",".join(f"({i}, 'name {i}')" for i in range(5000))
    sql = f"INSERT INTO t VALUES {rows}"
    assert len(sql) > 64 * 1024
    assert redact_sql(sql) == "INSERT INTO t VALUES " + ",".join(["(?, ?)"] * 5000)
    assert redact_sql("SELECT name FROM people") == "SELECT name FROM people"
