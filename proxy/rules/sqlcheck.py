"""Static checks of the SQL snippets DBAs write in rule files (row filters, `{sql:}` masks).

Kept apart from the models so they load without sqlglot, and shared by
`oversight check` and the loader: a filter that does not parse is a rule-file
problem, not a surprise at the first query.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

_STATEMENTS = (exp.Query, exp.DML, exp.DDL, exp.Command, exp.Set, exp.Transaction)


def parse_snippet(text: str) -> exp.Expr:
    """Parse a filter or mask expression; raise ValueError with a readable message."""
    try:
        tree = sqlglot.parse_one(text, read="postgres")
    except (ParseError, TokenError) as e:
        raise ValueError(f"does not parse as SQL: {str(e).splitlines()[0]}") from e
    if tree is None:
        raise ValueError("empty expression")
    if isinstance(tree, _STATEMENTS) and not isinstance(tree, exp.Subquery):
        raise ValueError("must be an expression, not a statement")
    return tree


def sql_problems(text: str, condition: bool) -> list[str]:
    """Every problem with one snippet (empty list when it is fine)."""
    try:
        tree = parse_snippet(text)
    except ValueError as e:
        return [str(e)]
    out = []
    if any(isinstance(n, exp.Parameter) for n in tree.walk()):
        out.append("positional parameters ($1) are not allowed; use :name")
    for ph in tree.find_all(exp.Placeholder):
        if not ph.name:
            out.append("anonymous placeholder; use :name")
    if condition and isinstance(tree, exp.Alias):
        out.append("a row filter is a condition, not an aliased expression")
    return out
