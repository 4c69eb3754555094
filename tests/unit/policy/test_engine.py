"""PolicyEngine API: statement facts, multi-statement strings, cache, dry run, defaults."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from proxy.catalog import Catalog
from proxy.errors import Blocked, NotUnderstood
from proxy.identity import SessionFacts
from proxy.policy.engine import PolicyEngine
from proxy.rules import load_rules

ALICE = SessionFacts("alice", "db")


def make(tmp_path: Path, text: str, catalog: Catalog) -> PolicyEngine:
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return PolicyEngine(load_rules(p), catalog)


def test_statement_info(engine: PolicyEngine) -> None:
    d = engine.decide(
        "SELECT name, upper(region) FROM people WHERE id = 42 LIMIT 10 OFFSET 20", ALICE
    )
    (s,) = d.statements
    assert s.kind == "select"
    assert s.tables == ("public.people",)
    assert set(s.columns) == {"public.people.name", "public.people.region", "public.people.id"}
    assert s.functions == ("pg_catalog.upper",)
    assert s.literals == ("42", "10", "20")
    assert s.redacted == "SELECT name, upper(region) FROM people WHERE id = ? LIMIT ? OFFSET ?"
    assert s.has_where and s.has_limit and s.offset == 20
    assert not s.copy_out and not s.ddl and s.search_path is None
    assert s.action == "rewrite" and s.rewritten == d.sql


def test_fingerprint_ignores_literals_and_case() -> None:
    from proxy.policy.split import split
    from proxy.redact import redact

    def fp(sql: str) -> str:
        p = split(sql)[0]
        return redact(p.text, p.tokens)[1]

    assert fp("SELECT * FROM t WHERE a = 1") == fp("select * from T where A = 2")
    assert fp("SELECT * FROM t WHERE a = 'x'") == fp("SELECT * FROM t WHERE a = 'y'")
    assert fp("SELECT * FROM t WHERE a = 1") != fp("SELECT * FROM t WHERE b = 1")
    assert fp('SELECT * FROM "T"') != fp("SELECT * FROM t")


def test_star_columns_and_whole_row(engine: PolicyEngine) -> None:
    (s,) = engine.decide("SELECT p FROM people p", ALICE).statements
    assert len(s.columns) == 6


def test_multi_statement_infos_and_join(engine: PolicyEngine) -> None:
    d = engine.decide("SELECT 1; SELECT name FROM people; SHOW search_path", ALICE)
    assert [s.kind for s in d.statements] == ["select", "select", "show"]
    assert d.action == "rewrite"
    parts = d.sql.split("; ")
    assert parts[0] == "SELECT 1" and parts[-1] == "SHOW search_path"
    assert "WHERE (region = 'north')" in parts[1]


def test_multi_statement_block_names_first_blocking_rule(engine: PolicyEngine) -> None:
    d = engine.decide("SELECT * FROM internal.secrets; SELECT notes FROM cases", ALICE)
    assert d.action == "block" and d.rules[0] == "internal-schema"
    assert isinstance(d.error, Blocked) and d.error.rule == "internal-schema"
    assert d.sql.startswith("SELECT * FROM internal.secrets")


def test_search_path_facts(engine: PolicyEngine) -> None:
    cases = {
        "SET search_path TO sandbox, public": ("sandbox", "public"),
        'SET LOCAL search_path = "Odd", x': ("Odd", "x"),
        "RESET search_path": ("$user", "public"),
        "SET search_path TO DEFAULT": ("$user", "public"),
        "SELECT set_config('search_path', 'sandbox', false)": ("sandbox",),
        "SET application_name = 'x'": None,
    }
    for sql, path in cases.items():
        d = engine.decide(sql, ALICE)
        assert d.action == "allow", sql
        assert d.statements[0].search_path == path, sql


def test_search_path_changes_resolution(engine: PolicyEngine) -> None:
    facts = SessionFacts("alice", "db", search_path=("internal",))
    assert engine.decide("SELECT * FROM secrets", facts).rules == ("internal-schema",)
    # Off the path, the name means public.secrets, which the catalog does not know.
    facts = SessionFacts("alice", "db", search_path=("public",))
    d = engine.decide("SELECT * FROM secrets", facts)
    assert d.rules == ("defaults.catalog",) and "relation secrets is not" in d.reason
    assert d.statements[0].unknown == ("secrets",)


def test_ddl_and_copy_facts(tmp_path: Path, catalog: Catalog) -> None:
    e = make(tmp_path, "version: 1\ndefaults: {statements: [all]}\n", catalog)
    assert e.decide("CREATE TABLE x (a int)", ALICE).statements[0].ddl
    assert e.decide("DROP TABLE x", ALICE).statements[0].ddl
    s = e.decide("COPY people TO STDOUT", ALICE).statements[0]
    assert s.copy_out and s.kind == "copy"
    assert not e.decide("COPY people FROM STDIN", ALICE).statements[0].copy_out
    assert e.decide("COPY (SELECT 1) TO STDOUT", ALICE).statements[0].copy_out


def test_copy_of_governed_table_is_rewritten(tmp_path: Path, catalog: Catalog) -> None:
    e = make(
        tmp_path,
        """version: 1
defaults: {statements: [select, copy]}
users: {alice: {attributes: {region: north}}}
rules:
  - {id: r, table: public.people, row_filter: "region = :region", columns: {ssn: redact}}
""",
        catalog,
    )
    d = e.decide("COPY people TO STDOUT WITH (FORMAT csv)", ALICE)
    assert d.action == "rewrite"
    assert d.sql.startswith("COPY (SELECT * FROM (SELECT")
    d = e.decide("COPY people (id, ssn) TO STDOUT", ALICE)
    assert d.sql.startswith("COPY (SELECT id, ssn FROM (SELECT")
    assert e.decide("COPY people TO '/tmp/x'", ALICE).rules[0] == "defaults.side_channels"
    assert e.decide("COPY people TO PROGRAM 'cat'", ALICE).action == "block"
    assert e.decide("COPY people FROM STDIN", ALICE).rules[0] == "r"


def test_cache_hits_and_keys(tmp_path: Path, catalog: Catalog) -> None:
    e = PolicyEngine(load_rules(Path(__file__).parent / "fixtures" / "rules.yaml"), catalog)
    a = e.decide("SELECT name FROM people", ALICE)
    assert e.decide("SELECT name FROM people", ALICE) is a
    b = e.decide("SELECT name FROM people", SessionFacts("bob", "db"))
    assert b is not a and "south" in b.sql
    moved = SessionFacts("alice", "db", search_path=("sandbox", "public"))
    assert e.decide("SELECT name FROM people", moved) is not a
    assert e.decide("SELECT name FROM people", ALICE, extended=True) is not a


def test_cache_is_bounded(catalog: Catalog) -> None:
    e = PolicyEngine(
        load_rules(Path(__file__).parent / "fixtures" / "rules.yaml"), catalog, cache_size=5
    )
    for i in range(20):
        e.decide(f"SELECT c{i} FROM t", ALICE)  # no literals: 20 shapes, not one
    assert len(e._cache) == 5


def test_hours_in_cache_key(tmp_path: Path, catalog: Catalog) -> None:
    e = make(
        tmp_path,
        """version: 1
rules:
  - {id: office-hours, table: public.people, access: deny, match: {hours: ['18:00-08:00']}}
""",
        catalog,
    )
    night = SessionFacts("x", "db", now=datetime(2026, 1, 1, 23, 0))
    day = SessionFacts("x", "db", now=datetime(2026, 1, 1, 12, 0))
    assert e.decide("SELECT 1 FROM people", night).action == "block"
    assert e.decide("SELECT 1 FROM people", day).action == "allow"


def test_attribute_values_are_literals_not_sql(tmp_path: Path, catalog: Catalog) -> None:
    e = make(
        tmp_path,
        """version: 1
users: {mallory: {attributes: {region: "x' OR '1'='1"}}}
rules:
  - {id: r, table: public.people, row_filter: "region = :region AND name <> :user"}
""",
        catalog,
    )
    d = e.decide("SELECT 1 FROM people", SessionFacts("mallory", "db"))
    assert "region = 'x'' OR ''1''=''1'" in d.sql
    assert "name <> 'mallory'" in d.sql


def test_rule_snippet_tables_are_pinned(tmp_path: Path, catalog: Catalog) -> None:
    e = make(
        tmp_path,
        """version: 1
users: {alice: {attributes: {region: north}}}
rules:
  - id: r
    table: public.cases
    row_filter: "officer_id IN (SELECT id FROM officers WHERE region = :region)"
""",
        catalog,
    )
    d = e.decide("WITH officers AS (SELECT 1 AS id, 'north' AS region) SELECT id FROM cases", ALICE)
    assert 'FROM "public".officers WHERE' in d.sql


def test_dry_run_everything(tmp_path: Path, catalog: Catalog) -> None:
    e = make(
        tmp_path,
        """version: 1
defaults: {mode: dry_run}
rules:
  - {id: r, table: public.cases, columns: {notes: deny}}
""",
        catalog,
    )
    d = e.decide("SELECT notes FROM cases", ALICE)
    assert d.action == "allow" and d.dry_run and d.would == "block"
    assert d.sql == "SELECT notes FROM cases" and d.error is None
    assert "r" in d.rules
    d = e.decide("SELECT 1", ALICE)
    assert d.action == "allow" and not d.dry_run


def test_dry_run_one_rule(tmp_path: Path, catalog: Catalog) -> None:
    e = make(
        tmp_path,
        """version: 1
users: {alice: {attributes: {region: north}}}
rules:
  - {id: trial, table: public.cases, columns: {notes: deny}, mode: dry_run}
  - {id: people, table: public.people, row_filter: "region = :region"}
""",
        catalog,
    )
    d = e.decide("SELECT notes FROM cases", ALICE)
    assert (d.action, d.dry_run, d.would) == ("allow", True, "block")
    assert d.rules[0] == "trial"
    d = e.decide("SELECT notes, p.name FROM cases, people p", ALICE)
    assert (d.action, d.dry_run, d.would) == ("rewrite", True, "block")
    assert "region = 'north'" in d.sql and "people" in d.rules


def test_no_policy_user(tmp_path: Path, catalog: Catalog) -> None:
    e = make(
        tmp_path,
        """version: 1
defaults: {unknown_tables: block}
rules:
  - {id: r, table: public.people, match: {groups: [analysts]}, row_filter: "false"}
""",
        catalog,
    )
    nobody = SessionFacts("nobody", "db")
    assert e.decide("SELECT public.leak_people()", nobody).action == "allow"
    assert e.decide("SELECT * FROM regions", nobody).action == "allow"
    assert e.decide("SELECT query_to_xml('x', true, true, '')", nobody).action == "allow"
    assert e.decide("DELETE FROM regions", nobody).rules == ("defaults.statements",)
    assert isinstance(e.decide("FROB", nobody).error, NotUnderstood)


def test_unknown_tables_block(tmp_path: Path, catalog: Catalog) -> None:
    e = make(
        tmp_path,
        """version: 1
defaults: {unknown_tables: block}
users: {alice: {groups: [analysts]}}
rules:
  - {id: officers, table: public.officers, match: {groups: [analysts]}}
""",
        catalog,
    )
    assert e.decide("SELECT * FROM officers", ALICE).action == "allow"
    d = e.decide("SELECT * FROM regions", ALICE)
    assert d.rules == ("defaults.unknown_tables",)
    assert e.decide("SELECT * FROM pg_catalog.pg_class", ALICE).action == "allow"
    assert e.decide("SELECT * FROM information_schema.tables", ALICE).action == "allow"


def test_unparsed_allow_and_all_statements(tmp_path: Path, catalog: Catalog) -> None:
    e = make(tmp_path, "version: 1\ndefaults: {unparsed: allow, statements: [all]}\n", catalog)
    assert e.decide("FROBNICATE", ALICE).action == "allow"
    assert e.decide("SELECT 'unterminated", ALICE).action == "allow"
    assert e.decide("VACUUM regions", ALICE).action == "allow"
    assert e.decide("INSERT INTO regions VALUES ('a', 'b')", ALICE).action == "allow"


def test_masks_without_catalog_columns_block(tmp_path: Path) -> None:
    e = make(
        tmp_path,
        "version: 1\nrules:\n  - {id: r, table: public.t, columns: {a: redact}}\n",
        Catalog(),
    )
    d = e.decide("SELECT a FROM t", ALICE)
    assert d.action == "block" and "no column list" in d.reason
    e2 = make(
        tmp_path,
        "version: 1\nrules:\n  - {id: r, table: public.t, row_filter: 'a > 0'}\n",
        Catalog(),
    )
    assert 'SELECT * FROM "public"."t" WHERE (a > 0)' in e2.decide("SELECT a FROM t", ALICE).sql


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ("SELECT 1; SELECT 2", "cannot insert multiple commands into a prepared statement"),
        ("DO $$ BEGIN END $$", None),
    ],
)
def test_extended_single_statement(engine: PolicyEngine, sql: str, why: str | None) -> None:
    d = engine.decide(sql, ALICE, extended=True)
    assert d.action == "block"
    if why:
        assert why in d.reason


@pytest.mark.parametrize("user", ["alice", "carol"])
def test_two_statements_in_one_parse_is_postgres_syntax_error(
    engine: PolicyEngine, user: str
) -> None:
    """PostgreSQL answers 42601 to a Parse holding two statements; so does the proxy."""
    d = engine.decide("SELECT 1; SELECT 2", SessionFacts(user, "db"), extended=True)
    assert d.action == "block" and d.error is not None
    assert d.error.sqlstate == "42601"
    assert d.error.message == "cannot insert multiple commands into a prepared statement"


def test_extended_keeps_typed_placeholders(engine: PolicyEngine) -> None:
    d = engine.decide(
        "SELECT name FROM people WHERE id = $1::int AND name = $2", ALICE, extended=True
    )
    assert "$1" in d.sql and "$2" in d.sql and d.action == "rewrite"


def test_internal_errors_fail_closed(engine: PolicyEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    import proxy.policy.engine as mod

    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(mod, "decide", boom)
    d = engine.decide("SELECT 'never seen before'", ALICE)
    assert d.action == "block" and isinstance(d.error, NotUnderstood)
    assert "internal policy error" in d.reason


def test_long_identifiers_truncate_like_postgres(tmp_path: Path, catalog: Catalog) -> None:
    name = "a" * 63
    e = make(
        tmp_path,
        f"version: 1\nrules:\n  - {{id: r, table: public.{name}, access: deny}}\n",
        catalog,
    )
    assert e.decide(f"SELECT 1 FROM {name}bcd", ALICE).rules == ("r",)
    assert e.decide(f'SELECT 1 FROM "{name.upper()}"', ALICE).rules == ("defaults.catalog",)


def test_ambiguous_write_target_is_pinned(tmp_path: Path, catalog: Catalog) -> None:
    e = make(
        tmp_path,
        """version: 1
defaults: {statements: [all]}
rules:
  - {id: r, table: public.people, row_filter: "false"}
""",
        catalog,
    )
    facts = SessionFacts("alice", "db", search_path=("sandbox", "public"))
    d = e.decide("INSERT INTO people (id, note) VALUES (1, 'x')", facts)
    assert d.action == "rewrite" and d.sql.startswith('INSERT INTO "sandbox".people')
    assert e.decide("INSERT INTO people (id) VALUES (1)", ALICE).rules == ("r",)


def test_view_with_its_own_rule(tmp_path: Path, catalog: Catalog) -> None:
    e = make(
        tmp_path,
        """version: 1
rules:
  - {id: view-ok, table: public.people_view, access: allow}
  - {id: r, table: public.people, row_filter: "false"}
""",
        catalog,
    )
    d = e.decide("SELECT name FROM people_view", ALICE)
    assert d.action == "allow" and d.rules == ("view-ok",)
    assert e.decide("SELECT name FROM people", ALICE).action == "rewrite"


def test_dry_run_rule_alone_restricts_nothing(tmp_path: Path, catalog: Catalog) -> None:
    e = make(
        tmp_path,
        """version: 1
rules:
  - {id: trial, table: public.cases, columns: {notes: deny}, mode: dry_run}
""",
        catalog,
    )
    d = e.decide("SELECT public.leak_people()", ALICE)
    assert d.action == "allow" and d.dry_run and d.would == "block"
    assert d.rules[0] == "defaults.functions"


def test_set_search_path_applies_to_later_statements_of_the_string(engine: PolicyEngine) -> None:
    d = engine.decide("SET search_path = internal; SELECT * FROM secrets", ALICE)
    assert d.action == "block" and d.rules[0] == "internal-schema"
    d = engine.decide("SET search_path = sandbox, public; SELECT note FROM people", ALICE)
    assert d.action == "rewrite" and 'FROM "sandbox".people' in d.sql


def test_session_plumbing_with_the_design_default_statements(
    tmp_path: Path, catalog: Catalog
) -> None:
    e = make(
        tmp_path,
        """version: 1
users: {alice: {attributes: {region: north}}}
rules:
  - {id: r, table: public.people, row_filter: "region = :region"}
""",
        catalog,
    )
    assert e.decide("PREPARE s AS SELECT name FROM people", ALICE).action == "rewrite"
    assert e.decide("PREPARE s AS DELETE FROM regions", ALICE).rules == ("defaults.statements",)
    for sql in ("EXECUTE s", "DEALLOCATE s", "DEALLOCATE ALL", "DISCARD ALL"):
        assert e.decide(sql, ALICE).action == "allow", sql
    assert e.decide("DISCARD ALL", ALICE).statements[0].search_path == ("$user", "public")
    assert e.decide("DISCARD PLANS", ALICE).statements[0].search_path is None


def test_truncate_cascade(tmp_path: Path, catalog: Catalog) -> None:
    e = make(
        tmp_path,
        """version: 1
defaults: {statements: [all]}
rules:
  - {id: r, table: public.cases, columns: {notes: deny}}
""",
        catalog,
    )
    assert e.decide("TRUNCATE regions", ALICE).action == "allow"
    d = e.decide("TRUNCATE regions CASCADE", ALICE)
    assert d.action == "block" and "CASCADE" in d.reason


def test_huge_statements_are_not_understood(engine: PolicyEngine) -> None:
    import proxy.policy.engine as mod

    d = engine.decide("SELECT 1 " + " " * mod.MAX_SQL, ALICE)
    assert d.action == "block" and "over" in d.reason


def test_long_or_chains_stay_linear(engine: PolicyEngine) -> None:
    import time

    def cost(n: int) -> float:
        sql = "SELECT 1 FROM cases WHERE " + " OR ".join(f"id = {i}" for i in range(n))
        t0 = time.perf_counter()
        assert engine.decide(sql, ALICE).action == "rewrite"
        return time.perf_counter() - t0

    small, large = cost(500), cost(4000)
    assert large < small * 8 * 4  # 8x the input: nowhere near 64x (quadratic)


def test_ddl_the_parser_does_not_model(tmp_path: Path, catalog: Catalog) -> None:
    e = make(
        tmp_path,
        """version: 1
defaults: {statements: [all]}
rules:
  - {id: r, table: public.people, row_filter: "false"}
""",
        catalog,
    )
    assert e.decide("COMMENT ON TABLE regions IS 'x'", ALICE).action == "allow"
    assert e.decide("COMMENT ON TABLE people IS 'x'", ALICE).rules == ("r",)
    assert e.decide("ALTER TABLE people OWNER TO bob", ALICE).rules == ("r",)
    assert e.decide("DROP TABLE regions", ALICE).action == "allow"
    # Creating a function is allowed here; calling it needs a functions: rule.
    assert e.decide("CREATE FUNCTION f() RETURNS int AS $$ SELECT 1 $$", ALICE).action == "allow"
    # DDL naming a governed table outside its AS query changes that table.
    for sql in (
        "CREATE INDEX ON people (name)",
        "CREATE TABLE t2 (LIKE people)",
        "CREATE TABLE t3 (a int REFERENCES people (id))",
        "DROP TABLE people",
    ):
        assert e.decide(sql, ALICE).rules == ("r",), sql
    d = e.decide("CREATE VIEW v AS SELECT * FROM people", ALICE)
    assert d.action == "rewrite" and "WHERE (FALSE) OFFSET 0" in d.sql


def test_catch_all_glob_spares_system_catalogs(tmp_path: Path, catalog: Catalog) -> None:
    e = make(
        tmp_path,
        """version: 1
rules:
  - {id: open, table: public.regions}
  - {id: deny-rest, table: "*.*", access: deny}
  - {id: no-proc, table: pg_catalog.pg_proc, access: deny}
""",
        catalog,
    )
    assert e.decide("SELECT * FROM regions", ALICE).action == "allow"
    assert e.decide("SELECT * FROM people", ALICE).rules == ("deny-rest",)
    assert e.decide("SELECT * FROM sandbox.scratch", ALICE).rules == ("deny-rest",)
    assert e.decide("SELECT relname FROM pg_class", ALICE).action == "allow"
    assert e.decide("SELECT * FROM information_schema.tables", ALICE).action == "allow"
    assert e.decide("SELECT proname FROM pg_proc", ALICE).rules == ("no-proc",)
