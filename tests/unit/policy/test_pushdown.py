"""Which of a query's conditions are copied below the masking subquery's fence.

The fixture rules (people-by-region for alice: row filter on region, ssn
redacted, dob and email masked; no-case-notes: cases.notes denied) over a
catalog that knows each column's type, as the loader reads it.
"""

from __future__ import annotations

import re

import pytest

from proxy.catalog import Catalog
from proxy.identity import SessionFacts
from proxy.policy.engine import PolicyEngine
from proxy.rules import RuleSet

ALICE = SessionFacts("alice", "db")
SCHEMA = {
    "relations": [
        {
            "schema": "public",
            "name": "people",
            "columns": ["id", "name", "region", "ssn", "dob", "email"],
            "types": ["int4", "varchar", "text", "text", "date", "text"],
        },
        {
            "schema": "public",
            "name": "cases",
            "columns": ["id", "person_id", "officer_id", "notes", "status", "opened"],
            "types": ["int8", "int4", "int4", "text", "text", "date"],
        },
        {
            "schema": "public",
            "name": "officers",
            "columns": ["id", "name", "region"],
            "types": ["int4", "text", "text"],
        },
        {
            "schema": "public",
            "name": "accounts",
            "columns": ["id", "balance", "opened", "kind"],
            "types": ["int4", "numeric", "timestamptz", "mood"],
        },
    ]
}
# The subquery for alice's people, up to its WHERE.
_SUB = re.compile(r'FROM "public"\."people" WHERE \(region = \'north\'\)(.*?) OFFSET 0\)')


@pytest.fixture(scope="module")
def engine(rules: RuleSet) -> PolicyEngine:
    return PolicyEngine(rules, Catalog.from_dict(SCHEMA))


def pushed(engine: PolicyEngine, sql: str, facts: SessionFacts = ALICE) -> list[str]:
    """What each people subquery got past its row filter, in order."""
    d = engine.decide(sql, facts)
    assert d.error is None, d.error
    found = _SUB.findall(d.sql)
    assert found, d.sql
    return [s.removeprefix(" AND ").strip() for s in found]


@pytest.mark.parametrize(
    ("sql", "want"),
    [
        ("SELECT name FROM people WHERE id = 5", '"id" = 5'),
        ("SELECT name FROM people WHERE 5 > id", '5 > "id"'),
        ("SELECT name FROM people WHERE id <> -3", '"id" <> -3'),
        ("SELECT name FROM people WHERE id = 5000000000", '"id" = 5000000000'),
        ("SELECT name FROM people WHERE id = '7'", "\"id\" = '7'"),
        ("SELECT id FROM people WHERE name = 'Ann'", "\"name\" = 'Ann'"),
        (
            "SELECT id FROM people WHERE name = 'Ann'::varchar(9)",
            "\"name\" = CAST('Ann' AS VARCHAR(9))",
        ),
        ("SELECT id FROM people WHERE id IN (1, 2)", '("id" = 1 OR "id" = 2)'),
        ("SELECT id FROM people WHERE id IN (4)", '"id" = 4'),
        ("SELECT id FROM people WHERE id BETWEEN 1 AND 9", '("id" >= 1 AND "id" <= 9)'),
        ("SELECT id FROM people WHERE region = 'x'", "\"region\" = 'x'"),
        ("SELECT id FROM people p WHERE p.id = 5", '"id" = 5'),
        ("SELECT id FROM public.people WHERE public.people.id = 5", '"id" = 5'),
        (
            "SELECT a FROM people AS p(a, b) WHERE p.a = 5 AND b = 'x'",
            '"id" = 5 AND "name" = \'x\'',
        ),
        ("SELECT id FROM people WHERE (id = 5 AND (name = 'a'))", '"id" = 5 AND "name" = \'a\''),
        ("WITH c AS (SELECT id FROM people WHERE id = 5) SELECT * FROM c", '"id" = 5'),
    ],
)
def test_pushed(engine: PolicyEngine, sql: str, want: str) -> None:
    assert pushed(engine, sql) == [want]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT id FROM people WHERE ssn = '123'",  # masked (redact)
        "SELECT id FROM people WHERE email = 'x'",  # masked (hash)
        "SELECT id FROM people WHERE dob = '2000-01-01'",  # masked (sql)
        "SELECT id FROM people WHERE id = 5 OR id = 6",  # OR
        "SELECT id FROM people WHERE NOT id = 5",
        "SELECT id FROM people WHERE id IS NULL",  # not strict
        "SELECT id FROM people WHERE id NOT IN (1, 2)",
        "SELECT id FROM people WHERE id NOT BETWEEN 1 AND 2",
        "SELECT id FROM people WHERE abs(id) = 5",  # function call
        "SELECT id FROM people WHERE id = abs(-5)",
        "SELECT id FROM people WHERE id = 1/0",
        "SELECT id FROM people WHERE id = (SELECT 5)",  # subquery
        "SELECT id FROM people WHERE id IN (SELECT 5)",
        "SELECT id FROM people WHERE id = 1.5",  # numeric: not leakproof
        "SELECT id FROM people WHERE id = 99999999999999999999",
        "SELECT id FROM people WHERE id = 5::numeric",
        "SELECT id FROM people WHERE name = 5",  # would cast
        "SELECT id FROM people WHERE region = 'x'::varchar || 'y'",
        "SELECT id FROM people WHERE id = NULL",
        "SELECT id FROM people WHERE id = $1",  # a parameter outside a Parse: no type
        "SELECT id FROM people WHERE name LIKE 'a%'",
        "SELECT id FROM people WHERE id = id",
        "SELECT p.id FROM people p, officers o WHERE id = 5",  # ambiguous name
        "SELECT p.id FROM people p JOIN officers o USING (id) WHERE id = 5",
        "SELECT p.id FROM people p LEFT JOIN officers o ON p.id = 5 AND o.id = 1",  # ON
        "SELECT * FROM (SELECT * FROM people) s WHERE s.id = 5",  # not this query's FROM
        "WITH c AS (SELECT id FROM people) SELECT * FROM c WHERE id = 5",
        "SELECT id FROM people WHERE EXISTS (SELECT 1 FROM officers WHERE people.id = 5)",
        "SELECT id FROM people p WHERE people.id = 5",  # not how the query names it
        "SELECT a FROM people AS p(a, b) WHERE p.id = 5",  # renamed away
    ],
)
def test_not_pushed(engine: PolicyEngine, sql: str) -> None:
    assert pushed(engine, sql) == [""]


def test_denied_column_is_refused_before_any_pushdown(engine: PolicyEngine) -> None:
    d = engine.decide("SELECT id FROM cases WHERE notes = 'x'", ALICE)
    assert d.error is not None


def test_outer_join_nullable_side_gets_where_conjuncts(engine: PolicyEngine) -> None:
    got = pushed(
        engine, "SELECT o.id FROM officers o LEFT JOIN people p ON p.id = o.id WHERE p.id = 3"
    )
    assert got == ['"id" = 3']


def test_self_join_each_occurrence_gets_its_own(engine: PolicyEngine) -> None:
    sql = "SELECT a.id FROM people a JOIN people b ON a.id = b.id WHERE a.id = 3 AND b.name = 'z'"
    assert pushed(engine, sql) == ['"id" = 3', "\"name\" = 'z'"]


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE people SET name = 'x' FROM people p WHERE p.id = 4 AND people.id = p.id",
        "DELETE FROM people USING people p WHERE p.id = 4 AND people.id = p.id",
    ],
)
def test_update_and_delete_read_occurrences(engine: PolicyEngine, sql: str) -> None:
    erin = SessionFacts("erin", "db")  # clerk-people: may write, row filter on region
    d = engine.decide(sql, erin)
    assert d.error is None, d.error
    assert "WHERE (region = 'north') AND \"id\" = 4 OFFSET 0) AS p" in d.sql, d.sql


def test_search_path_with_pg_catalog_late_pushes_nothing(engine: PolicyEngine) -> None:
    facts = SessionFacts("alice", "db", search_path=("public", "pg_catalog"))
    assert pushed(engine, "SELECT name FROM people WHERE id = 5", facts) == [""]


def test_types_unknown_pushes_nothing(rules: RuleSet) -> None:
    untyped = {"relations": [dict(r, types=[]) for r in SCHEMA["relations"]]}
    eng = PolicyEngine(rules, Catalog.from_dict(untyped))
    assert pushed(eng, "SELECT name FROM people WHERE id = 5") == [""]


def test_string_literal_template_hits_and_fills_both_places(engine: PolicyEngine) -> None:
    """The simple protocol's shape cache: a pushed literal appears twice in the SQL."""
    eng = PolicyEngine(engine.rules, Catalog.from_dict(SCHEMA))
    for name in ("Ann", "Bea", "Cid", "Dee"):
        d = eng.decide(f"SELECT id FROM people WHERE name = '{name}'", ALICE)
        assert d.sql.count(f"'{name}'") == 2, d.sql
    assert eng._shapes.hits >= 2


def test_number_literal_template_hits_and_fills_both_places(engine: PolicyEngine) -> None:
    eng = PolicyEngine(engine.rules, Catalog.from_dict(SCHEMA))
    for aid in (1, 2, 3, 4):
        d = eng.decide(f"SELECT name FROM people WHERE id = {aid}", ALICE)
        assert f'AND "id" = {aid} OFFSET 0' in d.sql, d.sql
        assert d.sql.endswith(f"WHERE id = {aid}"), d.sql
    assert eng._shapes.hits >= 2


NUMBERS = ["7", "007", "123456789012345678", "1234567890123456789", "1.5", "1e3", "2."]


@pytest.mark.parametrize(
    "template",
    [
        "SELECT name FROM people WHERE id = {}",
        "SELECT name FROM people WHERE id BETWEEN {} AND {}",
        "SELECT name FROM people WHERE id IN ({}, {}) AND name = 'x'",
    ],
)
def test_warm_cache_agrees_with_a_fresh_engine_for_every_number_form(
    engine: PolicyEngine, template: str
) -> None:
    """Integers of at most 18 digits are copied, other numbers (numeric) never; the shape
    cache must not hand one form the other's template."""
    warm = PolicyEngine(engine.rules, Catalog.from_dict(SCHEMA))
    n = template.count("{}")
    for first in NUMBERS:
        for second in NUMBERS:
            sql = template.format(*([first, second][:n]))
            fresh = PolicyEngine(engine.rules, Catalog.from_dict(SCHEMA))
            assert warm.decide(sql, ALICE) == fresh.decide(sql, ALICE), sql
    assert warm._shapes.hits > 0


def test_number_literal_every_value_gets_its_own_right_sql(engine: PolicyEngine) -> None:
    eng = PolicyEngine(engine.rules, Catalog.from_dict(SCHEMA))
    for aid in (1, 2, 3, 4):
        d = eng.decide(f"SELECT name FROM people WHERE id = {aid}", ALICE)
        assert f'AND "id" = {aid} OFFSET 0' in d.sql and d.sql.endswith(f"WHERE id = {aid}")
    d = eng.decide("SELECT name FROM people WHERE id = 1.5", ALICE)
    assert '"id" = 1.5' not in d.sql
