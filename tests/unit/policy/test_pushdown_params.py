"""Comparisons with bound parameters ($n) copied below the masking subquery's fence.

Same fixture rules and catalog as test_pushdown.py (alice: row filter on
region; ssn, dob, email masked; people.id int4, name varchar, region text).
A parameter is copied only when its type, from the Parse (OIDs, 0 for
unspecified) or PREPARE's list, makes the comparison a leakproof operator and
copying it changes no parameter's inferred type (policy/pushparams.py).
"""

from __future__ import annotations

import pytest

from proxy.catalog import Catalog
from proxy.enforce import Enforcer
from proxy.errors import StalePlan
from proxy.identity import SessionFacts
from proxy.policy.engine import PolicyEngine
from proxy.policy.pushparams import OPAQUE, prepared_types
from proxy.rules import RuleSet

from .test_pushdown import _SUB, ALICE, SCHEMA

INT2, INT4, INT8, TEXT, VARCHAR, NUMERIC, FLOAT8, DATE, UNKNOWN = (
    21,
    23,
    20,
    25,
    1043,
    1700,
    701,
    1082,
    705,
)


@pytest.fixture
def engine(rules: RuleSet) -> PolicyEngine:
    return PolicyEngine(rules, Catalog.from_dict(SCHEMA))


def pushed(
    engine: PolicyEngine,
    sql: str,
    types: tuple[int, ...] | None = (),
    facts: SessionFacts = ALICE,
) -> list[str]:
    """What each people subquery got past its row filter, for a Parse declaring `types`."""
    d = engine.decide(sql, facts, extended=types is not None, param_types=types)
    assert d.error is None, d.error
    found = _SUB.findall(d.sql)
    assert found, d.sql
    return [s.removeprefix(" AND ").strip() for s in found]


@pytest.mark.parametrize(
    ("sql", "types", "want"),
    [
        # Unspecified: PostgreSQL gives $1 the column's type.
        ("SELECT name FROM people WHERE id = $1", (), '"id" = $1'),
        ("SELECT name FROM people WHERE id = $1", (0,), '"id" = $1'),
        ("SELECT name FROM people WHERE $1 >= id", (), '$1 >= "id"'),
        ("SELECT id FROM people WHERE name = $1", (), '"name" = $1'),
        ("SELECT id FROM people WHERE region <> $2", (INT4,), '"region" <> $2'),
        ("SELECT name FROM people WHERE id = $1::int8", (), '"id" = CAST($1 AS BIGINT)'),
        ("SELECT name FROM people WHERE id = $1::int2", (0,), '"id" = CAST($1 AS SMALLINT)'),
        (
            "SELECT name FROM people WHERE id BETWEEN $1 AND $2",
            (),
            '("id" >= $1 AND "id" <= $2)',
        ),
        ("SELECT name FROM people WHERE id IN ($1, $2)", (), '("id" = $1 OR "id" = $2)'),
        ("SELECT name FROM people WHERE id IN ($1)", (), '"id" = $1'),
        # Declared, of the column's family: int2/int4/int8 cross-type, varchar as text.
        ("SELECT name FROM people WHERE id = $1", (INT2,), '"id" = $1'),
        ("SELECT name FROM people WHERE id = $1", (INT4,), '"id" = $1'),
        ("SELECT name FROM people WHERE id = $1", (INT8,), '"id" = $1'),
        ("SELECT id FROM people WHERE name = $1", (TEXT,), '"name" = $1'),
        ("SELECT id FROM people WHERE region = $1", (VARCHAR,), '"region" = $1'),
        ("SELECT id FROM people WHERE id IN ($1, 5)", (INT8,), '("id" = $1 OR "id" = 5)'),
        # A declared type does not move: it may occur more than once.
        (
            "SELECT id FROM people WHERE id >= $1 AND id < $1 + 10",
            (INT8,),
            '"id" >= $1',
        ),
        (
            "SELECT name FROM people WHERE id = $1 AND region = $2",
            (INT8,),
            '"id" = $1 AND "region" = $2',
        ),
    ],
)
def test_pushed(engine: PolicyEngine, sql: str, types: tuple[int, ...], want: str) -> None:
    assert pushed(engine, sql, types) == [want]


@pytest.mark.parametrize(
    ("sql", "types"),
    [
        # Outside a Parse (a simple Query): no parameter has a type the engine knows.
        ("SELECT name FROM people WHERE id = $1", None),
        # Declared with a type outside the column's family: PostgreSQL would cast the
        # column or use an operator that is not leakproof (numeric_eq, float8eq on a cast).
        ("SELECT name FROM people WHERE id = $1", (NUMERIC,)),
        ("SELECT name FROM people WHERE id = $1", (FLOAT8,)),
        ("SELECT name FROM people WHERE id = $1", (TEXT,)),
        ("SELECT name FROM people WHERE id = $1", (UNKNOWN,)),
        ("SELECT name FROM people WHERE id = $1", (DATE,)),
        ("SELECT id FROM people WHERE name = $1", (INT4,)),
        ("SELECT name FROM people WHERE id = $1", (123456,)),  # a user-defined type
        # A cast of a declared parameter converts it at run time.
        ("SELECT name FROM people WHERE id = $1::int8", (TEXT,)),
        ("SELECT name FROM people WHERE id = $1::int8", (INT8,)),
        # Unspecified and also used elsewhere: which use types it is PostgreSQL's order.
        ("SELECT name FROM people WHERE id = $1 AND region = $1", ()),
        ("SELECT $1::numeric, name FROM people WHERE id = $1", ()),
        ("SELECT name FROM people WHERE id = $1 AND id < $1", ()),
        ("SELECT name FROM people WHERE id = $1::numeric", ()),
        ("SELECT name FROM people WHERE name = $1::varchar(3)", ()),  # sized: a coercion
        # IN lists: the common type of the items types unspecified parameters.
        ("SELECT name FROM people WHERE id IN ($1, 5)", ()),
        ("SELECT name FROM people WHERE id IN ($1, $2)", (0, NUMERIC)),
        ("SELECT id FROM people WHERE name IN ($1, $2)", ()),  # varchar: IN infers varchar
        # Masked columns keep their raw values hidden, whatever the parameter.
        ("SELECT id FROM people WHERE ssn = $1", ()),
        ("SELECT id FROM people WHERE ssn = $1", (TEXT,)),
        ("SELECT id FROM people WHERE dob = $1", (DATE,)),
        ("SELECT id FROM people WHERE email IN ($1, $2)", ()),
        # Not a bare comparison with a parameter.
        ("SELECT name FROM people WHERE id = $1 + 1", ()),
        ("SELECT name FROM people WHERE id = abs($1)", ()),
        ("SELECT name FROM people WHERE id = $1 OR id = $2", ()),
        ("SELECT name FROM people WHERE NOT id = $1", ()),
        ("SELECT name FROM people WHERE id = ($1)", ()),
        ("SELECT name FROM people WHERE name LIKE $1", ()),
        ("SELECT * FROM (SELECT * FROM people) s WHERE s.id = $1", ()),
    ],
)
def test_not_pushed(engine: PolicyEngine, sql: str, types: tuple[int, ...] | None) -> None:
    assert pushed(engine, sql, types) == [""]


def test_search_path_with_pg_catalog_late_pushes_no_parameter(engine: PolicyEngine) -> None:
    facts = SessionFacts("alice", "db", search_path=("public", "pg_catalog"))
    assert pushed(engine, "SELECT name FROM people WHERE id = $1", (INT8,), facts) == [""]


def test_the_decision_is_cached_per_parameter_types(engine: PolicyEngine) -> None:
    sql = "SELECT name FROM people WHERE id = $1"
    for _ in range(2):  # exact-text cache hits in both orders
        assert pushed(engine, sql, (NUMERIC,)) == [""]
        assert pushed(engine, sql, (INT8,)) == ['"id" = $1']
        assert pushed(engine, sql, None) == [""]
        assert pushed(engine, sql, ()) == ['"id" = $1']


# ------------------------------------------------------------------ SQL PREPARE


@pytest.mark.parametrize(
    ("sql", "want"),
    [
        ("PREPARE s(bigint) AS SELECT name FROM people WHERE id = $1", '"id" = $1'),
        ("PREPARE s (integer, text) AS SELECT name FROM people WHERE id = $1", '"id" = $1'),
        ("PREPARE s AS SELECT name FROM people WHERE id = $1", '"id" = $1'),
        ("PREPARE s(smallint) AS SELECT name FROM people WHERE $2 = id", '$2 = "id"'),
        ("PREPARE s(varchar) AS SELECT id FROM people WHERE name = $1", '"name" = $1'),
        # Names that are not keywords resolve on the search path (pg_temp first for
        # types): unknown, so not copied.
        ("PREPARE s(int8) AS SELECT name FROM people WHERE id = $1", ""),
        ('PREPARE s("bigint") AS SELECT name FROM people WHERE id = $1', ""),
        ("PREPARE s(numeric) AS SELECT name FROM people WHERE id = $1", ""),
        ("PREPARE s(bigint[]) AS SELECT name FROM people WHERE id = $1", ""),
        ("PREPARE s(varchar(3)) AS SELECT id FROM people WHERE name = $1", ""),
        ("PREPARE s(double precision) AS SELECT name FROM people WHERE id = $1", ""),
    ],
)
def test_prepare_types_its_own_parameters(engine: PolicyEngine, sql: str, want: str) -> None:
    assert pushed(engine, sql, None) == [want]  # in a simple Query
    # In a Parse, the Parse's types are those of PREPARE itself, not of its body.
    assert pushed(engine, sql, (NUMERIC, NUMERIC)) == [want]


def test_prepared_types_reads_keywords_only() -> None:
    got = prepared_types(
        "PREPARE s(bigint, double precision, int8, varchar(3), timestamp with time zone,"
        ' "int", boolean) AS '
    )
    assert got == (20, 701, OPAQUE, OPAQUE, 1184, OPAQUE, 16)
    assert prepared_types("PREPARE s AS ") == ()


def test_explain_and_declare_share_the_parse_types(engine: PolicyEngine) -> None:
    sql = "SELECT name FROM people WHERE id = $1"
    assert pushed(engine, "EXPLAIN " + sql, (INT8,)) == ['"id" = $1']
    assert pushed(engine, "DECLARE c CURSOR FOR " + sql, (INT8,)) == ['"id" = $1']
    assert pushed(engine, "EXPLAIN " + sql, (NUMERIC,)) == [""]


# ------------------------------------------------------------------ through the hooks


async def test_enforcer_passes_the_types_and_revalidates_with_them(rules: RuleSet) -> None:
    """After a reload, the next Execute decides the Parse again with the same types, so
    the copy below the fence is the same and the plan is not stale."""
    e = Enforcer(rules, Catalog.from_dict(SCHEMA), None)
    sql = "SELECT name FROM people WHERE id = $1"
    parsed = await e.decide(sql, ALICE, extended=True, param_types=(INT8,))
    assert parsed.sql is not None and 'AND "id" = $1 OFFSET 0' in parsed.sql
    e.reload(rules=rules)
    run = await e.execute(ALICE, parsed, ("5",))
    assert run.error is None and run.sql == parsed.sql
    numeric = await e.decide(sql, ALICE, extended=True, param_types=(NUMERIC,))
    assert numeric.sql is not None and 'AND "id" = $1' not in numeric.sql
    e.reload(rules=rules)
    again = await e.execute(ALICE, numeric, ("5",))
    assert not isinstance(again.error, StalePlan) and again.sql == numeric.sql
