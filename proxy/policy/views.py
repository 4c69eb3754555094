"""View expansion: a read of a view over governed tables becomes a read of its definition.

PostgreSQL reads a view's base tables behind the view; the proxy cannot mask
what it does not see. So, before a statement is analyzed, every read of a
plain view (relkind 'v') that reads a governed table, directly or through
other views, and that no rule names itself, is replaced by its definition
as a subquery under the same alias and column names:

    FROM people_view v   ->   FROM (SELECT people.id, ... FROM public.people ...) AS v(id, ...)

The statement logic then finds the base tables inside and masks them like
any other read, so the view answers exactly what it would if the tables held
only the permitted rows with masked values. Definitions come from the
catalog (pg_get_viewdef under an empty search_path, so every name outside
pg_catalog is schema-qualified); unqualified table names left in them are
pg_catalog's and are pinned there, so no session search_path or CTE of the
user's can capture them. Views inside definitions are expanded in turn, up
to MAX_DEPTH levels, and a view met inside its own expansion is a cycle.

The proxy's idea of the session's search_path can lag the server's (say,
after a rolled-back SET): a name the path does not resolve is still looked up
in the catalog under the resolver's guess, and an unqualified name decided to
mean some other relation while a same-named view or matview over governed
tables exists is pinned to the schema decided on, so the server cannot read
that view unexpanded.

What expansion means, by view option:
- security_barrier: the definition is wrapped with OFFSET 0, PostgreSQL's
  optimization fence, so the user's conditions still run after the view's.
- security_invoker: PostgreSQL itself would read the base tables as the
  user; expansion does the same. Without it the base tables are read with
  the user's privileges, not the view owner's: a user who reads a view over
  governed tables needs SELECT on those tables (and their row security
  policies apply to the user).
- WITH CHECK OPTION and writes: only reads are expanded. Writing through a
  view over governed tables is refused (checks.writes), whatever its options.

Not expanded, and so refused for a user with a policy unless a rule names the
view: materialized views (their rows are stored, not derived), and views the
engine cannot expand (no definition, a definition that does not parse as a
query, too deep, a cycle, TABLESAMPLE on a view). A rule naming the view wins:
the view is then a governed relation with that rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import ParseError, TokenError

from proxy.catalog import Relation
from proxy.policy.analyze import Nodes, collect, fold
from proxy.policy.callnames import mark
from proxy.policy.checks import restrictive
from proxy.policy.context import Context
from proxy.policy.rewrite import carry_joins

MAX_DEPTH = 16
_PG = Postgres()


@dataclass(frozen=True, slots=True)
class Refusal:
    view: str
    rule: str  # the rule of a governed table the view reads
    why: str


@dataclass(slots=True)
class Expansion:
    expanded: list[str] = field(default_factory=list)  # views expanded, in order met
    refused: list[Refusal] = field(default_factory=list)
    pinned: bool = False  # an unqualified name was pinned to the schema decided on

    @property
    def changed(self) -> bool:
        return bool(self.expanded) or self.pinned


class _Unexpandable(Exception):
    pass


def governing_rule(rel: Relation, ctx: Context) -> str | None:
    """The id of a restrictive rule on a table the view or matview reads, if any."""
    for dep in rel.depends_on:
        r = ctx.rule_for(dep)
        if r is not None and restrictive(r):
            return r.id
    return None


def _expandable(q: str, rel: Relation | None, ctx: Context) -> str | None:
    """The governing rule id when `q` is a plain view to expand for this identity."""
    if rel is None or rel.kind != "view" or ctx.rule_for(q) is not None:
        return None
    return governing_rule(rel, ctx)


def _stored(q: str, rel: Relation | None, ctx: Context) -> str | None:
    """The governing rule id when `q` is a materialized view over governed tables."""
    if rel is None or rel.kind != "matview" or ctx.rule_for(q) is not None:
        return None
    return governing_rule(rel, ctx)


def _expandable_elsewhere(q: str, name: str, ctx: Context) -> bool:
    """Is there a view or matview over governed tables named `name` other than `q`?"""
    for schema in ctx.catalog.schemas_with(name):
        other = f"{schema}.{name}"
        rel = ctx.catalog.relations.get(other)
        if other == q or rel is None or rel.kind not in ("view", "matview"):
            continue
        if ctx.rule_for(other) is None and governing_rule(rel, ctx) is not None:
            return True
    return False


def expand(tree: exp.Expr, ctx: Context) -> Expansion:
    """Replace, in place, every read of a view over governed tables by its definition."""
    out = Expansion()
    names = ctx.catalog.view_names
    if not names or not any(fold(t.this) in names for t in tree.find_all(exp.Table)):
        return out  # the common case: the statement names no view at all
    chains: dict[int, tuple[str, ...]] = {}  # id(inserted subquery) -> views it lies in
    skipped: set[int] = set()
    for _ in range(MAX_DEPTH + 1):
        todo = []
        for o in collect(tree).occs:
            if o.write or id(o.node) in skipped:
                continue
            q, rel = ctx.resolve_table(o.schema, o.name)
            # A name not found on the path resolves to a guess: the catalog may still know it.
            rel = rel or ctx.catalog.relations.get(q)
            rule = _expandable(q, rel, ctx)
            if rel is not None and rule is not None:
                todo.append((o.node, q, rel, rule))
                continue
            skipped.add(id(o.node))
            stored = _stored(q, rel, ctx)
            if stored is not None:
                out.refused.append(Refusal(q, stored, "a materialized view stores its rows"))
                continue
            if not o.schema and _expandable_elsewhere(q, o.name, ctx):
                # The server might find that view where the proxy's idea of the
                # search_path did not: pin the name to what was decided on.
                o.node.set("db", _ident(q.split(".", 1)[0]))
                out.pinned = True
        if not todo:
            return out
        for node, q, rel, rule in todo:
            chain = _chain(node, chains)
            why = ""
            if q in chain:
                why = "it reads itself (a cycle of views)"
            elif len(chain) >= MAX_DEPTH:
                why = f"views nested more than {MAX_DEPTH} deep"
            if not why:
                try:
                    sub = _from_item(rel, node)
                except _Unexpandable as e:
                    why = str(e)
            if why:
                skipped.add(id(node))
                out.refused.append(Refusal(q, rule, why))
                continue
            node.replace(sub)
            chains[id(sub)] = (*chain, q)
            out.expanded.append(q)
            if node.args.get("db") is not None:
                _unqualify(tree, sub)
    return out


def _unqualify(tree: exp.Expr, sub: exp.Subquery) -> None:
    """`public.v.x` must become `v.x` once v is a subquery alias."""
    alias = sub.alias
    for col in tree.find_all(exp.Column):
        if col.args.get("db") is not None and col.table == alias:
            col.set("db", None)
            col.set("catalog", None)


def _chain(node: exp.Expr, chains: dict[int, tuple[str, ...]]) -> tuple[str, ...]:
    """The views an occurrence already lies inside (nearest inserted subquery's chain)."""
    parent = node.parent
    while parent is not None:
        found = chains.get(id(parent))
        if found is not None:
            return found
        parent = parent.parent
    return ()


def _from_item(rel: Relation, source: exp.Table) -> exp.Subquery:
    if source.args.get("sample") is not None:
        raise _Unexpandable("TABLESAMPLE applies to tables, not views")
    body = _definition(rel.definition).copy()
    if _option(rel, "security_barrier"):
        inner = exp.Subquery(this=body, alias=exp.TableAlias(this=_ident("oversight_view")))
        body = exp.Select(expressions=[exp.Star()]).from_(inner)
        body.set("offset", exp.Offset(expression=exp.Literal.number(0)))
    alias = source.args.get("alias")
    name = alias.this if alias is not None and alias.this is not None else source.this
    given = list(alias.columns) if alias is not None else []
    # The view's own column names, renamed by the reference's column aliases if any.
    cols = [c.copy() for c in given] + [_ident(c) for c in rel.columns[len(given) :]]
    sub = exp.Subquery(this=body, alias=exp.TableAlias(this=name.copy(), columns=cols))
    carry_joins(source, sub)
    return sub


@lru_cache(maxsize=1024)
def _definition(text: str) -> exp.Query:
    """Parse a view definition once; callers copy the tree before changing it."""
    sql = text.strip().rstrip(";").strip()
    if not sql:
        raise _Unexpandable("the catalog holds no definition for it")
    try:
        tokens = _PG.tokenize(sql)
        trees = _PG.parser().parse(tokens, sql)
    except (ParseError, TokenError) as e:
        raise _Unexpandable("its definition does not parse") from e
    if len(trees) != 1 or not isinstance(trees[0], exp.Query):
        raise _Unexpandable("its definition is not a single query")
    tree = trees[0]
    mark(tree, tokens)  # its calls are policed by their names as written, like the user's
    for t, _, is_cte in Nodes.of(tree).tables:
        if not is_cte and t.args.get("db") is None and isinstance(t.this, exp.Identifier):
            # pg_get_viewdef under an empty search_path leaves only pg_catalog names bare.
            t.set("db", _ident("pg_catalog"))
    return tree


def _option(rel: Relation, name: str) -> bool:
    """A boolean reloption as PostgreSQL stores it (`security_barrier=true`, `=on`...)."""
    for opt in rel.options:
        key, _, value = opt.partition("=")
        if key.strip().lower() == name:
            return value.strip().lower() in ("", "true", "on", "yes", "1", "t", "y")
    return False


def _ident(name: str) -> exp.Identifier:
    return exp.to_identifier(name, quoted=True)
