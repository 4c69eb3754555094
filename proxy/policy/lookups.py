"""What a statement searched for: values compared with a subject's key or lookup columns.

The subject ledger's `looked_up` half (DESIGN.md, "Audit log"; docs/ledger.md).
A statement that writes `ssn = '123-45-6789'`, `p.id IN (41, 42)`,
`person_id = ANY(ARRAY[7, 8])` or `ssn = $1` against a table a `subjects:` rule
names has searched for those people, whether or not a row comes back. `find`
reads this off the analyzed tree (analyze.py): each column is resolved to the
relation reference it reads, through aliases, qualified names, alias column
lists and, for derived tables and CTEs, the select list of the query that
defines them; a column of a subject table (its key, a `via` column or a
`lookups` column) compared for equality with a literal or a bound parameter
gives one `Lookup`.

A `Lookup` names the value by position, never by content: the index of the
literal in the statement's `literals` (as proxy/redact.py lists them), or the
number of the parameter. The decision caches (normcache.py) share one decision
between texts that differ only in their literal values and put each text's
own `literals` back into it, so the positions stay true for every text of a
shape and the values are read from the statement actually sent. The hooks
layer turns each into text (`text_form`: as PostgreSQL prints the value in the
column's type, `0042` compared with an integer key is `42`) and hashes it.

Statements on tables no subject names cost one set lookup per table reference.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Protocol

from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokenizer_core import Token, TokenType

from proxy.policy.analyze import Nodes, Occ, Scopes, fold
from proxy.policy.split import SplitError, tokenize
from proxy.redact import LITERALS, redact

# table -> column -> (subject id, is a key column: its own key or a `via` column)
SubjectColumns = Mapping[str, Mapping[str, tuple[str, bool]]]
MAX_DEPTH = 8  # derived tables and CTEs traced through, at most
NOT_A_VALUE = "\x00"  # an EXECUTE argument that is not a literal (plumbing.py)

_INTS = frozenset({"int2", "int4", "int8", "oid", "smallint", "integer", "bigint", "int"})
_PG = Postgres()
# Types whose binary form is their text in UTF-8 ("": not known, read as text).
_TEXTS = frozenset({"", "text", "varchar", "bpchar", "name", "citext", "character varying"})


@dataclass(frozen=True, slots=True)
class Lookup:
    """One value the statement compared with a subject column."""

    subject: str
    column: str  # as the rule file writes it
    key: bool  # the subject's key or a `via` column: hashed without the column name
    literal: int = -1  # index into the statement's literals, or -1
    param: int = 0  # the $n it is bound to, or 0
    type: str = ""  # the type the server reads the value as (a cast's, else the column's)
    negative: bool = False  # `-5`: the minus sign is not part of the literal


class SubjectLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def table(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def lookups(self) -> Sequence[str]: ...
    def key_columns(self) -> list[tuple[str, str]]: ...


def subject_columns(subjects: Iterable[SubjectLike]) -> dict[str, dict[str, tuple[str, bool]]]:
    """The index `find` reads, from the rule set's `subjects:`."""
    out: dict[str, dict[str, tuple[str, bool]]] = {}
    for s in subjects:
        for table, column in s.key_columns():
            out.setdefault(table, {})[column] = (s.id, True)
        for column in s.lookups:
            out.setdefault(s.table, {})[column] = (s.id, False)
    return out


def literal_starts(tokens: Sequence[Token], text: str, base: int = 0) -> dict[int, int]:
    """Token start -> index in `redact(text, tokens, base)[2]`, the statement's literals.

    The same reading as redact(): synthesized tokens, the digits of `$1` and the
    unquoted remainder of a generic command are not literals.
    """
    out: dict[int, int] = {}
    pos = 0
    prev: Token | None = None
    for t in tokens:
        start = t.start - base
        if start < pos:
            continue
        kind = t.token_type
        param = (
            kind == TokenType.NUMBER
            and prev is not None
            and prev.token_type == TokenType.PARAMETER
            and prev.end + 1 == t.start
        )
        if not param and kind in LITERALS:
            raw = text[start : t.end + 1 - base]
            if kind == TokenType.NUMBER or raw[:1] in ("'", "$") or _prefixed(raw):
                out[t.start] = len(out)
            pos = t.end + 1 - base
        prev = t
    return out


def _prefixed(raw: str) -> bool:
    return raw[:2].upper() in ("E'", "N'", "X'", "B'", "U&")


def touches(occs: list[Occ], index: SubjectColumns) -> bool:
    """Does the statement name a table a subject's columns are in? (If not: no lookups.)"""
    return bool(index) and any(o.qualified in index for o in occs)


def find(
    nodes: Nodes, occs: list[Occ], index: SubjectColumns, starts: Mapping[int, int]
) -> tuple[Lookup, ...]:
    """Every value the statement compares with a subject's key, via or lookup column."""
    if not touches(occs, index):
        return ()
    r = _Resolver(nodes, occs, index)
    out: dict[Lookup, None] = {}
    for col, chain in nodes.columns:
        values = _compared(col)
        if not values:
            continue
        hit = r.resolve(col, chain, 0)
        if hit is None:
            continue
        occ, column = hit
        subject, key = index[occ.qualified][column]
        ctype = _column_type(occ, column)
        for v in values:
            item = _value(v, starts, ctype)
            if item is not None:
                lit, param, typ, neg = item
                out[Lookup(subject, column, key, lit, param, typ, neg)] = None
    return tuple(out)


def _compared(col: exp.Column) -> list[exp.Expr]:
    """The expressions `col` is tested for equality with, when it stands bare."""
    node: exp.Expr = col
    parent = node.parent
    while isinstance(parent, exp.Paren):
        node, parent = parent, parent.parent
    if isinstance(parent, exp.EQ | exp.NullSafeEQ):
        other = parent.expression if parent.this is node else parent.this
        if isinstance(other, exp.Any):
            inner = other.this
            while isinstance(inner, exp.Paren):
                inner = inner.this
            return list(inner.expressions) if isinstance(inner, exp.Array) else []
        return [other]
    if (
        isinstance(parent, exp.In)
        and parent.this is node
        and not any(parent.args.get(k) is not None for k in ("query", "unnest", "field"))
    ):
        return list(parent.expressions)
    return []


def _value(v: exp.Expr, starts: Mapping[int, int], ctype: str) -> tuple[int, int, str, bool] | None:
    """(literal index, parameter number, type, negative) of a value expression."""
    typ, neg = ctype, False
    while isinstance(v, exp.Paren):
        v = v.this
    if isinstance(v, exp.Cast):
        to = v.args.get("to")
        if isinstance(to, exp.DataType) and not to.expressions:
            typ = to.sql(dialect="postgres").lower()
        v = v.this
        while isinstance(v, exp.Paren):
            v = v.this
    if isinstance(v, exp.Neg):
        neg, v = True, v.this
    if isinstance(v, exp.Parameter):
        inner = v.this
        if isinstance(inner, exp.Literal) and str(inner.this).isdigit() and not neg:
            return -1, int(inner.this), typ, False
        return None
    if type(v) is exp.Literal or type(v) is exp.RawString:
        k = starts.get(v.meta.get("start", -1)) if v.meta else None
        if k is None:
            return None  # not from this statement's text (an expanded view's definition)
        return k, 0, typ, neg
    return None


def _column_type(o: Occ, column: str) -> str:
    rel = o.relation
    if rel is None or column not in rel.columns:
        return ""
    i = rel.columns.index(column)
    return rel.types[i] if i < len(rel.types) else ""


class _Resolver:
    """Which relation reference, and which of its real columns, a column node reads."""

    def __init__(self, nodes: Nodes, occs: list[Occ], index: SubjectColumns) -> None:
        self.index = index
        self.by_scope: dict[int, list[Occ]] = {}
        for o in occs:
            self.by_scope.setdefault(id(o.scope), []).append(o)
        self.chains: dict[int, Scopes] = {}
        self.col_chain: dict[int, Scopes] = {}
        for col, chain in nodes.columns:
            self.col_chain[id(col)] = chain
            self._chains(chain)
        self.ctes: dict[int, list[tuple[exp.Table, Scopes]]] = {}
        for t, chain, is_cte in nodes.tables:
            self._chains(chain)
            if is_cte and chain:
                self.ctes.setdefault(id(chain[-1]), []).append((t, chain))

    def _chains(self, chain: Scopes) -> None:
        for k in range(len(chain)):
            self.chains.setdefault(id(chain[k]), chain[: k + 1])

    def resolve(self, col: exp.Column, chain: Scopes, depth: int) -> tuple[Occ, str] | None:
        table = fold(col.args.get("table"))
        if isinstance(col.this, exp.Star):
            return None
        return self._name(table, fold(col.args.get("db")), fold(col.this), chain, depth)

    def _name(
        self, table: str, db: str, name: str, chain: Scopes, depth: int
    ) -> tuple[Occ, str] | None:
        for scope in reversed(chain):
            group = self.by_scope.get(id(scope), [])
            if table:
                hits = [o for o in group if o.alias == table and (not db or o.schema in ("", db))]
                if len(hits) == 1:
                    return self._subject(hits[0], name)
                derived = self._derived(scope, table)
                if hits or derived is not None:
                    return None if derived is None else self._trace(derived, name, depth)
                continue
            hits = [o for o in group if _visible(o, name)]
            if any(_visible(o, name) is None for o in group):
                return None  # a relation with unknown columns might hold it
            if len(hits) == 1:
                return self._subject(hits[0], name)
            if hits:
                return None  # ambiguous: the server refuses it
            for query in self._all_derived(scope):
                found = self._trace(query, name, depth)
                if found is not None:
                    return found
        return None

    def _subject(self, o: Occ, name: str) -> tuple[Occ, str] | None:
        real = o.colmap.get(name) if o.colmap else name
        cols = self.index.get(o.qualified)
        if real is None or cols is None or real not in cols:
            return None
        return o, real

    def _derived(self, scope: exp.Expr, alias: str) -> exp.Expr | None:
        """The query behind a FROM item of `scope` named `alias`: a subquery or a CTE."""
        for q_alias, query in self._all_derived_named(scope):
            if q_alias == alias:
                return query
        return None

    def _all_derived(self, scope: exp.Expr) -> list[exp.Expr]:
        return [q for _, q in self._all_derived_named(scope)]

    def _all_derived_named(self, scope: exp.Expr) -> list[tuple[str, exp.Expr]]:
        out: list[tuple[str, exp.Expr]] = []
        if not isinstance(scope, exp.Select):
            return out
        items = []
        frm = scope.args.get("from_")
        if isinstance(frm, exp.From):
            items.append(frm.this)
        items += [j.this for j in scope.args.get("joins") or []]
        for item in items:
            if isinstance(item, exp.Subquery) and isinstance(item.this, exp.Select):
                out.append((fold(item.alias) if item.alias else "", item.this))
        for t, _ in self.ctes.get(id(scope), []):
            query = _cte_query(t)
            if query is not None:
                out.append((fold(t.alias) if t.alias else fold(t.this), query))
        return out

    def _trace(self, query: exp.Expr, name: str, depth: int) -> tuple[Occ, str] | None:
        """The column `name` of a derived table, followed into its select list."""
        if depth >= MAX_DEPTH or not isinstance(query, exp.Select):
            return None
        inner = self.chains.get(id(query))
        if inner is None:
            return None
        for e in query.expressions:
            if isinstance(e, exp.Star):
                return self._name("", "", name, inner, depth + 1)
            if isinstance(e, exp.Column) and isinstance(e.this, exp.Star):
                return self._name(fold(e.args.get("table")), "", name, inner, depth + 1)
            if e.alias_or_name and fold(e.alias_or_name) == name:
                target = e.this if isinstance(e, exp.Alias) else e
                if isinstance(target, exp.Column):
                    return self.resolve(target, self.col_chain.get(id(target), inner), depth + 1)
                return None
        return None


def _cte_query(t: exp.Table) -> exp.Expr | None:
    """The query a CTE reference names, from the nearest WITH that defines it."""
    name = fold(t.this)
    node: exp.Expr | None = t.parent
    while node is not None:
        w = node.args.get("with_")
        if isinstance(w, exp.With):
            for cte in w.expressions:
                alias = cte.args.get("alias")
                if alias is not None and fold(alias.this) == name:
                    return cte.this if isinstance(cte.this, exp.Expr) else None
        node = node.parent
    return None


def _visible(o: Occ, col: str) -> bool | None:
    if o.relation is None or not o.relation.columns:
        return None
    if o.colmap:
        return col in o.colmap
    return col in o.relation.columns


def text_form(value: str, typ: str, *, negative: bool = False) -> str | None:
    """`value` as PostgreSQL prints it once read as `typ`; None when it cannot be read.

    Bound values in binary format arrive as `\\x` hex (messages.parse_bind_params):
    integers and uuids are decoded, text is read as UTF-8, other types are skipped.
    """
    if not value or value.startswith(NOT_A_VALUE):
        return None
    binary = value.startswith("\\x")
    if binary:
        try:
            raw = bytes.fromhex(value[2:])
        except ValueError:
            binary = False
    if typ in _INTS:
        if value.isascii() and value.isdigit():  # the common case, without Decimal
            return str(-int(value) if negative else int(value))
        if binary:
            return str(int.from_bytes(raw, "big", signed=True)) if len(raw) in (2, 4, 8) else None
        try:
            n = Decimal(value.strip())
        except InvalidOperation:
            return None
        if not n.is_finite() or n != n.to_integral_value():
            return None
        return str(-int(n) if negative else int(n))
    if typ == "uuid":
        try:
            return str(uuid.UUID(bytes=raw) if binary and len(raw) == 16 else uuid.UUID(value))
        except ValueError:
            return None
    if binary:
        if typ not in _TEXTS:
            return None  # numeric, dates...: their binary forms are not read here
        try:
            value = raw.decode()
        except UnicodeDecodeError:
            return None
    if negative:
        value = "-" + value
    if typ in ("numeric", "decimal"):
        return value.strip()
    return value


def values(
    found: Sequence[Lookup], literals: Sequence[str], params: Sequence[str] | None
) -> list[tuple[Lookup, str]]:
    """Each lookup with the text of its value, from these literals or these bound values.

    Parameters are skipped while `params` is None (the statement has not been
    bound yet); literals when the index does not fit.
    """
    out = []
    for item in found:
        if item.param:
            if params is None or item.param > len(params):
                continue
            raw = params[item.param - 1]
        elif 0 <= item.literal < len(literals):
            raw = literals[item.literal]
        else:
            continue
        text = text_form(raw, item.type, negative=item.negative)
        if text is not None:
            out.append((item, text))
    return out


def execute_args(text: str) -> tuple[str, ...] | None:
    """EXECUTE s(text): each argument's value when it is a literal, else NOT_A_VALUE and
    its text, by position (so `$n` of the prepared statement finds its value); None when
    the list does not parse."""
    sql = f"SELECT {text}"
    try:
        tokens = tokenize(sql)
        trees = _PG.parser().parse(list(tokens), sql)
    except (ParseError, TokenError, SplitError):
        return None
    tree = trees[0] if len(trees) == 1 else None
    if not isinstance(tree, exp.Select):
        return None
    starts = literal_starts(tokens, sql)
    literals = redact(sql, tokens)[2]
    out = []
    for a in tree.expressions:
        item = _value(a, starts, "")
        if item is not None and item[1] == 0 and 0 <= item[0] < len(literals):
            out.append(("-" if item[3] else "") + literals[item[0]])
        else:
            out.append(NOT_A_VALUE + a.sql(dialect="postgres"))
    return tuple(out)
