"""Function calls by the name the user wrote, whatever node sqlglot made of them.

sqlglot turns several hundred names from other SQL dialects into typed nodes
(`hex(x)` becomes `Hex`, `ifnull(a, b)` becomes `Coalesce`, `month(d)` becomes
`Month`), and a node's own name is then sqlglot's, not the user's. PostgreSQL
looks every call up by the name as written, so a function created under one of
those names would run as if it were the built-in sqlglot had in mind. `mark`
reads the written name back from the tokens after each parse and stores it on
the node (meta KEY), or on the parsed root (meta EXTRA) where sqlglot left no
node positioned at the name; analyze.py turns exactly those into calls, and
checks.py decides each by its written name and qualification.

A token followed by `(` is a call by name when:
- a function node sqlglot built from `name(` carries the token's position
  (the parser records it for every known or anonymous call);
- it names a FROM item (`FROM name(...)`, `LATERAL name(...)`, `ROWS FROM`):
  PostgreSQL has no table followed by `(` there, but sqlglot reads some
  keyword-like names (`anti`, `comment`, `set`...) as tables;
- no identifier is positioned at it and it is quoted, or a word sqlglot parses
  into nodes other than a positioned call (NAME_LOSING: its special parsers, `unnest`, `regexp`...).
  tests/unit/policy/test_callnames.py parses every word sqlglot knows in each
  call position and fails when a word is missing here.
Unquoted, unqualified words PostgreSQL never looks up (builtins.NOT_FUNCTION_NAMES:
CAST, COALESCE, EXTRACT, TRIM...) are syntax, not calls, and are not marked.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.tokenizer_core import Token, TokenType

from proxy.policy.builtins import NOT_FUNCTION_NAMES

KEY = "oversight_call"  # node meta: Written
EXTRA = "oversight_calls"  # root meta: tuple[Written, ...]

Written = tuple[str, str]  # (schema as written or "", name), both folded

_PARSERS = frozenset(
    k.lower()
    for k in (*Postgres.Parser.FUNCTION_PARSERS, *Postgres.Parser.NO_PAREN_FUNCTION_PARSERS)
)
# Words whose `word(...)` sqlglot parses without a node positioned at the word,
# besides those with a special parser of their own (derived and checked by the test).
NAME_LOSING = _PARSERS | frozenset(
    {
        "glob",
        "like",
        "mod",
        "qualify",
        "regexp",
        "rlike",
        "scope_resolution",
        "tablesample",
        "unnest",
    }
)
_FROM_PARENTS = (exp.From, exp.Join, exp.Lateral, exp.Table)


def fold_token(t: Token) -> str:
    """An identifier token as PostgreSQL folds it (63 bytes at most)."""
    name = t.text if t.token_type == TokenType.IDENTIFIER else t.text.lower()
    if len(name.encode()) > 63:
        name = name.encode()[:63].decode("utf-8", "ignore")
    return name


def _qualifier(tokens: Sequence[Token], i: int) -> str:
    """The schema of `schema.name(` ending at token i, or ""."""
    if i >= 2 and tokens[i - 1].token_type == TokenType.DOT:
        return fold_token(tokens[i - 2])
    return ""


def _from_item(node: exp.Expr) -> bool:
    """An identifier sqlglot read as a FROM item's relation name (or LATERAL's)."""
    if not isinstance(node, exp.Identifier):
        return False
    parent = node.parent
    if isinstance(parent, exp.Dot) and parent.expression is node:
        node, parent = parent, parent.parent  # LATERAL schema.name(...)
    if isinstance(parent, exp.Lateral):
        return parent.this is node
    return (
        isinstance(parent, exp.Table)
        and parent.this is node
        and isinstance(parent.parent, _FROM_PARENTS)
    )


def is_syntax(schema: str, token: Token) -> bool:
    """`CAST(`, `COALESCE(`...: unquoted, unqualified words PostgreSQL never looks up."""
    return (
        not schema
        and token.token_type != TokenType.IDENTIFIER
        and token.text.lower() in NOT_FUNCTION_NAMES
    )


def mark(tree: exp.Expr, tokens: Sequence[Token]) -> None:
    """Record on `tree` every call by name in `tokens`, the tokens it was parsed from."""
    calls: dict[int, int] = {}  # token index -> its `(` follows
    for i in range(len(tokens) - 1):
        if tokens[i + 1].token_type == TokenType.L_PAREN:
            calls[tokens[i].start] = i
    if not calls:
        return
    at: dict[int, list[exp.Expr]] = {}
    for node in tree.walk():  # the one pass over the tree: read _meta in place
        meta = node._meta
        if meta is not None:
            start = meta.get("start")
            if start in calls:
                at.setdefault(start, []).append(node)
    extra: list[Written] = []
    for start, i in calls.items():
        t = tokens[i]
        schema = _qualifier(tokens, i)
        if is_syntax(schema, t):
            continue
        written = (schema, fold_token(t))
        nodes = at.get(start, [])
        funcs = [n for n in nodes if isinstance(n, exp.Func)]
        if funcs:
            funcs[-1].meta[KEY] = written  # the innermost: `f(x)::int` puts f's place on the cast
        elif any(_from_item(n) for n in nodes):
            extra.append(written)
        elif any(isinstance(n, exp.Identifier) for n in nodes):
            continue  # a name of something else: `INSERT INTO t (a)`, `AS x(a, b)`
        elif t.token_type == TokenType.IDENTIFIER or t.text.lower() in NAME_LOSING:
            extra.append(written)  # sqlglot kept no node at the name (`"trim"(x)`, `floor(x)`)
    if extra:
        tree.meta[EXTRA] = tuple(extra)


def written(node: exp.Expr) -> Written | None:
    """The call by name recorded on `node` by `mark`, if any."""
    found: Written | None = node.meta_get(KEY)
    return found


def extra_calls(node: exp.Expr) -> tuple[Written, ...]:
    """Calls by name recorded on a parsed root that no node of the tree stands for."""
    found: tuple[Written, ...] = node.meta_get(EXTRA, ())
    return found
