"""One literal redactor: the engine's path (its own tokens) and the audit's (raw text) agree."""

from __future__ import annotations

import pytest

from proxy.policy.split import SplitError, split
from proxy.redact import redact, redact_error, redact_sql

CORPUS = [
    "SELECT -5, 3.2e4, $1, 'x'",
    "SELECT name FROM people WHERE ssn = '123-45-6789' LIMIT 10",
    "SHOW search_path",
    "SET search_path = 'a', public",
    "VACUUM people",
    "EXPLAIN ANALYZE SELECT 5",
    "SELECT E'a\\'b', x'1F', B'101', U&'d\\0061t'",
    "SELECT 1::int, a[2] -- 'a comment keeps its quote'\n FROM t",
    "SELECT $tag$ secret $tag$, $$ also $$",
    "COPY t FROM STDIN WITH (DELIMITER ',')",
    "select $1::int4 /* 'x' */ + 2",
    "SELECT interval '1 day'",
    "INSERT INTO t VALUES (1, 'a'), (2, 'b')",
]


@pytest.mark.parametrize("sql", CORPUS)
def test_the_engine_and_the_audit_trail_redact_alike(sql: str) -> None:
    (piece,) = split(sql)
    assert redact(piece.text, piece.tokens, piece.base)[0] == redact_sql(sql)


@pytest.mark.parametrize("sql", CORPUS)
def test_no_quoted_value_survives(sql: str) -> None:
    for secret in ("123-45-6789", "secret", "also", "1 day", "'a'", "1F"):
        assert secret not in redact_sql(sql)


def test_a_second_statement_is_redacted_from_its_own_offsets() -> None:
    _, second = split("SELECT 1; SELECT 'two' AS x")
    assert redact(second.text, second.tokens, second.base)[0] == "SELECT ? AS x"
    assert redact(second.text, second.tokens, second.base)[2] == ("two",)


def test_a_data_exception_loses_its_quoted_value() -> None:
    err = '22P02: invalid input syntax for type bigint: "078-05-1120"'
    assert redact_error(err) == '22P02: invalid input syntax for type bigint: "?"'
    assert (
        redact_error('42703: column "ssn" does not exist') == '42703: column "ssn" does not exist'
    )
    assert redact_error(None) is None


def test_a_text_that_does_not_tokenize_is_not_quoted_in_the_reason() -> None:
    with pytest.raises(SplitError) as e:
        split("SELECT 1 WHERE a = '078-05-1120")
    assert "078-05" not in str(e.value) and "tokenize" in str(e.value)
