"""Calls are decided by the name the user wrote (proxy/policy/callnames.py).

sqlglot parses several hundred names into nodes of its own; these tests pin
that the written name, its quoting and its schema are what the policy checks,
that PostgreSQL's keyword forms are not taken for calls, and that the list of
words sqlglot parses without a node positioned at the name is complete.
"""

from __future__ import annotations

import re

import pytest
from sqlglot.dialects.postgres import Postgres

from proxy.catalog import Catalog
from proxy.identity import SessionFacts
from proxy.policy.analyze import collect
from proxy.policy.builtins import NOT_FUNCTION_NAMES
from proxy.policy.decide import _parse
from proxy.policy.engine import PolicyEngine
from proxy.policy.split import split
from proxy.policy.views import _definition
from proxy.rules import load_rules

from .cases import FIXTURES

ALICE = SessionFacts("alice", "db")


@pytest.fixture(scope="module")
def sound(catalog: Catalog) -> PolicyEngine:
    return PolicyEngine(load_rules(FIXTURES / "soundness_rules.yaml"), catalog)


def _calls(sql: str) -> list[tuple[str, str]]:
    tree = _parse(split(sql)[0])
    assert tree is not None
    return [(c.schema, c.names[0]) for c in collect(tree).calls]


def test_written_names_not_sqlglot_names() -> None:
    assert _calls("SELECT ifnull(a, b), strpos(a, 'x'), month(d), agg(x) FROM t") == [
        ("", "ifnull"),
        ("", "strpos"),
        ("", "month"),
        ("", "agg"),
    ]


def test_quoting_and_qualification_are_kept() -> None:
    assert _calls('SELECT "HEX"(x), public.month(d), pg_catalog.upper(x), "Sch".f(1)') == [
        ("", "HEX"),
        ("public", "month"),
        ("pg_catalog", "upper"),
        ("Sch", "f"),
    ]


def test_keyword_forms_are_not_calls() -> None:
    sql = (
        "SELECT CAST(a AS int), coalesce(a, b), greatest(1, 2), least(1, 2), nullif(a, b), "
        "extract(year FROM d), trim(both FROM a), position('a' IN b), current_date, "
        "localtime(2), ARRAY[1], ROW(1, 2), a::text, a || b, x IS DISTINCT FROM y, "
        "a = ANY (ARRAY[1]), EXISTS (SELECT 1), xmlelement(name x), normalize(a) FROM t"
    )
    assert _calls(sql) == []


def test_quoted_keywords_and_comma_forms_are_calls() -> None:
    """`"coalesce"(a)` is a lookup of a function named coalesce; gram.y reads
    substring/overlay with commas as calls of the unqualified name."""
    assert _calls('SELECT "coalesce"(a), substring(a, 1, 2), overlay(a, b, 1) FROM t') == [
        ("", "coalesce"),
        ("", "substring"),
        ("", "overlay"),
    ]


def test_names_sqlglot_parses_by_special_parsers() -> None:
    assert sorted(_calls("SELECT string_agg(a, ','), floor(x), if(a, b, c), decode(a, 'hex')")) == [
        ("", "decode"),
        ("", "floor"),
        ("", "if"),
        ("", "string_agg"),
    ]


def test_from_items_sqlglot_reads_as_tables_are_calls() -> None:
    assert _calls("SELECT * FROM anti(1), LATERAL comment(2), ROWS FROM (unnest(x))") == [
        ("", "anti"),
        ("", "comment"),
        ("", "unnest"),
    ]
    assert _calls("INSERT INTO t (a) SELECT 1 FROM u AS x(a)") == []


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("SELECT hex(1)", "function hex is not in the proxy's catalog"),
        ("SELECT month(now())", "function month is not in the proxy's catalog"),
        ("SELECT ifnull(1, 2)", "function ifnull is not in the proxy's catalog"),
        ("SELECT agg(1)", "function agg is not in the proxy's catalog"),
        ("SELECT pg_catalog.hex(1)", "function pg_catalog.hex is not in the proxy's catalog"),
        ("SELECT * FROM public.coalesce(1)", "function public.coalesce is not in"),
        ("SELECT \"LOWER\"('x')", "function LOWER is not in the proxy's catalog"),
        ("SELECT if(true, 1, 2)", "function if is not in the proxy's catalog"),
    ],
)
def test_unknown_written_names_are_refused(sound: PolicyEngine, sql: str, reason: str) -> None:
    d = sound.decide(sql, ALICE)
    assert d.action == "block" and reason in d.reason, (sql, d.reason)


def test_builtins_sqlglot_renames_still_work(sound: PolicyEngine) -> None:
    sql = (
        "SELECT strpos('ab', 'b'), left('ab', 1), now(), date_trunc('day', now()), "
        "to_char(now(), 'YYYY'), string_agg('a', ',' ORDER BY 1), coalesce(1, 2), "
        "substring('abc' FROM 1 FOR 2), substring('abc', 1, 2), extract(year FROM now()), "
        "generate_series(1, 2), floor(1.5), unnest(ARRAY[1]), count(*), greatest(1, 2)"
    )
    d = sound.decide(sql, ALICE)
    assert d.action == "allow", d.reason


def test_a_schema_before_pg_catalog_may_shadow_a_builtin(sound: PolicyEngine) -> None:
    """pg_catalog is searched first unless the path lists it later: then a `left` made
    in public since the catalog was read would be the one PostgreSQL runs."""
    late = SessionFacts("alice", "db", search_path=("public", "pg_catalog"))
    d = sound.decide("SELECT left('ab', 1)", late)
    assert d.action == "block"
    assert "function left could be one in public" in d.reason
    assert sound.decide("SELECT pg_catalog.left('ab', 1)", late).action == "allow"
    early = SessionFacts("alice", "db", search_path=("pg_catalog", "public"))
    assert sound.decide("SELECT left('ab', 1)", early).action == "allow"
    assert sound.decide("SELECT left('ab', 1)", ALICE).action == "allow"


def test_a_schema_before_pg_catalog_may_shadow_a_system_relation(sound: PolicyEngine) -> None:
    """The same for relations: a `public.pg_class` made since the snapshot is what an
    unqualified `pg_class` reads when the path puts public before pg_catalog."""
    late = SessionFacts("alice", "db", search_path=("public", "pg_catalog"))
    d = sound.decide("SELECT relname FROM pg_class", late)
    assert d.action == "block"
    assert "relation pg_class could be one in public" in d.reason
    assert "pg_catalog.pg_class" in d.reason
    assert sound.decide("SELECT relname FROM pg_catalog.pg_class", late).action == "allow"
    early = SessionFacts("alice", "db", search_path=("pg_catalog", "public"))
    assert sound.decide("SELECT relname FROM pg_class", early).action == "allow"
    assert sound.decide("SELECT relname FROM pg_class", ALICE).action == "allow"


def test_a_set_search_path_earlier_in_the_string_moves_later_calls(sound: PolicyEngine) -> None:
    """Statements behind a SET in one simple Query are decided under the new path."""
    d = sound.decide("SET search_path = public, pg_catalog; SELECT left('ab', 1)", ALICE)
    assert d.action == "block" and "could be one in public" in d.reason
    d = sound.decide("SET search_path = sandbox, public; SELECT distance_km(1, 2)", ALICE)
    assert d.statements[1].functions == ("public.distance_km",)
    d = sound.decide("SELECT left('ab', 1); SET search_path = public, pg_catalog", ALICE)
    assert d.action == "allow"


def test_view_definitions_are_read_by_written_names() -> None:
    """A view's definition is expanded into the user's statement: its calls run under
    the user's path and are checked by their written names too."""
    body = _definition("SELECT hex(x), coalesce(x, 1) FROM public.t")
    assert [(c.schema, c.names[0]) for c in collect(body).calls] == [("", "hex")]


# Every word sqlglot treats specially, in each position a call may take.
_KWLIST = re.compile(r"[a-z_][a-z0-9_]*")
_TEMPLATES = (
    "SELECT {}(1)",
    "SELECT {}(1, 'a')",
    "SELECT * FROM {}(1)",
    "SELECT 1 FROM t JOIN {}(1) ON true",
    "SELECT 1 FROM t, LATERAL {}(1)",
    "SELECT 1 WHERE {}(1) = 1",
    "SELECT s.{}(1)",
    "SELECT * FROM s.{}(1)",
    "SELECT f(x, {}(1))",
)


def _words() -> list[str]:
    p = Postgres.Parser
    raw = {
        *p.FUNCTIONS,
        *p.FUNCTION_PARSERS,
        *p.NO_PAREN_FUNCTION_PARSERS,
        *Postgres.Tokenizer.KEYWORDS,
    }
    words = {w.lower() for w in raw if isinstance(w, str)}
    return sorted(w for w in words if _KWLIST.fullmatch(w) and w not in NOT_FUNCTION_NAMES)


def test_every_call_of_a_word_sqlglot_knows_is_found() -> None:
    """Each `word(...)` that parses is found as a call of `word`, whatever sqlglot made
    of it: a sqlglot upgrade that adds a new way of losing the name fails here."""
    missed: list[str] = []
    for word in _words():
        for template in _TEMPLATES:
            sql = template.format(word)
            try:
                tree = _parse(split(sql)[0])
            except Exception:
                continue  # not SQL sqlglot reads: refused as unparsed
            if tree is None:
                continue
            names = [c.names[0] for c in collect(tree).calls]
            if word not in names:
                missed.append(sql)
    assert missed == []
