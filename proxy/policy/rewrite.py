"""Build the masking subquery that stands in for every read of a governed table.

`FROM people p` becomes `FROM (SELECT id, name, region, '****' AS ssn, ... FROM
public.people WHERE region = 'north' OFFSET 0) AS p`: the same columns in the same order,
masked, only the permitted rows, under the alias the query used. Joins,
aggregates, WHERE clauses on masked columns and whole-row references all see
the subquery, "as if the table itself held only the permitted rows".

Rule snippets are parsed once and cached; `:name` placeholders are replaced by
sqlglot string literals (never by pasting text), and unqualified table names
inside a snippet are pinned to the schema they resolve to, so a user's CTE or
search_path cannot capture them.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlglot import exp
from sqlglot.dialects.postgres import Postgres

from proxy.catalog import Relation
from proxy.rules import Principal, SqlMask, TableRule
from proxy.rules.sqlcheck import parse_snippet

_PG = Postgres()


class MissingAttribute(Exception):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class UnknownColumns(Exception):
    """A rule masks columns of a relation whose column list the catalog does not have."""


def _ident(name: str) -> exp.Identifier:
    return exp.to_identifier(name, quoted=True)


def _col(name: str) -> exp.Column:
    return exp.Column(this=_ident(name))


def _text(col: str) -> exp.Expr:
    return exp.Cast(this=_col(col), to=exp.DataType.build("text"))


class Masker:
    """Masks and subqueries for one rule set; caches parsed snippets by text."""

    def __init__(self, hash_salt: str | None = None) -> None:
        self.hash_salt = hash_salt
        self._snippets: dict[str, exp.Expr] = {}
        self._texts: dict[tuple[object, ...], str] = {}

    def subquery_text(
        self,
        rule: TableRule,
        qualified: str,
        relation: Relation | None,
        who: Principal,
        pin: Callable[[exp.Table], None],
        path: tuple[str, ...],
        source: exp.Table,
        pushed: tuple[exp.Expr, ...] = (),
    ) -> str:
        """The subquery's SQL, cached: it depends only on the key below, and building
        and generating it is most of an uncached decision's cost. `pushed`: the
        query's own conditions that are safe below the fence (pushdown.py)."""
        sample = source.args.get("sample")
        conds = tuple(_PG.generate(c) for c in pushed)
        key = (
            rule.id,
            qualified,
            relation.columns if relation is not None else None,
            who.user,
            tuple(sorted(who.attributes.items())),
            path,
            bool(source.args.get("only")),
            _PG.generate(sample) if sample is not None else None,
            conds,
        )
        text = self._texts.get(key)
        if text is None:
            select = self.subquery(rule, qualified, relation, who, pin, source, pushed)
            text = _PG.generate(select, copy=False)
            if len(self._texts) > 10_000:
                self._texts.clear()
            self._texts[key] = text
        return text

    def snippet(self, text: str) -> exp.Expr:
        tree = self._snippets.get(text)
        if tree is None:
            tree = self._snippets[text] = parse_snippet(text)
        return tree.copy()

    def mask(self, policy: str | SqlMask, col: str) -> exp.Expr:
        if isinstance(policy, SqlMask):
            return self.snippet(policy.sql)
        if policy in ("null", "deny"):
            # deny: the statement is blocked before this runs; NULL is the backstop.
            # A NULL of the column's own type (a bare NULL would be text), so sum(),
            # comparisons and UNIONs work as on a table holding NULLs; PostgreSQL
            # folds it to a constant without reading the column.
            return exp.Case(ifs=[exp.If(this=exp.false(), true=_col(col))])
        if policy == "redact":
            return exp.Literal.string("****")
        if policy == "partial":
            right = exp.Anonymous(this="right", expressions=[_text(col), exp.Literal.number(4)])
            return exp.DPipe(this=exp.Literal.string("***"), expression=right, safe=True)
        if policy == "hash":
            value: exp.Expr = _text(col)
            if self.hash_salt:
                value = exp.DPipe(this=exp.Literal.string(self.hash_salt), expression=value)
            conv = exp.Anonymous(this="convert_to", expressions=[value, exp.Literal.string("UTF8")])
            sha = exp.Anonymous(this="sha256", expressions=[conv])
            return exp.Anonymous(this="encode", expressions=[sha, exp.Literal.string("hex")])
        raise ValueError(f"unknown column policy {policy!r}")

    def subquery(
        self,
        rule: TableRule,
        qualified: str,
        relation: Relation | None,
        who: Principal,
        pin: Callable[[exp.Table], None],
        source: exp.Table | None = None,
        pushed: tuple[exp.Expr, ...] = (),
    ) -> exp.Select:
        """SELECT <masked columns> FROM schema.table WHERE <bound row filter>."""
        schema, _, name = qualified.partition(".")
        table = exp.Table(this=_ident(name), db=_ident(schema))
        if source is not None:
            for arg in ("only", "sample"):  # FROM ONLY t / TABLESAMPLE stay on the table
                if source.args.get(arg) is not None:
                    table.set(arg, source.args[arg])
        masked = {c: p for c, p in rule.columns.items()}
        columns = relation.columns if relation is not None else ()
        if masked and not columns:
            raise UnknownColumns(qualified)
        if columns:
            projection: list[exp.Expr] = []
            for c in columns:
                pol = masked.get(c)
                if pol is None:
                    projection.append(_col(c))
                else:
                    projection.append(exp.alias_(self.mask(pol, c), _ident(c)))
        else:
            projection = [exp.Star()]
        select = exp.Select(expressions=projection).from_(table)
        if rule.row_filter:
            # With the query's own conditions proven safe to run on hidden rows
            # (pushdown.py), so an index on them can be used.
            cond = exp.and_(exp.Paren(this=self.snippet(rule.row_filter)), *pushed, copy=True)
            select = select.where(cond)
            # OFFSET 0 is PostgreSQL's optimization fence: the query's own WHERE and JOIN
            # conditions are not pushed below the row filter, so they never run on (and
            # cannot leak through errors from) rows the user may not see. The planner still
            # uses indexes for the row filter itself.
            select.set("offset", exp.Offset(expression=exp.Literal.number(0)))
        bind(select, who)
        for t in select.find_all(exp.Table):
            if t is not table:
                pin(t)
        return select


def bind(tree: exp.Expr, who: Principal) -> None:
    """Replace every `:name` by the principal's attribute as a string literal."""
    for ph in list(tree.find_all(exp.Placeholder)):
        name = ph.name
        if name == "user":
            value = who.user
        elif name in who.attributes:
            value = who.attributes[name]
        else:
            raise MissingAttribute(name)
        ph.replace(exp.Literal.string(value))


def as_from_item(select: exp.Expr, source: exp.Table) -> exp.Subquery:
    """Wrap `select` as a FROM item carrying the reference's alias (and column aliases)."""
    alias = source.args.get("alias")
    if alias is None or alias.this is None:
        cols = alias.columns if alias is not None else []
        alias = exp.TableAlias(this=_ident_from(source.this), columns=cols)
    else:
        alias = alias.copy()
    sub = exp.Subquery(this=select, alias=alias)
    carry_joins(source, sub)
    return sub


def carry_joins(source: exp.Table, into: exp.Subquery) -> None:
    """`FROM (people p JOIN x ...)`: sqlglot hangs the joins on the table node itself."""
    for arg in ("joins", "laterals", "pivots"):
        if source.args.get(arg):
            into.set(arg, source.args[arg])


def _ident_from(node: exp.Expr) -> exp.Identifier:
    if isinstance(node, exp.Identifier):
        return node.copy()
    return _ident(node.name)


def qualify_columns(expr: exp.Expr, alias: str) -> exp.Expr:
    """Qualify bare columns of a row filter with the write target's alias (not in subqueries)."""
    for col in list(expr.find_all(exp.Column)):
        if not col.table and col.find_ancestor(exp.Select) is None:
            col.set("table", _ident(alias))
    return expr
