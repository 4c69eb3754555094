"""Everything one decision is taken against: identity, applicable rules, names, catalog.

A `Context` is built per (identity facts, enforced-or-would-be) and answers the
questions the statement logic asks: which rule governs `schema.table` for this
identity, what an unqualified table or function name resolves to under the
session's search_path, whether the user has any policy at all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlglot import exp

from proxy.catalog import SYSTEM_SCHEMAS, Catalog, Relation
from proxy.identity import SessionFacts
from proxy.policy.builtins import BUILTIN_FUNCTIONS, BUILTIN_RELATIONS
from proxy.rules import Defaults, FunctionRule, Principal, RuleSet, TableRule


@dataclass(slots=True)
class Context:
    facts: SessionFacts
    who: Principal
    defaults: Defaults
    catalog: Catalog
    table_rules: list[TableRule]
    function_rules: list[FunctionRule]
    has_policy: bool
    path: tuple[str, ...]  # effective search path for relations (pg_temp, pg_catalog made explicit)
    user_functions: dict[str, tuple[str, ...]]  # lower-case name -> schemas (outside pg_catalog)
    _rule_cache: dict[str, TableRule | None] = field(default_factory=dict)
    every_rule: tuple[TableRule, ...] = ()  # all table rules, whoever they match
    # table -> column -> (subject id, is a key column): what lookups.py reports searches on
    subject_columns: Mapping[str, Mapping[str, tuple[str, bool]]] = field(default_factory=dict)
    # A Parse's declared parameter type OIDs (0: unspecified); None outside a Parse,
    # where no $n has a type the engine can know (pushdown.py reads it).
    params: tuple[int, ...] | None = None

    @classmethod
    def build(
        cls,
        rules: RuleSet,
        catalog: Catalog,
        facts: SessionFacts,
        *,
        enforce_only: bool,
        user_functions: dict[str, tuple[str, ...]],
        subject_columns: Mapping[str, Mapping[str, tuple[str, bool]]] | None = None,
        params: tuple[int, ...] | None = None,
    ) -> Context:
        """enforce_only: leave out rules in `mode: dry_run` (what is actually enforced)."""
        table_rules = rules.matching_rules(facts)
        function_rules = rules.matching_functions(facts)
        extraction = rules.matching_extraction(facts)
        if enforce_only:
            # Rules in dry run refuse nothing, so they do not make a user "one with a policy".
            table_rules = [r for r in table_rules if r.mode != "dry_run"]
            function_rules = [r for r in function_rules if r.mode != "dry_run"]
            extraction = [r for r in extraction if r.mode != "dry_run"]
        has_policy = bool(table_rules or function_rules or extraction)
        who = rules.principal(facts)
        return cls(
            facts=facts,
            who=who,
            defaults=rules.defaults,
            catalog=catalog,
            table_rules=table_rules,
            function_rules=function_rules,
            has_policy=has_policy,
            path=effective_path(facts.search_path, who.user),
            user_functions=user_functions,
            every_rule=tuple(rules.rules),
            subject_columns=subject_columns or {},
            params=params,
        )

    def with_search_path(self, search_path: tuple[str, ...]) -> Context:
        facts = dataclasses.replace(self.facts, search_path=search_path)
        return dataclasses.replace(
            self, facts=facts, path=effective_path(search_path, self.who.user), _rule_cache={}
        )

    # -- tables ------------------------------------------------------------------

    def rule_for(self, qualified: str) -> TableRule | None:
        """First fitting rule naming the relation, else one naming a parent it inherits from."""
        if qualified in self._rule_cache:
            return self._rule_cache[qualified]
        rule = self._first(qualified)
        if rule is None:
            rel = self.catalog.relations.get(qualified)
            for parent in rel.parents if rel else ():
                rule = self._first(parent)
                if rule is not None:
                    break
        self._rule_cache[qualified] = rule
        return rule

    def _first(self, qualified: str) -> TableRule | None:
        for r in self.table_rules:
            if r.names(qualified):
                return r
        return None

    def resolve_table(self, schema: str, name: str) -> tuple[str, Relation | None]:
        if schema:
            q = f"{schema}.{name}"
            return q, self.catalog.relations.get(q)
        for s in self.path:
            rel = self.catalog.get(s, name)
            if rel is not None:
                return rel.qualified, rel
        # Not in the snapshot (system catalogs are not in it; new, temporary or missing
        # tables): pg_* names are the system catalogs where pg_catalog is searched first,
        # otherwise prefer a governed reading.
        if name.startswith("pg_") and self._catalog_first():
            return f"pg_catalog.{name}", None
        for s in self.path:
            if s not in ("pg_temp", "pg_catalog") and self.rule_for(f"{s}.{name}") is not None:
                return f"{s}.{name}", None
        # A pg_* name under a path that searches a user schema first: a relation of
        # that name made there since the snapshot is what the server reads, so it is
        # read as that unknown relation (refused under a policy), never as the catalog's.
        first = next((s for s in self.path if s not in ("pg_temp", *SYSTEM_SCHEMAS)), "public")
        return f"{first}.{name}", None

    def knows_relation(self, qualified: str, relation: Relation | None) -> bool:
        """Does the snapshot (or the built-in list) know what this name reads?

        The session's own temporary tables (`pg_temp.x`) hold only what the session
        wrote through the proxy, so they count as known.
        """
        if relation is not None or qualified in BUILTIN_RELATIONS:
            return True
        return qualified.split(".", 1)[0] == "pg_temp"

    def pin(self, t: exp.Table) -> None:
        """Qualify a table named in a rule snippet, so no CTE or path change can capture it."""
        if t.args.get("db") is None and isinstance(t.this, exp.Identifier):
            q, _ = self.resolve_table("", t.name if t.this.quoted else t.name.lower())
            t.set("db", exp.to_identifier(q.split(".", 1)[0], quoted=True))

    def _catalog_first(self) -> bool:
        rest = [p for p in self.path if p != "pg_temp"]
        return bool(rest) and rest[0] == "pg_catalog"

    def governed_elsewhere(self, qualified: str, name: str) -> bool:
        """Could an unqualified `name` also mean a governed relation other than `qualified`?"""
        schemas = set(self.catalog.schemas_with(name)) | {
            s for s in self.path if s not in ("pg_temp", *SYSTEM_SCHEMAS)
        }
        return any(
            f"{s}.{name}" != qualified and self.rule_for(f"{s}.{name}") is not None for s in schemas
        )

    # -- functions ---------------------------------------------------------------

    def resolve_function(self, schema: str, names: tuple[str, ...]) -> str:
        if schema:
            return f"{schema}.{names[0]}"
        # Fail closed: a same-named function in a user schema on the path may win
        # PostgreSQL's overload resolution, so treat the call as that function.
        for s in self.path:
            if s in ("pg_temp", *SYSTEM_SCHEMAS):
                continue
            for n in names:
                if s in self.user_functions.get(n.lower(), ()):
                    return f"{s}.{n}"
        return f"pg_catalog.{names[0]}"

    def knows_function(self, qualified: str, anonymous: bool) -> bool:
        """Is `qualified` (from resolve_function) a function the catalog or the built-in
        list knows? Calls are read by their written names (callnames.py), so a name in
        a system schema is known only when the built-in list has it."""
        schema, _, name = qualified.partition(".")
        if schema in SYSTEM_SCHEMAS:
            return not anonymous or qualified in BUILTIN_FUNCTIONS
        return schema in self.user_functions.get(name.lower(), ())

    def function_rule(self, qualified: str) -> FunctionRule | None:
        for r in self.function_rules:
            if r.allows(qualified):
                return r
        return None


def effective_path(search_path: tuple[str, ...], user: str) -> tuple[str, ...]:
    """PostgreSQL's effective path: pg_temp and pg_catalog first unless listed explicitly."""
    out = [user if s == "$user" else s for s in search_path if s]
    if "pg_catalog" not in out:
        out.insert(0, "pg_catalog")
    if "pg_temp" not in out:
        out.insert(0, "pg_temp")
    return tuple(out)


def lower_functions(catalog: Catalog) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    for name, schemas in catalog.functions.items():
        out.setdefault(name.lower(), []).extend(schemas)
    return {k: tuple(v) for k, v in out.items()}
