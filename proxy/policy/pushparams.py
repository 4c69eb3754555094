"""Bound parameters ($n) in the conditions pushdown.py copies below a row filter.

A parameter is a value fixed for the whole execution, as a literal is, so a
copied `col OP $n` evaluates nothing on hidden rows but the operator; what
must be known is which operator PostgreSQL picks, and that depends on $n's
type. It comes from the Parse message (`Context.params`: OIDs, 0 for
unspecified) or from PREPARE's list (`prepared_types`: built-in type keywords
only; any other name is looked up on the search path, where the implicit
pg_temp comes first for types, so it is taken as unknown). Outside a Parse
or a PREPARE body no parameter is copied.

- declared with a type of the column's family (int2/int4/int8 against an
  integer column, text/varchar against a text one, ...), the comparison is
  that family's leakproof operator. A cast on a declared parameter
  (`$1::int8` with $1 declared text) would convert it at run time: not
  copied. Any other declared type (numeric, float8 against an integer
  column, unknown) is not copied: it can make PostgreSQL cast the *column*
  or pick an operator that is not leakproof (numeric_eq, date_eq_timestamp);
- unspecified, PostgreSQL gives $n the type of what it first meets it
  against: in `col OP $n` the column's own type (text for a varchar), and
  `$n::T` makes it T (T of the column's family, without a size). The
  condition is copied only if $n occurs nowhere else in the statement, so
  that the copy and the original infer the same type whichever PostgreSQL
  reads first, and the statement's parameter types (what Describe reports,
  what the client's values are converted to) do not change. In an IN list
  PostgreSQL infers from the list's common type: every item must be such a
  parameter, and the column not a varchar (whose IN list infers varchar
  where `=` infers text).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

from sqlglot import exp
from sqlglot.tokenizer_core import TokenType

from proxy.policy.analyze import Occ
from proxy.policy.context import Context
from proxy.policy.split import SplitError, tokenize

# Declared parameter types (pg_type.oid of the built-in types, fixed) by the
# families of pushdown._FAMILY.
OID_FAMILY = {
    21: "int",
    23: "int",
    20: "int",
    700: "float",
    701: "float",
    25: "text",
    1043: "text",
    1042: "bpchar",
    1082: "date",
    1114: "timestamp",
    1184: "timestamptz",
    16: "bool",
    2950: "uuid",
}
# PREPARE's type names that PostgreSQL's grammar itself maps to a pg_catalog type
# (keywords, never looked up on the search path), as OIDs.
_KEYWORD_TYPES = {
    "bigint": 20,
    "int": 23,
    "integer": 23,
    "smallint": 21,
    "real": 700,
    "double precision": 701,
    "float": 701,
    "boolean": 16,
    "varchar": 1043,
    "character varying": 1043,
    "timestamp": 1114,
    "timestamp without time zone": 1114,
    "timestamp with time zone": 1184,
}
OPAQUE = 1  # no type has OID 1: "declared, but not a type we know"


@dataclass(frozen=True, slots=True)
class Params:
    """One statement's parameters, as far as copying a comparison with them goes."""

    types: tuple[int, ...]  # declared OIDs; 0 or missing: unspecified
    uses: Counter[int]  # $n -> how often it occurs in the statement

    def family(self, n: int) -> str | None:
        """The declared type's family; "" when unspecified; None for any other type."""
        oid = self.types[n - 1] if n <= len(self.types) else 0
        return "" if oid == 0 else OID_FAMILY.get(oid)

    def untyped(self, node: exp.Expr) -> bool:
        """A bare parameter of unspecified type."""
        n = number(node) if isinstance(node, exp.Parameter) else None
        return n is not None and self.family(n) == ""

    def allows(self, node: exp.Expr, family: str, *, cast: bool) -> bool:
        """May `col OP node` be copied, col of `family`? `cast`: node stood in a cast
        to a type of that family."""
        n = number(node) if isinstance(node, exp.Parameter) else None
        if n is None:
            return False
        declared = self.family(n)
        if declared == "":
            return self.uses[n] == 1  # typed here, by the column (or the cast), only here
        return declared == family and not cast


def params_of(occs: list[Occ], types: tuple[int, ...] | None) -> Params | None:
    """The parameters of the statement `occs` were collected from; None outside a
    Parse or PREPARE (no parameter is copied there)."""
    if types is None:
        return None
    uses: Counter[int] = Counter()
    roots = {id(r): r for r in (o.node.root() for o in occs)}
    for root in roots.values():
        for node in root.find_all(exp.Parameter):
            uses[number(node) or 0] += 1
    return Params(types, uses)


def number(node: exp.Expr) -> int | None:
    """n of a `$n` node (1..65535), else None."""
    lit = node.this
    if type(lit) is not exp.Literal or lit.args.get("is_string"):
        return None
    text = str(lit.this)
    if not (text.isdigit() and text.isascii() and len(text) <= 5):
        return None
    n = int(text)
    return n if 1 <= n <= 65535 else None


def inner_context(kind: str, prefix: str, ctx: Context) -> Context:
    """The context an inner statement is decided in: PREPARE's body has parameters
    of its own (typed by its list); EXPLAIN's and DECLARE's are the outer ones."""
    if kind != "prepare":
        return ctx
    return dataclasses.replace(ctx, params=prepared_types(prefix))


def prepared_types(prefix: str) -> tuple[int, ...] | None:
    """The OIDs of `PREPARE name (type, ...) AS`'s types (OPAQUE for a name that is
    not one of the keywords above); () when it lists none; None if unreadable."""
    try:
        toks = list(tokenize(prefix))
    except SplitError:
        return None
    start = next((i for i, t in enumerate(toks) if t.token_type == TokenType.L_PAREN), None)
    if start is None:
        return ()
    out: list[int] = []
    words: list[str] = []
    depth = 0
    for t in toks[start + 1 :]:
        kind = t.token_type
        if depth == 0 and kind in (TokenType.COMMA, TokenType.R_PAREN):
            out.append(_keyword_type(words))
            words = []
            if kind == TokenType.R_PAREN:
                break
            continue
        depth += (kind == TokenType.L_PAREN) - (kind == TokenType.R_PAREN)
        # A quoted "bigint" is a name looked up on the path, not the keyword.
        words.append("\0" if kind == TokenType.IDENTIFIER else t.text.lower())
    return tuple(out)


def _keyword_type(words: list[str]) -> int:
    return _KEYWORD_TYPES.get(" ".join(words), OPAQUE)
