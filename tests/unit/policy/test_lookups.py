"""The ledger's `looked_up` half: which values a statement compared with subject columns."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.catalog import Catalog, Relation
from proxy.identity import SessionFacts
from proxy.policy.engine import PolicyEngine
from proxy.policy.lookups import NOT_A_VALUE, execute_args, literal_starts, text_form, values
from proxy.policy.split import split
from proxy.redact import redact
from proxy.rules import load_rules

RULES = """
version: 1
subjects:
  - id: person
    table: public.people
    key: id
    lookups: [ssn, full_name]
    via: [{table: public.cases, column: person_id}]
"""
RELATIONS = [
    Relation(
        "public",
        "people",
        columns=("id", "full_name", "ssn", "region"),
        types=("int8", "text", "text", "text"),
    ),
    Relation(
        "public", "cases", columns=("id", "person_id", "notes"), types=("int4", "int8", "text")
    ),
    Relation("sandbox", "people", columns=("id", "ssn"), types=("int4", "text")),
]
FACTS = SessionFacts(user="bob", database="db")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> PolicyEngine:
    d: Path = tmp_path_factory.mktemp("rules")
    (d / "subjects.yaml").write_text(RULES)
    catalog = Catalog(relations={r.qualified: r for r in RELATIONS})
    return PolicyEngine(load_rules(d), catalog)


def looked(
    engine: PolicyEngine, sql: str, params: tuple[str, ...] | None = None
) -> list[tuple[str, str, bool, str]]:
    d = engine.decide(sql, FACTS)
    out = []
    for s in d.statements:
        out += [(x.subject, x.column, x.key, v) for x, v in values(s.lookups, s.literals, params)]
    return out


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM people WHERE ssn = '123-45-6789'", [("ssn", False, "123-45-6789")]),
        ("SELECT * FROM people WHERE '123-45-6789' = ssn", [("ssn", False, "123-45-6789")]),
        (
            "SELECT * FROM public.people p WHERE p.id IN (41, 42)",
            [("id", True, "41"), ("id", True, "42")],
        ),
        ("SELECT * FROM people WHERE public.people.id = 7", [("id", True, "7")]),
        ("SELECT * FROM people WHERE id = '0042'", [("id", True, "42")]),
        ("SELECT * FROM people WHERE id = '42'::bigint", [("id", True, "42")]),
        ("SELECT * FROM people WHERE id = CAST('0042' AS int8)", [("id", True, "42")]),
        ("SELECT * FROM people WHERE id = -3", [("id", True, "-3")]),
        ("SELECT * FROM people WHERE (id) = (4)", [("id", True, "4")]),
        ("SELECT * FROM people WHERE full_name = $$O'Brien$$", [("full_name", False, "O'Brien")]),
        ("SELECT * FROM people WHERE full_name = 'O''Brien'", [("full_name", False, "O'Brien")]),
        (
            "SELECT * FROM cases WHERE person_id = ANY(ARRAY[5, 6])",
            [("person_id", True, "5"), ("person_id", True, "6")],
        ),
        (
            "SELECT * FROM people p JOIN cases c ON c.person_id = p.id"
            " WHERE c.person_id = 9 AND p.ssn = 'x'",
            [("person_id", True, "9"), ("ssn", False, "x")],
        ),
        ("SELECT * FROM people AS p(a, b, c) WHERE c = 's'", [("ssn", False, "s")]),
        (
            "WITH x AS (SELECT * FROM people) SELECT * FROM x WHERE ssn = 'cte'",
            [("ssn", False, "cte")],
        ),
        (
            "SELECT * FROM (SELECT id AS pid, ssn FROM people) q WHERE q.pid = 9 AND ssn = 's'",
            [("id", True, "9"), ("ssn", False, "s")],
        ),
        (
            "SELECT * FROM people WHERE id IN (SELECT person_id FROM cases WHERE person_id = 3)",
            [("person_id", True, "3")],
        ),
        ("SELECT * FROM people WHERE ssn = $1", [("ssn", False, "p1")]),
        ("SELECT * FROM people WHERE id = $2::bigint", [("id", True, "2")]),
        ("EXPLAIN SELECT * FROM people WHERE ssn = 'e'", [("ssn", False, "e")]),
        ("DECLARE c CURSOR FOR SELECT * FROM people WHERE ssn = 'd'", [("ssn", False, "d")]),
        (
            "PREPARE s(numeric(10, 2)) AS SELECT * FROM people WHERE id = 77 AND ssn = $1",
            [("id", True, "77"), ("ssn", False, "p1")],
        ),
        ("UPDATE people SET region = 'n' WHERE ssn = 'u'", [("ssn", False, "u")]),
        ("DELETE FROM cases WHERE person_id = 8", [("person_id", True, "8")]),
        (
            "SELECT * FROM people WHERE id = 1; SELECT * FROM people WHERE id = 2",
            [("id", True, "1"), ("id", True, "2")],
        ),
    ],
)
def test_lookups(engine: PolicyEngine, sql: str, expected: list[tuple[str, bool, str]]) -> None:
    assert looked(engine, sql, ("p1", "2")) == [("person", c, k, v) for c, k, v in expected]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM cases WHERE id = 5",  # a subject table's other column
        "SELECT * FROM sandbox.people WHERE ssn = 'x'",  # same names, another table
        "SELECT * FROM people WHERE region = 'x'",
        "SELECT * FROM people WHERE ssn = upper('x')",  # not a literal
        "SELECT * FROM people WHERE ssn LIKE 'x%'",
        "SELECT * FROM people WHERE id > 5",
        "SELECT * FROM people WHERE id = $1",  # not bound yet
        "SELECT 1",
        "SET search_path = public",
        "SELECT * FROM people WHERE id IN (SELECT 1)",
        "SELECT * FROM people p, cases c WHERE id = 3",  # ambiguous: the server refuses it
        "SELECT '123' AS ssn",
    ],
)
def test_no_lookups(engine: PolicyEngine, sql: str) -> None:
    assert looked(engine, sql) == []


def test_values_follow_the_text_through_the_shape_cache(engine: PolicyEngine) -> None:
    """The shape cache shares one decision between values; each text keeps its own."""
    for v in range(100, 110):
        sql = f"SELECT full_name FROM people WHERE ssn = '{v}-00' AND id IN ({v}, {v + 1})"
        assert looked(engine, sql) == [
            ("person", "ssn", False, f"{v}-00"),
            ("person", "id", True, str(v)),
            ("person", "id", True, str(v + 1)),
        ]
    assert engine._shapes.hits > 0


def test_no_subjects_no_work(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("version: 1\n")
    eng = PolicyEngine(load_rules(tmp_path), Catalog(relations={r.qualified: r for r in RELATIONS}))
    assert eng.decide("SELECT * FROM people WHERE ssn = 'x'", FACTS).statements[0].lookups == ()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1, 'a', $1, -2, $$x$$, E'y', 1.5e3 FROM t WHERE a = 'it''s'",
        "SHOW 'x'",
        "VACUUM t",
        "SELECT U&'d\\0061t\\+000061' FROM t",
    ],
)
def test_literal_starts_agree_with_redact(sql: str) -> None:
    for p in split(sql):
        literals = redact(p.parse_text, p.tokens, p.base)[2]
        starts = literal_starts(p.tokens, p.parse_text, p.base)
        assert sorted(starts.values()) == list(range(len(literals)))


@pytest.mark.parametrize(
    ("value", "typ", "neg", "out"),
    [
        ("42", "int8", False, "42"),
        (" 0042 ", "int4", False, "42"),
        ("42.0", "int4", False, "42"),
        ("4.5", "int4", False, None),
        ("x", "int4", False, None),
        ("5", "int4", True, "-5"),
        ("\\x0000002a", "int4", False, "42"),
        ("\\x000000000000002a", "int8", False, "42"),
        ("\\x616263", "text", False, "abc"),
        ("\\xff", "text", False, None),
        ("\\x0001", "numeric", False, None),  # a binary numeric is not read
        (
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "uuid",
            False,
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        ),
        ("", "text", False, None),
        (NOT_A_VALUE + "upper('x')", "text", False, None),
        ("abc", "", False, "abc"),
    ],
)
def test_text_form(value: str, typ: str, neg: bool, out: str | None) -> None:
    assert text_form(value, typ, negative=neg) == out


def test_execute_args_by_position() -> None:
    assert execute_args("'123-45-6789', 42") == ("123-45-6789", "42")
    assert execute_args("-5, '7'::int") == ("-5", "7")
    args = execute_args("upper('a'), 'b'")
    assert args is not None and args[0].startswith(NOT_A_VALUE) and args[1] == "b"
    assert execute_args("(((") is None
