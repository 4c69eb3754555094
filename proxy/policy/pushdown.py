"""Which of a query's own conditions may also run inside a masking subquery.

The masking subquery ends in `OFFSET 0`, PostgreSQL's optimization fence, so
that the query's conditions never run on rows the row filter hides (an error
or a leaky function could tell what they hold). The price is that an index on
the query's own condition cannot be used: `WHERE aid = 5` on a governed table
reads every row. This module picks the conditions that are safe to evaluate on
hidden rows anyway, so the engine copies them below the fence (rewrite.py),
ANDed with the row filter; the query keeps them too, so answers do not change.

A condition is copied only when all of this holds:

- it is a top-level AND conjunct of the WHERE of the SELECT, UPDATE or DELETE
  whose FROM / JOIN / USING list names this table occurrence directly (never
  an ON clause; never a condition of an enclosing or nested query);
- it is `col OP constant` or `constant OP col` (OP one of = <> < <= > >=),
  `col IN (constant, ...)` or `col BETWEEN constant AND constant`, where col is
  a column of this occurrence that the rule neither masks nor denies;
- PostgreSQL resolves the comparison to one of its own operators marked
  leakproof (pg_proc.proleakproof): the column's type is a built-in one
  (integers, float4/float8, text/varchar, char, date, timestamp, timestamptz,
  boolean, uuid, from the catalog snapshot) and the constant is an untyped
  string literal (resolved to the column's own type), an integer literal that
  of at most 18 digits on an integer column (int2/int4/int8 cross-type operators are all
  leakproof), TRUE/FALSE on a boolean, or such a literal cast to a type of the
  column's family. numeric's operators are not leakproof, so decimal or larger
  numbers are never copied (nor is any comparison on a numeric column);
- pg_catalog comes first on the search path (only pg_temp before it, which is
  never searched for operators), so no user-defined operator can be picked in
  its place. pg_temp *is* searched first for type names: a cast the rewrite
  prints as `TEXT`, `DATE`, `TIMESTAMPTZ`, `UUID` or `BPCHAR` (not SQL
  keywords) could name a temporary type of the session's own; the copy is
  then the very condition the query holds, and a temporary type has no
  operator of pg_catalog's (see pushparams.py for PREPARE's type names).

Constants are evaluated once, not per row, so a constant that fails to convert
(`'x'::date`) raises whether or not hidden rows exist.

Bound parameters ($n) stand where a constant may when their type, from the
Parse message or PREPARE's list, makes the comparison such an operator and
copying them changes no parameter's inferred type (pushparams.py).

Outer joins: a conjunct of the WHERE is safe even when this occurrence is on
the nullable side. Every copied comparison is strict (NULL in, NULL out), so
the query's own WHERE already rejects every row in which this occurrence is
NULL-extended or fails the comparison; copying it only turns some matched
rows that the WHERE would reject into NULL-extended rows that it rejects
too. `IS NULL` is not strict and is never copied.
"""

from __future__ import annotations

from sqlglot import exp

from proxy.policy.analyze import Occ, fold
from proxy.policy.context import Context
from proxy.policy.pushparams import Params, params_of
from proxy.rules import TableRule

_COMPARISONS = (exp.EQ, exp.NEQ, exp.LT, exp.LTE, exp.GT, exp.GTE)
# The column types (pg_type.typname in pg_catalog) whose comparison operators are
# leakproof, by family: within a family PostgreSQL has a leakproof operator for
# every pair of types (int2/int4/int8 cross-type, float48/float84, varchar
# compared as text); across families it would cast, so nothing is copied.
_FAMILY = {
    "int2": "int",
    "int4": "int",
    "int8": "int",
    "float4": "float",
    "float8": "float",
    "text": "text",
    "varchar": "text",
    "bpchar": "bpchar",
    "date": "date",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
    "bool": "bool",
    "uuid": "uuid",
}
_T = exp.DataType.Type
_CAST_FAMILY = {
    _T.SMALLINT: "int",
    _T.INT: "int",
    _T.BIGINT: "int",
    _T.FLOAT: "float",
    _T.DOUBLE: "float",
    _T.TEXT: "text",
    _T.VARCHAR: "text",
    _T.CHAR: "bpchar",
    _T.BPCHAR: "bpchar",
    _T.DATE: "date",
    _T.TIMESTAMP: "timestamp",
    _T.TIMESTAMPTZ: "timestamptz",
    _T.BOOLEAN: "bool",
    _T.UUID: "uuid",
}


def plan(occs: list[Occ], ctx: Context) -> dict[int, tuple[exp.Expr, ...]]:
    """id(occurrence) -> the conditions to copy into its masking subquery.

    Run before any occurrence is replaced by its subquery: it reads the FROM
    lists as the user wrote them.
    """
    if not _catalog_first(ctx.path):
        return {}
    by_scope: dict[int, list[Occ]] = {}
    for o in occs:
        by_scope.setdefault(id(o.scope), []).append(o)
    params = params_of(occs, ctx.params)
    out: dict[int, tuple[exp.Expr, ...]] = {}
    for o in occs:
        rule = ctx.rule_for(o.qualified)
        if o.write or rule is None or not rule.row_filter:
            continue
        found = conjuncts(o, rule, by_scope.get(id(o.scope), []), params)
        if found:
            out[id(o)] = found
    return out


def _catalog_first(path: tuple[str, ...]) -> bool:
    for s in path:
        if s == "pg_catalog":
            return True
        if s != "pg_temp":
            return False
    return False


def conjuncts(
    o: Occ, rule: TableRule, siblings: list[Occ], params: Params | None = None
) -> tuple[exp.Expr, ...]:
    """The copies (naming the table's real columns, unqualified) of o's safe conditions."""
    scope = o.scope
    if not isinstance(scope, exp.Select | exp.Update | exp.Delete) or o.relation is None:
        return ()
    items = _from_items(scope)
    if not any(t is o.node for t in items):
        return ()
    where = scope.args.get("where")
    if not isinstance(where, exp.Where):
        return ()
    # Unqualified names may be copied only when every FROM item is a table whose
    # columns are known and no other one has that name (no USING / NATURAL merges).
    plain = all(isinstance(t, exp.Table) for t in items) and len(siblings) == len(items)
    plain = plain and not any(_merges(j) for j in scope.args.get("joins") or [])
    plain = plain and all(s.relation is not None and s.relation.columns for s in siblings)
    resolve = _Resolver(o, rule, siblings if plain else None, params)
    out: list[exp.Expr] = []
    for c in _flatten(where.this):
        copied = _copy(c, resolve)
        if copied is not None:
            out.append(copied)
    return tuple(out)


def _from_items(scope: exp.Expr) -> list[exp.Expr]:
    items: list[exp.Expr] = []
    if isinstance(scope, exp.Update | exp.Delete) and isinstance(scope.this, exp.Expr):
        items.append(scope.this)
    frm = scope.args.get("from_")
    if isinstance(frm, exp.From):
        items.append(frm.this)
    for j in scope.args.get("joins") or []:
        items.append(j.this)
    items.extend(scope.args.get("using") or [])
    return items


def _merges(join: exp.Join) -> bool:
    return bool(join.args.get("using")) or str(join.args.get("method") or "").upper() == "NATURAL"


def _flatten(cond: exp.Expr) -> list[exp.Expr]:
    while isinstance(cond, exp.Paren):
        cond = cond.this
    if isinstance(cond, exp.And):
        return _flatten(cond.this) + _flatten(cond.expression)
    return [cond]


class _Resolver:
    """A Column node -> the family of o's real column it names, if it names one we may copy."""

    def __init__(
        self, o: Occ, rule: TableRule, siblings: list[Occ] | None, params: Params | None
    ) -> None:
        self.o, self.rule, self.siblings, self.params = o, rule, siblings, params

    def __call__(self, col: exp.Expr) -> tuple[str, str, str] | None:
        """(real column name, its family, its type name), if it may be copied."""
        if not isinstance(col, exp.Column) or not isinstance(col.this, exp.Identifier):
            return None
        o = self.o
        name = fold(col.this)
        if col.args.get("catalog") is not None:
            return None
        table = fold(col.args.get("table"))
        if table:
            db = fold(col.args.get("db"))
            if table != o.alias or (db and db != o.qualified.split(".", 1)[0]):
                return None
            if self.siblings is not None and sum(s.alias == table for s in self.siblings) > 1:
                return None
        elif self.siblings is None or any(s is not o and _visible(s, name) for s in self.siblings):
            return None
        if not _visible(o, name):
            return None
        real = o.colmap.get(name, name) if o.colmap else name
        if real in self.rule.columns:  # masked or denied: its raw value stays hidden
            return None
        assert o.relation is not None
        rel = o.relation
        i = rel.columns.index(real)
        typ = rel.types[i] if i < len(rel.types) else ""
        family = _FAMILY.get(typ)
        return (real, family, typ) if family else None


def _visible(o: Occ, name: str) -> bool:
    if o.relation is None or not o.relation.columns:
        return False
    return name in o.colmap if o.colmap else name in o.relation.columns


def _copy(cond: exp.Expr, resolve: _Resolver) -> exp.Expr | None:
    cond = cond.unnest() if isinstance(cond, exp.Paren) else cond
    if isinstance(cond, _COMPARISONS):
        left, right = cond.this, cond.expression
        for col, const in ((left, right), (right, left)):
            hit = resolve(col)
            if hit is not None and _value(const, hit[1], resolve.params):
                new = cond.copy()
                target = new.this if col is left else new.expression
                target.replace(_column(hit[0]))
                return new
        return None
    if isinstance(cond, exp.In):
        hit = resolve(cond.this)
        items = cond.expressions
        if (
            hit is None
            or cond.args.get("query")
            or cond.args.get("unnest")
            or cond.args.get("field")
        ):
            return None
        if not items or not _in_list(items, hit, resolve.params):
            return None
        # As ORed equalities: each resolves on its own to the column type's operator,
        # where an IN list would first cast every item and the column to a common type.
        eqs = [exp.EQ(this=_column(hit[0]), expression=x.copy()) for x in items]
        return exp.Paren(this=exp.or_(*eqs)) if len(eqs) > 1 else eqs[0]
    if isinstance(cond, exp.Between) and not cond.args.get("symmetric"):
        hit = resolve(cond.this)
        low, high = cond.args.get("low"), cond.args.get("high")
        p = resolve.params
        if hit is None or not (_value(low, hit[1], p) and _value(high, hit[1], p)):
            return None
        assert low is not None and high is not None
        ge = exp.GTE(this=_column(hit[0]), expression=low.copy())
        le = exp.LTE(this=_column(hit[0]), expression=high.copy())
        return exp.Paren(this=exp.and_(ge, le))
    return None


def _column(name: str) -> exp.Column:
    return exp.Column(this=exp.to_identifier(name, quoted=True))


def _value(node: exp.Expr | None, family: str, params: Params | None) -> bool:
    """A constant or parameter compared with a `family` column by a leakproof operator."""
    return _constant(node, family) or _parameter(node, family, params)


def _in_list(items: list[exp.Expr], hit: tuple[str, str, str], params: Params | None) -> bool:
    family = hit[1]
    untyped = [params is not None and params.untyped(x) for x in items]
    if not any(untyped):
        return all(_value(x, family, params) for x in items)
    # PostgreSQL types unspecified parameters in an IN list by the list's common type.
    if not all(untyped) or hit[2] == "varchar":
        return False
    return all(_parameter(x, family, params) for x in items)


def _parameter(node: exp.Expr | None, family: str, params: Params | None) -> bool:
    """`$n`, or `$n::T` with T of the column's family, that may be copied (pushparams.py)."""
    if params is None or node is None:
        return False
    cast = type(node) is exp.Cast
    if cast:
        to = node.args.get("to")
        if not isinstance(to, exp.DataType) or to.expressions:
            return False
        if _CAST_FAMILY.get(to.this) != family:
            return False
        node = node.this
    return params.allows(node, family, cast=cast)


def _constant(node: exp.Expr | None, family: str) -> bool:
    """A constant PostgreSQL compares with a `family` column by a leakproof operator."""
    if isinstance(node, exp.Cast) and type(node) is exp.Cast:
        to = node.args.get("to")
        inner = node.this
        sized = family in ("text", "bpchar")  # varchar(n), char(n); not timestamp(p)
        if not isinstance(to, exp.DataType) or (to.expressions and not sized):
            return False
        if _CAST_FAMILY.get(to.this) != family:
            return False
        return _string(inner) or _integer(inner)
    if _string(node):
        return True  # an untyped literal takes the column's own type
    if family == "int":
        return _integer(node)
    if family == "bool":
        return isinstance(node, exp.Boolean)
    return False


def _string(node: exp.Expr | None) -> bool:
    return type(node) is exp.Literal and bool(node.args.get("is_string"))


def _integer(node: exp.Expr | None) -> bool:
    """An integer literal PostgreSQL types int4 or int8 (a larger one is numeric)."""
    if isinstance(node, exp.Neg):
        node = node.this
    if type(node) is not exp.Literal or node.args.get("is_string"):
        return False
    # At most 18 digits: always an int4 or int8, and the shape cache's class for such
    # numbers (shape.py), so a cached template never carries a copied numeric.
    text = str(node.this)
    return text.isdigit() and text.isascii() and len(text) <= 18
