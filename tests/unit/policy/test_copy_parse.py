"""COPY in every form PostgreSQL accepts, and the text sent upstream when it is rewritten.

sqlglot 30 parses only `COPY ... WITH (options)`; copystmt.py reads the rest of
PostgreSQL's grammar (options without WITH, the legacy option words, COPY BINARY t)
and hands the tree generic options that print as `WITH (...)`. Whatever lies
outside that grammar is not understood and follows `defaults.unparsed`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import ParseError

from proxy.catalog import Catalog
from proxy.errors import NotUnderstood
from proxy.policy.copystmt import parse_copy
from proxy.policy.engine import PolicyEngine
from proxy.policy.split import split

from .copyrules import ALICE, PEOPLE, make

_PG = Postgres()


@pytest.fixture
def engine(tmp_path: Path, catalog: Catalog) -> PolicyEngine:
    return make(tmp_path, catalog)


def generated(sql: str) -> str:
    return _PG.generate(parse_copy(split(sql)[0], _PG))


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # The parenthesised option list, with or without WITH (asyncpg omits it).
        ("COPY t TO STDOUT (FORMAT binary)", "COPY t TO STDOUT WITH (FORMAT binary)"),
        ("COPY t TO STDOUT WITH (FORMAT binary)", "COPY t TO STDOUT WITH (FORMAT binary)"),
        (
            'COPY "compat"."scratch"("id","label") FROM STDIN (FORMAT binary)',
            'COPY "compat"."scratch" ("id", "label") FROM STDIN WITH (FORMAT binary)',
        ),
        (
            "COPY (SELECT 1) TO STDOUT (FORMAT 'csv', HEADER true)",
            "COPY (SELECT 1) TO STDOUT WITH (FORMAT 'csv', HEADER true)",
        ),
        (
            "COPY t TO STDOUT (FORMAT csv, HEADER, DELIMITER ';', NULL '', "
            "FORCE_QUOTE (a,\"B\"), ENCODING 'UTF8', QUOTE '''', ESCAPE E'\\\\')",
            "COPY t TO STDOUT WITH (FORMAT csv, HEADER, DELIMITER ';', NULL '', "
            "FORCE_QUOTE (a, \"B\"), ENCODING 'UTF8', QUOTE '''', ESCAPE E'\\\\')",
        ),
        ("COPY t TO STDOUT (FORCE_QUOTE *)", "COPY t TO STDOUT WITH (FORCE_QUOTE *)"),
        (
            "COPY t FROM STDIN (FORMAT csv, FORCE_NOT_NULL (a), ON_ERROR ignore, "
            "DEFAULT '\\D', x -1.5, \"header\" match)",
            "COPY t FROM STDIN WITH (FORMAT csv, FORCE_NOT_NULL (a), ON_ERROR ignore, "
            "DEFAULT '\\D', x -1.5, \"header\" match)",
        ),
        # The legacy option words become the generic options PostgreSQL maps them to.
        ("COPY t TO STDOUT WITH CSV HEADER", "COPY t TO STDOUT WITH (FORMAT csv, HEADER true)"),
        ("COPY t TO STDOUT CSV", "COPY t TO STDOUT WITH (FORMAT csv)"),
        ("COPY t TO STDOUT BINARY", "COPY t TO STDOUT WITH (FORMAT binary)"),
        ("COPY BINARY t TO STDOUT", "COPY t TO STDOUT WITH (FORMAT binary)"),
        (
            "COPY t TO STDOUT WITH DELIMITER AS '|' NULL AS '' ENCODING 'UTF8'",
            "COPY t TO STDOUT WITH (DELIMITER '|', NULL '', ENCODING 'UTF8')",
        ),
        (
            "COPY t TO STDOUT CSV QUOTE AS '\"' ESCAPE '\\' FORCE QUOTE a, \"B\"",
            "COPY t TO STDOUT WITH (FORMAT csv, QUOTE '\"', ESCAPE '\\', FORCE_QUOTE (a, \"B\"))",
        ),
        (
            "COPY t FROM STDIN CSV FREEZE FORCE NOT NULL a FORCE NULL b, c",
            "COPY t FROM STDIN WITH (FORMAT csv, FREEZE true, FORCE_NOT_NULL (a), "
            "FORCE_NULL (b, c))",
        ),
        ("COPY t TO STDOUT CSV FORCE QUOTE *", "COPY t TO STDOUT WITH (FORMAT csv, FORCE_QUOTE *)"),
        (
            "COPY t TO STDOUT USING DELIMITERS '|' WITH CSV",
            "COPY t TO STDOUT WITH (DELIMITER '|', FORMAT csv)",
        ),
        ("COPY t FROM STDIN DELIMITERS E'\\t'", "COPY t FROM STDIN WITH (DELIMITER E'\\t')"),
        # File names are kept verbatim (sqlglot would print $$x$$ and E'x' as 'x').
        ("COPY t TO PROGRAM 'gzip > /tmp/x'", "COPY t TO PROGRAM 'gzip > /tmp/x'"),
        ("COPY t FROM $$/tmp/x$$ CSV", "COPY t FROM $$/tmp/x$$ WITH (FORMAT csv)"),
        ("COPY program (program) TO STDOUT", "COPY program (program) TO STDOUT"),
        ('COPY "to" TO STDOUT', 'COPY "to" TO STDOUT'),
        ("COPY (SELECT 'to' FROM t) TO STDOUT", "COPY (SELECT 'to' FROM t) TO STDOUT"),
    ],
)
def test_copy_forms_parse_to_valid_postgres(sql: str, expected: str) -> None:
    assert generated(sql) == expected


@pytest.mark.parametrize(
    "sql",
    [
        "COPY t FROM STDIN WHERE a > 1",  # sqlglot's tree has no place for the condition
        "COPY t FROM STDIN (FORMAT csv) WHERE a > 1",
        "COPY t TO STDOUT WITH OIDS",  # removed in PostgreSQL 12
        "COPY (SELECT 1) FROM STDIN",
        "COPY BINARY (SELECT 1) TO STDOUT",
        "COPY (SELECT 1) TO STDOUT DELIMITERS '|'",  # table form only
        "COPY t x TO STDOUT",
        'COPY t TO "STDOUT"',
        "COPY t TO STDOUT ()",
        "COPY t TO STDOUT (FORMAT csv) CSV",
        "COPY t TO STDOUT CSV FORCE QUOTE",
        "COPY t TO STDOUT DELIMITER U&'|'",
        "COPY t",
        "COPY (INSERT INTO t VALUES (1) RETURNING *) TO STDOUT",  # sqlglot cannot parse it
    ],
)
def test_copy_forms_outside_the_grammar_fail_closed(engine: PolicyEngine, sql: str) -> None:
    with pytest.raises(ParseError):
        generated(sql)
    d = engine.decide(sql, ALICE)
    assert d.action == "block" and isinstance(d.error, NotUnderstood), d


def test_unmodelled_copy_is_refused_for_a_governed_user_even_under_unparsed_allow(
    tmp_path: Path, catalog: Catalog
) -> None:
    """COPY ... WHERE evaluates an expression the parser never saw (query_to_xml...)."""
    e = make(tmp_path, catalog, unparsed="allow")
    sql = "COPY sandbox.scratch FROM STDIN WHERE query_to_xml('select 1', true, true, '') IS NULL"
    d = e.decide(sql, ALICE)
    assert d.action == "block" and isinstance(d.error, NotUnderstood)
    assert "WHERE clause is not supported" in d.reason


@pytest.mark.parametrize(
    ("sql", "options"),
    [
        ("COPY people (id, ssn) TO STDOUT (FORMAT binary)", "WITH (FORMAT binary)"),
        ("COPY people (id, ssn) TO STDOUT WITH (FORMAT binary)", "WITH (FORMAT binary)"),
        ("COPY people (id, ssn) TO STDOUT WITH CSV HEADER", "WITH (FORMAT csv, HEADER true)"),
        ("COPY BINARY people (id, ssn) TO STDOUT", "WITH (FORMAT binary)"),
        (
            "COPY people (id, ssn) TO STDOUT (FORMAT csv, DELIMITER '|', NULL 'n', "
            "FORCE_QUOTE (ssn), ENCODING 'UTF8')",
            "WITH (FORMAT csv, DELIMITER '|', NULL 'n', FORCE_QUOTE (ssn), ENCODING 'UTF8')",
        ),
    ],
)
def test_rewritten_copy_keeps_its_options(engine: PolicyEngine, sql: str, options: str) -> None:
    d = engine.decide(sql, ALICE)
    assert d.action == "rewrite", d.reason
    assert d.sql == f"COPY (SELECT id, ssn FROM {PEOPLE}) TO STDOUT {options}"


def test_copy_query_is_not_wrapped_again(engine: PolicyEngine) -> None:
    d = engine.decide("COPY (SELECT id, ssn FROM people) TO STDOUT (FORMAT csv)", ALICE)
    assert d.action == "rewrite"
    # No `SELECT * FROM (...)` without an alias, which PostgreSQL < 16 refuses.
    assert d.sql == f"COPY (SELECT id, ssn FROM {PEOPLE}) TO STDOUT WITH (FORMAT csv)"


def test_copy_of_an_ungoverned_table_is_sent_as_written(engine: PolicyEngine) -> None:
    sql = "COPY officers TO STDOUT (FORMAT binary)"
    d = engine.decide(sql, ALICE)
    assert d.action == "allow" and d.sql == sql
