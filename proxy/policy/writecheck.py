"""Writes to row-filtered tables, held to the filter as PostgreSQL's RLS would hold them.

A user a rule lets write to a filtered table must neither touch rows outside the
filter nor put rows there (RLS's USING and WITH CHECK):

- UPDATE and DELETE get the filter ANDed to their WHERE, and their own condition
  is fenced behind it: `WHERE (filter) AND CASE WHEN (filter) THEN (theirs) ELSE
  false END`. CASE fixes the order of evaluation, so a condition that errors on
  some value (`1/(x - 42)`) or calls a volatile function never runs on a row the
  user may not see; the bare filter stays first for the planner's indexes.
- The new row must pass the filter. Checking it on the server would need a
  function or trigger the proxy does not own, so it is checked before the
  statement is sent, where that is exact: UPDATE may not assign a column the
  filter reads (the row it changes passed the filter, so the new one does);
  INSERT ... VALUES must give each column of a filter made of `col = value`
  conjuncts exactly that value, as a literal. Anything else (INSERT ... SELECT,
  bound parameters, DEFAULT, other filter shapes) is refused with the reason:
  an error, never a row silently dropped or let through.
"""

from __future__ import annotations

from sqlglot import exp

from proxy.policy.analyze import Occ, fold
from proxy.policy.context import Context
from proxy.policy.rewrite import Masker, bind, qualify_columns
from proxy.policy.verdict import Verdict
from proxy.rules import TableRule


def check_new_rows(
    v: Verdict, tree: exp.Expr, o: Occ, rule: TableRule, ctx: Context, masker: Masker
) -> None:
    """Block an INSERT or UPDATE whose new rows cannot be shown to pass the row filter.

    Raises MissingAttribute (from bind) like the rest of the rewrite does.
    """
    if not rule.row_filter or not o.write:
        return
    if isinstance(tree, exp.Copy):
        v.block(
            rule.id,
            f"COPY FROM into {o.qualified}: its rows cannot be checked against the row filter",
        )
    elif isinstance(tree, exp.Update) and o.node is tree.this:
        _update(v, tree, o, rule, masker)
    elif isinstance(tree, exp.Insert) and (o.node is tree.this or o.node is tree.this.this):
        _insert(v, tree, o, rule, ctx, masker)


def filter_columns(cond: exp.Expr) -> set[str]:
    return {fold(c.this) for c in cond.find_all(exp.Column)}


def _update(v: Verdict, tree: exp.Update, o: Occ, rule: TableRule, masker: Masker) -> None:
    cond = masker.snippet(rule.row_filter or "")
    assigned = set()
    for eq in tree.expressions:
        target = eq.this if isinstance(eq, exp.EQ) else None
        if not isinstance(target, exp.Column):
            v.block(rule.id, f"UPDATE of {o.qualified}: an assignment the proxy cannot read")
            return
        assigned.add(fold(target.this))
    touched = assigned & filter_columns(cond)
    if touched:
        cols = ", ".join(sorted(touched))
        v.block(
            rule.id,
            f"UPDATE of {o.qualified} assigns {cols}, which its row filter reads; "
            "the new row could leave the permitted rows",
        )


def _insert(
    v: Verdict, tree: exp.Insert, o: Occ, rule: TableRule, ctx: Context, masker: Masker
) -> None:
    cond = masker.snippet(rule.row_filter or "")
    bind(cond, ctx.who)
    wanted = _equalities(cond)
    why = f"INSERT into {o.qualified}: the new rows cannot be checked against its row filter"
    if wanted is None:
        v.block(rule.id, f"{why} (only `column = value` filters can be)")
        return
    schema = tree.this
    if isinstance(schema, exp.Schema):
        columns = [fold(c) for c in schema.expressions]
    else:
        columns = list(o.column_names())
    source = tree.args.get("expression")
    if not isinstance(source, exp.Values) or not columns:
        v.block(rule.id, f"{why} (only INSERT ... VALUES with literal values can be)")
        return
    for col, lit in wanted.items():
        if col not in columns:
            v.block(rule.id, f"{why}: {col} is left to its default")
            return
        i = columns.index(col)
        for row in source.expressions:
            vals = row.expressions if isinstance(row, exp.Tuple) else [row]
            val = vals[i] if i < len(vals) else None
            if not isinstance(val, exp.Literal):
                v.block(rule.id, f"{why}: {col} must be given as a literal")
                return
            if (val.this, val.is_string) != (lit.this, lit.is_string):
                v.block(rule.id, f"new row violates the row filter of {o.qualified}")
                return


def _equalities(cond: exp.Expr) -> dict[str, exp.Literal] | None:
    """`a = 'x' AND b = 2` as {a: 'x', b: 2}; None for any other shape."""
    while isinstance(cond, exp.Paren):
        cond = cond.this
    if isinstance(cond, exp.And):
        left, right = _equalities(cond.this), _equalities(cond.expression)
        if left is None or right is None:
            return None
        return {**left, **right}
    if isinstance(cond, exp.EQ):
        a, b = cond.this, cond.expression
        if isinstance(b, exp.Column) and isinstance(a, exp.Literal):
            a, b = b, a
        if isinstance(a, exp.Column) and isinstance(b, exp.Literal):
            return {fold(a.this): b}
    return None


def fence(tree: exp.Expr, o: Occ, ctx: Context, masker: Masker) -> bool:
    """UPDATE/DELETE of a filtered target: only permitted rows, the user's WHERE fenced."""
    rule = ctx.rule_for(o.qualified)
    if rule is None or not rule.row_filter or not isinstance(tree, exp.Update | exp.Delete):
        return False
    if o.node is not tree.this:
        return False

    def condition() -> exp.Expr:
        cond = masker.snippet(rule.row_filter or "")
        bind(cond, ctx.who)
        for t in cond.find_all(exp.Table):
            ctx.pin(t)
        return exp.Paren(this=qualify_columns(cond, o.alias))

    where = tree.args.get("where")
    if where is None:
        new: exp.Expr = condition()
    else:
        guarded = exp.Case(ifs=[exp.If(this=condition(), true=exp.Paren(this=where.this))])
        guarded.set("default", exp.false())
        new = exp.and_(condition(), guarded)
    tree.set("where", exp.Where(this=new))
    return True
