"""The shape cache never shares a decision between statements whose decisions differ.

The differential tests run texts through one long-lived engine (exact-text and
shape caches warm) and through a fresh engine per text, and require the two
decisions to be identical in every field: action, SQL, error, rules, reason,
dry-run facts and each statement's info (literals, offset, redacted text,
fingerprint...). The texts are the policy corpus (fixtures/*.sql, the rule
file's tests, the SQL in test_engine.py, and statements with a literal in
every position the engine reads one from), each with its literals swapped for
others: of the same lexical class (what the cache may share a decision
across) and of any class, names of functions and settings included.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, fields
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.catalog import Catalog
from proxy.identity import SessionFacts
from proxy.policy.engine import Decision, PolicyEngine
from proxy.policy.normcache import same
from proxy.policy.shape import Sentinels, Shape, free_slots, shape_of
from proxy.policy.split import split
from proxy.rules import RuleSet, load_rules

from .cases import FIXTURES, load_cases
from .literals import Slot, any_literal, same_class, slots, swap

ALICE = SessionFacts("alice", "db")


@dataclass(frozen=True)
class Stmt:
    user: str
    sql: str
    search_path: tuple[str, ...] | None = None
    extended: bool = False

    def facts(self) -> SessionFacts:
        if self.search_path is None:
            return SessionFacts(self.user, "db")
        return SessionFacts(self.user, "db", search_path=self.search_path)


# A literal in every kind of position the engine reads values from, and in the
# statement kinds whose literals all stay in the key.
POSITIONS = [
    "SELECT set_config('search_path', 'public', false)",
    "SELECT set_config('application_name', 'x', false)",
    "SELECT set_config('standard_conforming_strings', 'on', false)",
    "SELECT 'query_to_xml'::regproc, 'people'::regclass, CAST('cases' AS regclass)",
    "SELECT 'x'::pg_catalog.regproc, 'y'::\"regclass\", 'lower'::regprocedure",
    "SELECT pg_relation_size('people'::regclass)",
    "SELECT query_to_xml('select * from people', true, true, '')",
    "SELECT pg_read_file('/etc/passwd'), lo_import('/tmp/x'), dblink('host=x', 'select 1')",
    "SELECT name FROM people LIMIT 10 OFFSET 20",
    "SELECT name FROM people OFFSET 5 ROWS FETCH FIRST 3 ROWS ONLY",
    "SELECT name FROM people ORDER BY 1 LIMIT ALL OFFSET (7)",
    "SELECT name FROM people WHERE id = 1 AND name = 'x' AND region IN ('north', 'south')",
    "SELECT name FROM people WHERE dob > DATE '2020-01-01' AND dob < '2021-01-01'::date",
    "SELECT name FROM people WHERE name LIKE 'a%' ESCAPE '!' OR name ILIKE 'b%'",
    "SELECT name FROM people WHERE id BETWEEN 1 AND 10 AND -id < 3 * 2 + 1",
    "SELECT 'a' || name, CASE WHEN id > 1 THEN 'big' ELSE 'small' END AS size FROM people",
    "SELECT id::text = '1', now() - interval '1 day', x[1], data->'a', data->>'b' FROM t",
    "SELECT notes FROM cases WHERE status = 'open'",
    "SELECT * FROM internal.secrets WHERE id = 1",
    "SELECT name FROM people WHERE id = $1 AND name = 'x'",
    "SELECT 1; SET search_path = 'internal'; SELECT * FROM secrets WHERE id = 1",
    "SELECT 1; SELECT set_config('search_path', 'internal', false); SELECT * FROM secrets",
    "SET search_path TO 'public'",
    "SET application_name = 'x'",
    "SET standard_conforming_strings = 'on'",
    "SET client_encoding = 'UTF8'",
    "SHOW search_path",
    "PREPARE p AS SELECT name FROM people WHERE id = 1",
    "EXECUTE p(1, 'x')",
    "DECLARE c CURSOR FOR SELECT name FROM people WHERE id = 1",
    "EXPLAIN SELECT name FROM people WHERE id = 1",
    "EXPLAIN (ANALYZE 0) SELECT name FROM people WHERE id = 1",
    "COPY people TO STDOUT WITH (FORMAT 'csv', DELIMITER ',')",
    "COPY people TO '/tmp/people.csv'",
    "COPY (SELECT name FROM people WHERE id = 1) TO STDOUT",
    "INSERT INTO people (id, name, region) VALUES (1, 'x', 'north')",
    "UPDATE people SET name = 'x' WHERE id = 1",
    "DELETE FROM people WHERE id = 1 AND name = 'x'",
    "UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'",
    "SELECT E'a\\'b', $$x$$, $t$y$t$, U&'d\\0061', B'101', X'1F', N'x', 0x1F, 1_000, .5, 1e5",
    "SELECT name FROM people WHERE name = 'a' 'b' OR name = 'c'\n'd'",
    "SELECT name /* 'x' */ FROM people -- 'y'\nWHERE id = 1",
    "SELECT name FROM people WHERE email = U&'!0061' UESCAPE '!'",
    "SELECT count(*) FROM people GROUP BY 1 HAVING count(*) > 5",
    "SELECT name FROM people p WHERE (p).id = 1 AND p.region = 'north'",
    "WITH x AS (SELECT 1 AS a) SELECT a, 'x' FROM x WHERE a = 2",
    "VALUES (1, 'a'), (2, 'b')",
    "DO $$ BEGIN PERFORM 1; END $$",
    "CALL distance_km(1, 2)",
    "SELECT distance_km(1.5, 2.5), lower('X'), coalesce(name, 'none') FROM people",
    "SELECT name FROM people WHERE name = 'x'; SELECT (((",
    "SELECT name FROM people WHERE name = 'x'; SELECT 1 FROM WHERE",
]


def _engine_sql() -> list[str]:
    """Every string constant in test_engine.py that reads as a statement."""
    tree = ast.parse((Path(__file__).parent / "test_engine.py").read_text())
    starts = ("SELECT", "WITH", "SET", "RESET", "INSERT", "UPDATE", "DELETE", "COPY", "SHOW")
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value.strip()
            if text.upper().startswith(starts) and "\n" not in text.strip():
                out.append(node.value)
    return out


def _corpus() -> list[Stmt]:
    out: list[Stmt] = []
    for case in load_cases("evasions.sql") + load_cases("gui.sql"):
        out.append(Stmt(case.user, case.sql, case.search_path, case.extended))
    for test in yaml.safe_load((FIXTURES / "rules.yaml").read_text()).get("tests", []):
        out.append(Stmt(test["user"], test["sql"]))
    for sql in _engine_sql() + POSITIONS:
        for user in ("alice", "carol", "erin"):
            out.append(Stmt(user, sql))
    return list(dict.fromkeys(out))


CORPUS = _corpus()
WITH_LITERALS = [s for s in CORPUS if slots(s.sql)]
POSITIONED = [s for s in WITH_LITERALS if s.sql in POSITIONS and s.user == "alice"]


@pytest.fixture(scope="module")
def rule_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RuleSet]:
    """The fixture rules, and a copy with a dry-run rule and unparsed statements allowed."""
    text = (FIXTURES / "rules.yaml").read_text()
    variant = text.replace("unparsed: block", "unparsed: allow").replace(
        "  - id: no-case-notes\n", "  - id: no-case-notes\n    mode: dry_run\n"
    )
    assert variant.count("dry_run") == 1 and "unparsed: allow" in variant
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(variant)
    return {"fixtures": load_rules(FIXTURES / "rules.yaml"), "variant": load_rules(path)}


def differs(got: Decision, want: Decision) -> str:
    """The fields in which two decisions differ, for the failure message."""
    lines = []
    for f in fields(Decision):
        a, b = getattr(got, f.name), getattr(want, f.name)
        if f.name == "error":
            a, b = (None if e is None else (type(e).__name__, str(e)) for e in (a, b))
        if a != b:
            lines.append(f"{f.name}:\n  cached {a!r}\n  fresh  {b!r}")
    return "\n".join(lines)


def check(cached: PolicyEngine, stmt: Stmt, sql: str) -> None:
    facts = stmt.facts()
    got = cached.decide(sql, facts, extended=stmt.extended)
    want = PolicyEngine(cached.rules, cached.catalog).decide(sql, facts, extended=stmt.extended)
    assert same(got, want), f"{sql!r} as {stmt.user}\n{differs(got, want)}"


# Same-class values for the corpus run: names the engine reads, quotes,
# backslashes and non-ASCII text, and numbers of every plain form.
STRINGS = ["'query_to_xml'", "'it''s \\ ü\n'", "'search_path'"]
NUMBERS = ["7", "123456789012345678901234567", "1.5e3"]


def _variants(sql: str, found: list[Slot]) -> list[str]:
    def alt(slot: Slot, k: int) -> str | None:
        if slot.kind == "string":
            return STRINGS[k]
        if slot.kind == "number":
            return NUMBERS[k]
        if slot.kind == "dollar":
            src = sql[slot.start : slot.end]
            tag = src[: src.index("$", 1) + 1]
            return f"{tag}x'y{k}{tag}"
        return None

    out = [sql]
    for j in range(min(len(found), 6)):  # one slot at a time: the others keep their values
        for k in range(3):
            values: list[str | None] = [None] * len(found)
            values[j] = alt(found[j], k)
            out.append(swap(sql, found, values))
    for k in range(3):
        out.append(swap(sql, found, [alt(s, k) for s in found]))
    # Other classes in every slot: E'' strings and hex numbers never share a decision.
    out.append(swap(sql, found, ["E'\\\\'" if s.kind != "number" else "0x1F" for s in found]))
    return out


@pytest.mark.parametrize("rule_set", ["fixtures", "variant"])
def test_corpus_cached_equals_fresh(
    rule_sets: dict[str, RuleSet], catalog: Catalog, rule_set: str
) -> None:
    cached = PolicyEngine(rule_sets[rule_set], catalog)
    for stmt in CORPUS:
        found = slots(stmt.sql)
        for sql in _variants(stmt.sql, found) if found else [stmt.sql]:
            check(cached, stmt, sql)
    # The corpus did exercise the shape cache, not only the exact-text one.
    assert cached._shapes.hits > 200 and cached._shapes.probes > 50


def _variant_run(cached: PolicyEngine, stmt: Stmt, data: st.DataObject, rounds: int) -> None:
    found = slots(stmt.sql)
    pools = []
    for slot in found:
        value = same_class(stmt.sql, slot)
        mixed = data.draw(st.booleans())
        if mixed:
            value = st.one_of(value, any_literal)
        least = 2 if mixed or slot.kind != "other" else 1  # other: only as written
        pools.append(data.draw(st.lists(value, min_size=least, max_size=3, unique=True)))
    # Each slot cycles through its pool, at its own pace: first sight, second sight
    # (the template is made from it), then hits with every value.
    steps = data.draw(st.lists(st.integers(0, 2), min_size=len(found), max_size=len(found)))
    for r in range(rounds):
        values = [
            pool[(r * (step + 1)) % len(pool)] for pool, step in zip(pools, steps, strict=True)
        ]
        check(cached, stmt, swap(stmt.sql, found, values))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_literal_variants_cached_equal_fresh(
    rules: RuleSet, catalog: Catalog, data: st.DataObject
) -> None:
    """Texts of one corpus statement with values drawn from a small pool per literal,
    so that templates are made and then hit (a fresh cache per example, so each replays)."""
    stmt = data.draw(st.sampled_from(WITH_LITERALS))
    _variant_run(PolicyEngine(rules, catalog), stmt, data, 8)


@pytest.mark.parametrize("stmt", POSITIONED, ids=[s.sql[:50] for s in POSITIONED])
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_positions_cached_equal_fresh(
    rules: RuleSet, catalog: Catalog, stmt: Stmt, data: st.DataObject
) -> None:
    """The same for every statement with a literal where the engine reads one."""
    _variant_run(PolicyEngine(rules, catalog), stmt, data, 6)


def _rules(tmp_path: Path, text: str) -> RuleSet:
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return load_rules(p)


def _shape(sql: str) -> Shape | None:
    return shape_of(sql, split(sql))


@pytest.mark.parametrize(
    ("sql", "free"),
    [
        ("SELECT abalance FROM pgbench_accounts WHERE aid = 12345;", {0}),
        (
            "SELECT 1, 'a' AS x FROM t WHERE a = 'b' AND c IN (2, 3) AND d BETWEEN 4 AND 5",
            set(range(7)),
        ),
        ("INSERT INTO t VALUES (1, 'a') RETURNING 'b'", {2}),  # VALUES rows are read
        ("UPDATE t SET a = 'x' WHERE b = 2", {0, 1}),
        ("SELECT * FROM t WHERE d > DATE '2020-01-01' AND e = '1'::int", {0, 1}),
        ("SELECT * FROM t WHERE a = 1 LIMIT 10 OFFSET 20", {0}),
        ("SELECT * FROM t FETCH FIRST 3 ROWS ONLY", set()),
        ("SELECT * FROM t ORDER BY 1", set()),
        ("SELECT set_config('search_path', 'x', false)", set()),
        ("SELECT lower('X'), 'people'::regclass, CAST('x' AS regproc)", set()),
        ("SELECT 'x'::pg_catalog.regclass, '{1}'::int[], 'a'::varchar(3)", set()),
        ("SELECT a FROM t WHERE b LIKE 'x' ESCAPE '!' AND c[1] = 2", {0, 3}),
        ("SELECT now() - interval '1 day', j->'a', j->>'b' FROM t", set()),
        ("SELECT * FROM t WHERE a = 'x' AND a = 'x'", {0, 1}),
        ("SET search_path = 'x'", set()),
        ("SHOW search_path; SELECT 1", {0}),
        ("EXPLAIN SELECT * FROM t WHERE a = 1", set()),
        ("PREPARE p AS SELECT * FROM t WHERE a = 1", set()),
        ("DECLARE c CURSOR FOR SELECT * FROM t WHERE a = 1", set()),
        ("COPY (SELECT * FROM t WHERE a = 1) TO STDOUT", set()),
        ("EXECUTE p(1)", set()),
        ("DO $$ BEGIN END $$", set()),
        ("SELECT * FROM t WHERE a = $$x$$ AND lower($$y$$) = 'z'", {0, 2}),
        ("SET x = 1; SELECT 'y'", {1}),
        # A parse error names a column in the whole text: no value before it may vary.
        ("SELECT 'x'; SELECT (((", set()),
        ("SELECT 'x'; CREATE TABLE t (a int DEFAULT 1)", set()),
    ],
)
def test_free_slots(sql: str, free: set[int]) -> None:
    """Only values in positions the engine never reads are free; the rest stay in the key."""
    shape = _shape(sql)
    assert shape is not None
    assert free_slots(shape, Sentinels("osentinel", "918273645546372819")) == free


def test_slot_classes() -> None:
    """Literals sqlglot prints differently, or reads differently from PostgreSQL, are no slots."""
    shape = _shape(
        "SELECT 'a''b', $q$c$q$, 1, 1.5, 2e3, 1., E'x', U&'y', N'z', B'1', X'F', 0x1F, .5, 1_0, $1"
    )
    assert shape is not None
    assert shape.sources == ("'a''b'", "$q$c$q$", "1", "1.5", "2e3", "1.")
    assert [shape.slot_class(i) for i in range(6)] == ["'", "$q$", "9", "9.", "9.", "9."]
    assert "E'x'" in shape.key[-1] and "0x1F" in shape.key[-1]
    assert shape.literals == (
        ("a'b", "c", "1", "1.5", "2e3", "1.", "x", "y", "z", "1", "F", "5", "1"),
    )
    assert _shape('SELECT U&"x" FROM t WHERE a = 1') is None  # decoded for the parser
    assert _shape("SELECT a::oid[] FROM t WHERE a = 1") is None  # rewritten for the parser


def test_hits_carry_this_statements_values(catalog: Catalog, rules: RuleSet) -> None:
    e = PolicyEngine(rules, catalog)
    sql = "SELECT name, ssn FROM people WHERE id = {} AND name = {} LIMIT 5 OFFSET {}"
    for n in range(3):
        e.decide(sql.format(n, "'x'", 10), ALICE)
    assert e._shapes.hits == 1  # first sight, second sight (template made), hit
    d = e.decide(sql.format(42, "'it''s \\ ü'", 10), ALICE)
    assert e._shapes.hits == 2
    (info,) = d.statements
    assert info.literals == ("42", "it's \\ ü", "5", "10") and info.offset == 10
    assert d.sql.endswith("WHERE id = 42 AND name = 'it''s \\ ü' LIMIT 5 OFFSET 10")
    assert info.rewritten == d.sql and d.action == "rewrite"
    assert (
        info.redacted == "SELECT name, ssn FROM people WHERE id = ? AND name = ? LIMIT ? OFFSET ?"
    )
    # Another OFFSET is another key: decided afresh, with its own offset.
    d = e.decide(sql.format(43, "'y'", 20), ALICE)
    assert e._shapes.hits == 2 and d.statements[0].offset == 20


def test_allow_keeps_the_text_byte_for_byte(catalog: Catalog, rules: RuleSet) -> None:
    e = PolicyEngine(rules, catalog)
    # (regions: alice may not read a relation the catalog does not know)
    for v in ("1", "2", "3"):
        e.decide(f"SELECT label FROM regions WHERE code = {v} AND label = $$a$$;", ALICE)
    sql = "SELECT label FROM regions WHERE code = 007 AND label = $$it's\\$$;"
    d = e.decide(sql, ALICE)
    assert e._shapes.hits == 2
    assert d.action == "allow" and d.sql == sql and d.statements[0].literals == ("007", "it's\\")


def test_unfit_shapes_fall_back_to_exact_text(catalog: Catalog, rules: RuleSet) -> None:
    """sqlglot prints a dollar-quoted string as '...': no template, decided every time."""
    e = PolicyEngine(rules, catalog)
    for n in range(4):
        d = e.decide(f"SELECT name FROM people WHERE name = $${n}$$", ALICE)
        assert d.action == "rewrite" and d.sql.endswith(f"WHERE name = '{n}'")
    assert e._shapes.hits == 0


def test_function_arguments_never_shared(tmp_path: Path, catalog: Catalog) -> None:
    e = PolicyEngine(_rules(tmp_path, "version: 1\ndefaults: {statements: [all]}\n"), catalog)
    e2 = PolicyEngine(
        _rules(tmp_path, "version: 1\nrules: [{id: r, table: public.people}]\n"), catalog
    )
    sql = "SELECT set_config({}, 'x', false)"
    for engine in (e, e2):
        for name in ("'application_name'", "'work_mem'", "'datestyle'", "'search_path'"):
            d = engine.decide(sql.format(name), ALICE)
            want = PolicyEngine(engine.rules, catalog).decide(sql.format(name), ALICE)
            assert same(d, want)
    assert e2.decide(sql.format("'search_path'"), ALICE).statements[0].search_path == ("x",)
    assert e2.decide(sql.format("'client_encoding'"), ALICE).action == "block"


def test_parameters_are_not_literals(catalog: Catalog, rules: RuleSet) -> None:
    e = PolicyEngine(rules, catalog)
    for n in (1, 2, 3):
        e.decide(f"SELECT name FROM people WHERE id = $1 AND region = '{n}'", ALICE, extended=True)
    d = e.decide("SELECT name FROM people WHERE id = $2 AND region = '9'", ALICE, extended=True)
    assert "id = $2" in d.sql and "'9'" in d.sql


def test_tables_are_bounded(catalog: Catalog, rules: RuleSet) -> None:
    e = PolicyEngine(rules, catalog, cache_size=4)
    for n in range(30):
        for v in range(3):
            e.decide(f"SELECT c{n} FROM t WHERE a = {v} LIMIT {n}", ALICE)
    assert len(e._shapes._shapes) <= 4 and len(e._shapes._templates) <= 4
    assert len(e._cache) <= 4
