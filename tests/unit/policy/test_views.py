"""View expansion (proxy/policy/views.py): a view over governed tables is read through.

The catalog below is what load_catalog reads: view definitions as
pg_get_viewdef prints them under an empty search_path, with the transitive
base relations each view reads in `depends_on`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlglot import exp

from proxy.catalog import Catalog, Relation
from proxy.identity import SessionFacts
from proxy.policy import views
from proxy.policy.engine import PolicyEngine
from proxy.rules import RuleSet, load_rules

RULES = {
    "version": 1,
    "defaults": {"statements": ["select", "insert", "update", "delete"]},
    "users": {"ann": {"groups": ["analysts"], "attributes": {"region": "north"}}},
    "rules": [
        {
            "id": "people-north",
            "match": {"groups": ["analysts"]},
            "table": "public.people",
            "row_filter": "region = :region",
            "columns": {"ssn": "redact"},
        },
        {
            "id": "named-view",
            "match": {"groups": ["analysts"]},
            "table": "public.ruled_view",
            "row_filter": "region = 'south'",
        },
        {
            "id": "no-secrets",
            "match": {"groups": ["analysts"]},
            "table": "public.secrets",
            "access": "deny",
        },
    ],
}


def _view(
    name: str, columns: list[str], definition: str, deps: list[str], **kw: object
) -> dict[str, object]:
    return {
        "schema": "public",
        "name": name,
        "kind": "view",
        "columns": columns,
        "definition": definition,
        "depends_on": deps,
        **kw,
    }


SCHEMA = {
    "relations": [
        {"schema": "public", "name": "people", "columns": ["id", "name", "region", "ssn"]},
        {"schema": "public", "name": "orders", "columns": ["id", "person_id", "total"]},
        {"schema": "public", "name": "secrets", "columns": ["id", "value"]},
        _view(
            "people_view",
            ["id", "region", "ssn"],
            " SELECT people.id,\n    people.region,\n    people.ssn\n   FROM public.people;",
            ["public.people"],
        ),
        _view(
            "north_view",
            ["id", "ssn"],
            " SELECT people_view.id, people_view.ssn FROM public.people_view"
            " WHERE people_view.region = 'north'::text;",
            ["public.people", "public.people_view"],
        ),
        _view(
            "orders_view",
            ["id", "total"],
            " SELECT orders.id, orders.total FROM public.orders;",
            ["public.orders"],
        ),
        _view(
            "barrier_view",
            ["id", "region"],
            " SELECT people.id, people.region FROM public.people;",
            ["public.people"],
            options=["security_barrier=true"],
        ),
        _view(
            "ruled_view",
            ["id", "region"],
            " SELECT people.id, people.region FROM public.people;",
            ["public.people"],
        ),
        _view(
            "secret_view",
            ["id", "value"],
            " SELECT secrets.id, secrets.value FROM public.secrets;",
            ["public.secrets"],
        ),
        _view(
            "loop_a",
            ["id"],
            " SELECT loop_b.id FROM public.loop_b;",
            ["public.loop_b", "public.people"],
        ),
        _view(
            "loop_b",
            ["id"],
            " SELECT loop_a.id FROM public.loop_a;",
            ["public.loop_a", "public.people"],
        ),
        _view("broken_view", ["id"], "this is not sql(", ["public.people"]),
        {
            "schema": "public",
            "name": "people_mat",
            "kind": "matview",
            "columns": ["id"],
            "depends_on": ["public.people"],
        },
        _view(
            "catalog_view",
            ["relname", "id"],
            " SELECT pg_class.relname, people.id FROM pg_class, public.people;",
            ["public.people", "pg_catalog.pg_class"],
        ),
    ]
}

ANN = SessionFacts(user="ann", database="db")


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> RuleSet:
    path: Path = tmp_path_factory.mktemp("views") / "rules.yaml"
    path.write_text(yaml.safe_dump(RULES))
    return load_rules(path)


@pytest.fixture(scope="module")
def engine(rules: RuleSet) -> PolicyEngine:
    return PolicyEngine(rules, Catalog.from_dict(SCHEMA))


def _deep(n: int) -> dict[str, object]:
    """A catalog with views v0 <- v1 <- ... <- v{n-1}, v0 over people."""
    rels: list[dict[str, object]] = [
        {"schema": "public", "name": "people", "columns": ["id", "region"]}
    ]
    prev = "public.people"
    for i in range(n):
        deps = ["public.people"] + [f"public.v{j}" for j in range(i)]
        body = f" SELECT x.id, x.region FROM {prev} x;"
        rels.append(_view(f"v{i}", ["id", "region"], body, deps))
        prev = f"public.v{i}"
    return {"relations": rels}


def test_view_over_governed_table_is_expanded_and_masked(engine: PolicyEngine) -> None:
    d = engine.decide("SELECT region, count(*) FROM people_view GROUP BY region", ANN)
    assert d.action == "rewrite", d.reason
    assert "people_view" not in d.sql.replace('AS "people_view"', "").replace("people_view(", "")
    assert "region = 'north'" in d.sql and "'****' AS \"ssn\"" in d.sql
    assert d.statements[0].tables == ("public.people",)


def test_alias_and_column_aliases_are_kept(engine: PolicyEngine) -> None:
    d = engine.decide("SELECT v.a, v.region FROM people_view AS v(a) WHERE v.a > 1", ANN)
    assert d.action == "rewrite", d.reason
    assert ') AS v(a, "region", "ssn")' in d.sql


def test_nested_views_expand_recursively(engine: PolicyEngine) -> None:
    d = engine.decide("SELECT * FROM north_view", ANN)
    assert d.action == "rewrite", d.reason
    assert "north_view" in d.sql  # only as the alias
    assert "FROM public.people_view" not in d.sql
    assert "region = 'north'" in d.sql and "'****'" in d.sql


def test_view_over_ungoverned_tables_is_left_alone(engine: PolicyEngine) -> None:
    d = engine.decide("SELECT * FROM orders_view", ANN)
    assert d.action == "allow" and d.sql == "SELECT * FROM orders_view"


def test_security_barrier_keeps_the_fence(engine: PolicyEngine) -> None:
    d = engine.decide("SELECT id FROM barrier_view WHERE id = 3", ANN)
    assert d.action == "rewrite", d.reason
    assert 'AS "oversight_view" OFFSET 0) AS barrier_view' in d.sql


def test_a_rule_naming_the_view_wins(engine: PolicyEngine) -> None:
    d = engine.decide("SELECT id FROM ruled_view", ANN)
    assert d.action == "rewrite", d.reason
    assert "region = 'south'" in d.sql and "FROM public.ruled_view" in d.sql.replace('"', "")
    assert "region = 'north'" not in d.sql


def test_deny_on_a_base_table_refuses_the_view(engine: PolicyEngine) -> None:
    d = engine.decide("SELECT id FROM secret_view", ANN)
    assert d.action == "block" and d.rules[0] == "no-secrets"


def test_cycle_is_refused(engine: PolicyEngine) -> None:
    d = engine.decide("SELECT id FROM loop_a", ANN)
    assert d.action == "block"
    assert "cycle" in d.reason and d.rules[0] == "people-north"


def test_depth_limit_is_refused(rules: RuleSet) -> None:
    deep = PolicyEngine(rules, Catalog.from_dict(_deep(views.MAX_DEPTH + 2)))
    d = deep.decide(f"SELECT id FROM v{views.MAX_DEPTH + 1}", ANN)
    assert d.action == "block" and "deep" in d.reason
    ok = deep.decide(f"SELECT id FROM v{views.MAX_DEPTH - 1}", ANN)
    assert ok.action == "rewrite", ok.reason
    assert "region = 'north'" in ok.sql


def test_unparsable_definition_is_refused(engine: PolicyEngine) -> None:
    d = engine.decide("SELECT id FROM broken_view", ANN)
    assert d.action == "block" and "does not parse" in d.reason


def test_materialized_view_is_refused(engine: PolicyEngine) -> None:
    d = engine.decide("SELECT id FROM people_mat", ANN)
    assert d.action == "block" and d.rules[0] == "people-north"


def test_writes_through_a_view_are_refused(engine: PolicyEngine) -> None:
    for sql in (
        "UPDATE people_view SET region = 'x' WHERE id = 1",
        "DELETE FROM people_view",
        "INSERT INTO people_view (id) VALUES (99)",
    ):
        d = engine.decide(sql, ANN)
        assert d.action == "block", sql


def test_tablesample_on_a_view_is_refused(engine: PolicyEngine) -> None:
    d = engine.decide("SELECT id FROM people_view TABLESAMPLE BERNOULLI (50)", ANN)
    assert d.action == "block" and "TABLESAMPLE" in d.reason


def test_bare_names_in_a_definition_are_pg_catalog() -> None:
    rel = Catalog.from_dict(SCHEMA).relations["public.catalog_view"]
    sub = views._from_item(rel, exp.to_table("catalog_view"))
    assert "pg_catalog.pg_class" in sub.sql("postgres").replace('"', "")


def test_a_users_cte_cannot_capture_a_definition_name(engine: PolicyEngine) -> None:
    sql = "WITH people AS (SELECT 1 AS id, 'north' AS region, 's' AS ssn) SELECT * FROM people_view"
    d = engine.decide(sql, ANN)
    assert d.action == "rewrite", d.reason
    assert "'****'" in d.sql and "region = 'north'" in d.sql


def test_schema_qualified_column_references_follow_the_alias(engine: PolicyEngine) -> None:
    d = engine.decide("SELECT public.people_view.id FROM public.people_view", ANN)
    assert d.action == "rewrite", d.reason
    assert "public.people_view.id" not in d.sql


def test_unknown_names_are_reported(engine: PolicyEngine) -> None:
    d = engine.decide("SELECT * FROM brand_new JOIN people ON true", ANN)
    # Unqualified and unknown, so unresolvable: reported by its bare name.
    assert list(d.statements[0].unknown) == ["brand_new"]
    created = engine.decide("CREATE TABLE another_new (id int)", SessionFacts("bob", "db"))
    assert created.statements[0].unknown == ()


def test_joins_inside_parentheses_are_kept(engine: PolicyEngine) -> None:
    # sqlglot hangs `JOIN x` of `FROM (a JOIN x ...)` on the table node a itself.
    for name in ("people", "people_view"):
        sql = f"SELECT p.id FROM (public.{name} p JOIN public.orders o ON o.person_id = p.id)"
        d = engine.decide(sql, ANN)
        assert d.action == "rewrite", d.reason
        assert "JOIN public.orders AS o ON o.person_id = p.id)" in d.sql, d.sql


@pytest.mark.parametrize(
    ("option", "fenced"),
    [
        ("security_barrier=true", True),
        ("security_barrier=on", True),
        ("security_barrier=false", False),
    ],
)
def test_security_barrier_option_spellings(option: str, fenced: bool) -> None:
    rel = Catalog.from_dict(SCHEMA).relations["public.barrier_view"]
    rel = Relation(**{**{f: getattr(rel, f) for f in rel.__slots__}, "options": (option,)})
    sub = views._from_item(rel, exp.to_table("barrier_view"))
    assert ("OFFSET 0" in sub.sql("postgres")) is fenced


def test_a_name_off_the_path_that_the_catalog_knows_is_still_expanded(
    engine: PolicyEngine,
) -> None:
    # The proxy's idea of the path may lag the server's (a rolled-back SET):
    # the resolver's guess public.people_view is in the catalog, so it is expanded.
    facts = SessionFacts(user="ann", database="db", search_path=("pg_catalog",))
    d = engine.decide("SELECT ssn FROM people_view", facts)
    assert d.action == "rewrite", d.reason
    assert "'****'" in d.sql


def test_a_name_resolved_elsewhere_is_pinned_away_from_a_governed_view(
    engine: PolicyEngine,
) -> None:
    facts = SessionFacts(user="ann", database="db", search_path=("scratch",))
    d = engine.decide("SELECT ssn FROM people_view", facts)
    # scratch.people_view is not in the catalog: refused as unknown, never read as
    # the governed public.people_view.
    assert d.action == "block" and d.rules[0] == "defaults.catalog", d.reason
    assert d.statements[0].unknown == ("scratch.people_view",)


def test_a_materialized_view_off_the_path_is_refused(engine: PolicyEngine) -> None:
    facts = SessionFacts(user="ann", database="db", search_path=("pg_catalog",))
    d = engine.decide("SELECT id FROM people_mat", facts)
    assert d.action == "block" and "materialized" in d.reason
