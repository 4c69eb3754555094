"""Fuzzing: nested expressions in every position the server evaluates one.

A payload (a governed subquery, a denied column or schema, a dangerous function,
a function or relation the catalog does not know) is wrapped in random
expression syntax and put in a random position: EXECUTE and CALL arguments,
PREPARE / DECLARE / EXPLAIN / COPY / CREATE ... AS bodies, VALUES, RETURNING,
ON CONFLICT, LIMIT / OFFSET, ORDER BY, window frames, MERGE, FROM functions,
DEFAULT, ALTER ... USING / CHECK.
Whatever the combination, the engine refuses it or rewrites it so that every
read of the governed table goes through its masking subquery.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp, parse
from sqlglot.dialects.postgres import Postgres

from proxy.catalog import Catalog
from proxy.identity import SessionFacts
from proxy.policy.builtins import BUILTIN_FUNCTIONS, NOT_FUNCTION_NAMES
from proxy.policy.engine import PolicyEngine
from proxy.rules import load_rules

from .cases import FIXTURES

ALICE = SessionFacts("alice", "db")
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))

# Payloads that must always be refused, each with a fragment of the reason.
REFUSED = {
    "(SELECT max(notes) FROM cases)": "notes is denied",
    "(SELECT value FROM internal.secrets LIMIT 1)": "access to internal.secrets is denied",
    "query_to_xml('select ssn from people', true, true, '')": "query_to_xml()",
    "table_to_xml('internal.secrets', true, true, '')": "table_to_xml()",
    "pg_read_file('/etc/passwd')": "pg_read_file()",
    "dblink('host=x', 'select 1')": "dblink()",
    "leak_people()": "public.leak_people is not allowed",
    "fresh_leak(1)": "fresh_leak is not in the proxy's catalog",
    "pg_catalog.fresh_leak(1)": "pg_catalog.fresh_leak is not in the proxy's catalog",
    "(SELECT count(*) FROM people_2026)": "people_2026 is not in the proxy's catalog",
}
# A payload that reads the governed table: refused or masked, never raw.
GOVERNED = [
    "(SELECT ssn FROM people LIMIT 1)",
    "(SELECT max(p.ssn) FROM public.people p)",
    "(SELECT string_agg(email, ',') FROM \"people\")",
    "(SELECT row_to_json(x) FROM people x LIMIT 1)",
]
WRAPPERS = [
    "{}",
    "coalesce({}, NULL)",
    "CAST({} AS text)",
    "({})::text",
    "ARRAY[{}]",
    "CASE WHEN true THEN {} END",
    "lower(CAST({} AS text))",
    "(SELECT {})",
    "(SELECT 1 WHERE {} IS NOT NULL)",
    "length(CAST({} AS text)) + 1",
]
POSITIONS = [
    "EXECUTE s({})",
    "EXECUTE s(1, {})",
    "EXPLAIN EXECUTE s({})",
    "CALL distance_km({})",
    "PREPARE q AS SELECT {}",
    "DECLARE c CURSOR FOR SELECT {}",
    "EXPLAIN SELECT {}",
    "COPY (SELECT {}) TO STDOUT",
    "CREATE TABLE copy_of AS SELECT {} AS x",
    "SELECT {} INTO copy_of",
    "INSERT INTO sandbox.scratch VALUES ({}, 1)",
    "INSERT INTO sandbox.scratch (a) VALUES (1) RETURNING {}",
    "INSERT INTO sandbox.scratch (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET b = {}",
    "UPDATE sandbox.scratch SET a = {}",
    "UPDATE sandbox.scratch SET a = 1 RETURNING {}",
    "DELETE FROM sandbox.scratch WHERE a = {}",
    "SELECT 1 LIMIT {}",
    "SELECT 1 OFFSET {}",
    "SELECT 1 FROM regions ORDER BY {}",
    "SELECT row_number() OVER (ORDER BY {}) FROM regions",
    "SELECT count(*) FROM regions GROUP BY {}",
    "SELECT * FROM generate_series(1, {})",
    "VALUES ({})",
    "WITH w AS (SELECT {} AS x) SELECT x FROM w",
    "ALTER TABLE sandbox.scratch ALTER COLUMN a TYPE text USING {}",
    "ALTER TABLE sandbox.scratch ALTER COLUMN a SET DEFAULT {}",
    "ALTER DOMAIN posint ADD CONSTRAINT c CHECK ({} IS NOT NULL)",
    "CREATE TABLE t2 (a text DEFAULT {})",
    "MERGE INTO sandbox.scratch t USING (SELECT {} AS a) s ON false "
    "WHEN NOT MATCHED THEN INSERT (a) VALUES (s.a)",
]


@pytest.fixture(scope="module")
def sound(catalog: Catalog) -> PolicyEngine:
    return PolicyEngine(load_rules(FIXTURES / "soundness_rules.yaml"), catalog)


def _masked(sql: str) -> bool:
    """Every read of public.people sits inside its masking subquery (ssn redacted,
    the row filter applied behind the OFFSET 0 fence)."""
    for prefix in ("PREPARE q AS ", "DECLARE c CURSOR FOR ", "EXPLAIN "):
        sql = sql.removeprefix(prefix)
    sql = sql.removeprefix("EXECUTE s").removeprefix("CALL distance_km")
    trees = parse(sql if not sql.startswith("(") else f"SELECT {sql}", read="postgres")
    seen = 0
    for tree in trees:
        assert tree is not None
        for t in tree.find_all(exp.Table):
            if t.name.lower() != "people":
                continue
            seen += 1
            select = t.find_ancestor(exp.Select)
            if select is None:
                return False
            text = select.sql("postgres")
            if "region = 'north'" not in text or "OFFSET 0" not in text:
                return False
            if "'****' AS \"ssn\"" not in text:
                return False
    return seen > 0


@FUZZ
@given(
    payload=st.sampled_from(sorted(REFUSED)),
    wrap=st.sampled_from(WRAPPERS),
    depth=st.integers(1, 3),
    position=st.sampled_from(POSITIONS),
)
def test_refused_payload_in_any_position(
    sound: PolicyEngine, payload: str, wrap: str, depth: int, position: str
) -> None:
    expr = payload
    for _ in range(depth):
        expr = wrap.format(expr)
    sql = position.format(expr)
    d = sound.decide(sql, ALICE)
    assert d.action == "block", (sql, d.action, d.sql)
    assert d.error is not None and d.error.sqlstate == "42501"


@FUZZ
@given(
    payload=st.sampled_from(GOVERNED),
    wrap=st.sampled_from(WRAPPERS),
    depth=st.integers(1, 3),
    position=st.sampled_from(POSITIONS),
)
def test_governed_payload_in_any_position_is_masked(
    sound: PolicyEngine, payload: str, wrap: str, depth: int, position: str
) -> None:
    expr = payload
    for _ in range(depth):
        expr = wrap.format(expr)
    sql = position.format(expr)
    d = sound.decide(sql, ALICE)
    if d.action == "block":
        return  # refusing is always sound
    assert d.action == "rewrite", (sql, d.action)
    assert _masked(d.sql), (sql, d.sql)


# Every name sqlglot parses into a node of its own (or by a special parser), as a
# call name: none may pass as a built-in unless PostgreSQL's own list has it.
_SQLGLOT_NAMES = sorted(
    n.lower()
    for n in (
        *Postgres.Parser.FUNCTIONS,
        *Postgres.Parser.FUNCTION_PARSERS,
        *Postgres.Parser.NO_PAREN_FUNCTION_PARSERS,
    )
    if n.replace("_", "").isalnum() and not n[0].isdigit()
)


def _unknown_call(sound: PolicyEngine, name: str, position: str) -> None:
    """`name(1)` in `position` is refused unless PostgreSQL knows `name` as a built-in
    (or as syntax it never looks up: CAST, COALESCE...) or the catalog has it."""
    if f"pg_catalog.{name}" in BUILTIN_FUNCTIONS or name in NOT_FUNCTION_NAMES:
        return
    if name in sound.catalog.functions:
        return
    sql = position.format(f"{name}(1)")
    d = sound.decide(sql, ALICE)
    assert d.action == "block", (sql, d.sql)


@FUZZ
@given(
    name=st.from_regex(r"[a-z][a-z0-9_]{2,20}", fullmatch=True) | st.sampled_from(_SQLGLOT_NAMES),
    position=st.sampled_from(POSITIONS),
)
def test_unknown_function_names_never_pass_as_builtins(
    sound: PolicyEngine, name: str, position: str
) -> None:
    _unknown_call(sound, name, position)


@pytest.mark.parametrize(
    "position",
    [
        "SELECT {}",
        "SELECT * FROM {}",
        "SELECT 1 FROM regions, LATERAL {}",
        "SELECT 1 FROM regions WHERE {} = 1",
        "SELECT * FROM ROWS FROM ({})",
    ],
)
def test_every_sqlglot_modelled_name_is_checked_as_written(
    sound: PolicyEngine, position: str
) -> None:
    """All of them, not a sample: `hex`, `month`, `agg`, `ifnull`, `if`, `string_agg`..."""
    for name in _SQLGLOT_NAMES:
        _unknown_call(sound, name, position)
        for form in (f'"{name}"', f"public.{name}", f"pg_catalog.{name}"):
            if form == f"pg_catalog.{name}" and f"pg_catalog.{name}" in BUILTIN_FUNCTIONS:
                continue
            if form.startswith("public.") and name in sound.catalog.functions:
                continue
            if form.startswith('"') and f"pg_catalog.{name}" in BUILTIN_FUNCTIONS:
                continue
            sql = position.format(f"{form}(1)")
            d = sound.decide(sql, ALICE)
            assert d.action == "block", (sql, d.sql)
