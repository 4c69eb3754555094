"""A statement's shape: its text with the literal values taken out, and where they may vary.

The simple protocol sends each statement with its values written in
(`... WHERE aid = 48213`), so an exact-text cache never hits and every
statement is parsed again. Statements that differ only in such values get the
same decision, give or take the values themselves; this module finds them.

`shape_of(sql, pieces)` reads the text as the engine's own splitter cut it
(split.py: PostgreSQL's lexical rules for '', E'', U&'', dollar quotes, nested
comments, standard_conforming_strings on) and takes out the *slots*: literals
of a class whose written form sqlglot prints back unchanged and that a sentinel
of the same class can stand in for:

- plain strings `'...'` (`''` is the only escape; E'', U&'', N'', B'', X''
  strings are not slots: they stay in the key as written);
- dollar-quoted strings `$tag$...$tag$` (the tag is part of the class);
- unsigned decimal numbers `42`, `1.5`, `1.`, `1e5`, `00012`, not glued to a
  `.`, a letter or a digit group separator (`.5`, `0x1F` and `1_000`, which
  sqlglot reads differently from PostgreSQL, stay in the key); integers of at
  most 18 digits (int4/int8 to PostgreSQL) are one class, every other number
  (numeric) another, since the engine copies comparisons with the former only
  below a row filter (pushdown.py).

A slot is not yet a value the decision ignores: `free_slots` says which slots
are, from where each sits in sqlglot's tree, on a copy of the text in which
every slot holds a unique sentinel. A slot is free only when its sentinel is
one literal whose parent is a comparison, an arithmetic or string operator, an
IN/BETWEEN list, a row constructor, a select-list item, a CASE branch or a cast to
a plain data type, in a SELECT/INSERT/UPDATE/DELETE the engine parses. Every
position the engine reads a value from is outside that list and so keeps its
value in the key: function arguments (`set_config`, `'query_to_xml'` and any
other name in a string), casts to reg* and other non-plain types, LIMIT,
OFFSET, FETCH, ORDER BY / GROUP BY ordinals, VALUES rows (an INSERT into a
row-filtered table checks them), array subscripts, intervals, JSON
paths, LIKE ... ESCAPE, and every literal of a utility statement (SET, SHOW,
COPY, PREPARE, EXECUTE, DECLARE, EXPLAIN...). A check added to the engine that
reads a value at one of the free positions must take that position off the
list (`_FREE_PARENTS`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokenizer_core import Token, TokenType

from proxy.policy.kinds import head
from proxy.policy.split import Piece, SplitError, split
from proxy.redact import redact

STRING, NUMBER = "'", "9"  # slot classes; a dollar-quoted slot's class is its `$tag$`
# Other numbers: decimals, exponents, integers of 19 digits or more. PostgreSQL types
# an integer of at most 18 digits int4 or int8 and the others numeric, and the engine
# copies comparisons with the former below a row filter (pushdown.py), never the latter.
DECIMAL = "9."
_SLOT_TYPES = frozenset({TokenType.STRING, TokenType.HEREDOC_STRING, TokenType.NUMBER})
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?")
_PG = Postgres()
# Statement kinds whose literals may be free: the engine parses them and reads
# values only at the positions listed below.
_PARSED = frozenset({"select", "insert", "update", "delete"})
_FREE_PARENTS: frozenset[type[exp.Expr]] = frozenset(
    {
        exp.EQ,
        exp.NEQ,
        exp.GT,
        exp.GTE,
        exp.LT,
        exp.LTE,
        exp.NullSafeEQ,
        exp.NullSafeNEQ,
        exp.Like,
        exp.ILike,
        exp.In,
        exp.Between,
        exp.Add,
        exp.Sub,
        exp.Mul,
        exp.Div,
        exp.Mod,
        exp.Neg,
        exp.Paren,
        exp.DPipe,
        exp.And,
        exp.Or,
        exp.Not,
        exp.Tuple,
        exp.If,
        exp.Case,
    }
)
# Select-list items and their aliases: `SELECT 'x' AS label`, `RETURNING 1`.
_FREE_ARGS: dict[type[exp.Expr], str] = {
    exp.Select: "expressions",
    exp.Returning: "expressions",
    exp.Alias: "this",
}
_T = exp.DataType.Type
_PLAIN_TYPES = frozenset(
    {
        _T.TEXT,
        _T.VARCHAR,
        _T.CHAR,
        _T.BPCHAR,
        _T.NAME,
        _T.SMALLINT,
        _T.INT,
        _T.BIGINT,
        _T.DECIMAL,
        _T.FLOAT,
        _T.DOUBLE,
        _T.MONEY,
        _T.BOOLEAN,
        _T.DATE,
        _T.TIME,
        _T.TIMETZ,
        _T.TIMESTAMP,
        _T.TIMESTAMPTZ,
        _T.UUID,
        _T.JSON,
        _T.JSONB,
    }
)


@dataclass(frozen=True, slots=True)
class Shape:
    """One text seen as its shape plus the values in its slots."""

    key: tuple[str, ...]  # segment, class, segment, class, ..., segment
    sources: tuple[str, ...]  # each slot's literal exactly as written
    literals: tuple[tuple[str, ...], ...]  # per statement: its StatementInfo.literals

    def text(self, fill: Callable[[int], str]) -> str:
        """The text with slot i written as fill(i)."""
        k = self.key
        out = [k[0]]
        for i in range(len(self.sources)):
            out.append(fill(i))
            out.append(k[2 * i + 2])
        return "".join(out)

    def slot_class(self, i: int) -> str:
        return self.key[2 * i + 1]


def shape_of(sql: str, pieces: list[Piece]) -> Shape | None:
    """The shape of `sql`, split into `pieces`; None when a statement was rewritten to be
    parsed (U& identifiers, oid arrays): those are left to the exact-text cache."""
    key: list[str] = []
    sources: list[str] = []
    literals: list[tuple[str, ...]] = []
    seg = 0
    for p in pieces:
        if p.parse_text != p.text or p.source is not sql:
            return None
        # Each statement's literals exactly as the engine lists them (the detectors' input).
        literals.append(redact(p.text, p.tokens, p.base)[2])
        prev: Token | None = None
        for t in p.tokens:
            kind = t.token_type
            if (
                kind in _SLOT_TYPES
                and t.start >= seg  # not a token the tokenizer made up inside another
                and not (kind == TokenType.NUMBER and _parameter(prev, t))
            ):
                src = sql[t.start : t.end + 1]
                cls = _slot_class(kind, src, t, sql)
                if cls is not None:
                    key.append(sql[seg : t.start])
                    key.append(cls)
                    sources.append(src)
                    seg = t.end + 1
            prev = t
    key.append(sql[seg:])
    return Shape(tuple(key), tuple(sources), tuple(literals))


def _parameter(prev: Token | None, t: Token) -> bool:
    """The 1 of $1 is a parameter number, not a value (as redact() reads it)."""
    return prev is not None and prev.token_type == TokenType.PARAMETER and prev.end + 1 == t.start


def _slot_class(kind: TokenType, src: str, t: Token, sql: str) -> str | None:
    if kind == TokenType.STRING:
        return STRING if src[0] == "'" and src[-1] == "'" else None
    if kind == TokenType.HEREDOC_STRING:
        end = src.find("$", 1)
        tag = src[: end + 1]
        whole = src[0] == "$" and end > 0 and src.endswith(tag) and len(src) >= 2 * len(tag)
        return tag if whole else None
    if kind == TokenType.NUMBER and src == t.text and _NUMBER.fullmatch(src):
        before = sql[t.start - 1] if t.start > 0 else " "
        after = sql[t.end + 1] if t.end + 1 < len(sql) else " "
        if not (_glued(before) or _glued(after)):
            return NUMBER if src.isdigit() and len(src) <= 18 else DECIMAL
    return None


def _glued(ch: str) -> bool:
    return ch.isalnum() or ch in "_.$" or ord(ch) > 127


class Sentinels:
    """Unique stand-ins for slot values, unguessable so no statement can forge one."""

    def __init__(self, letters: str, digits: str) -> None:
        self.letters = letters  # lower-case hex, starts with a letter
        self.digits = digits  # no leading zero

    def source(self, shape: Shape, i: int) -> str:
        """Slot i's sentinel as written in the statement text."""
        cls = shape.slot_class(i)
        if cls == NUMBER:
            return f"{self.digits[:12]}{i:06d}"  # 18 digits: an int8, like the values
        if cls == DECIMAL:
            return f"{self.digits}{i:06d}"  # 24 digits: a numeric, like the values
        if cls == STRING:
            return f"'{self.letters}s{i}'"
        return f"{cls}{self.letters}s{i}{cls}"

    def value(self, shape: Shape, i: int) -> str:
        """Slot i's sentinel as sqlglot holds it in a Literal."""
        src = self.source(shape, i)
        if shape.slot_class(i) in (NUMBER, DECIMAL):
            return src
        cut = 1 if src[0] == "'" else len(shape.slot_class(i))
        return src[cut:-cut]


def free_slots(shape: Shape, sentinels: Sentinels) -> frozenset[int]:
    """The slots whose value the decision only carries through (see the module docstring)."""
    values = {sentinels.value(shape, i): i for i in range(len(shape.sources))}
    text = shape.text(lambda i: sentinels.source(shape, i))
    seen: dict[int, int] = {}
    ok: set[int] = set()
    try:
        pieces = split(text)
    except SplitError:
        return frozenset()
    for piece in pieces:
        h = head(piece)
        if not h.parse:
            continue  # a utility statement (or EXPLAIN...): its values all stay in the key
        # Any other statement must parse here as it will in the engine: a parse error's
        # message gives a column in the whole text, which moves with any value before it.
        if h.kind not in _PARSED:
            return frozenset()
        try:
            trees = _PG.parser().parse(list(piece.tokens), piece.source)
        except (ParseError, TokenError):
            return frozenset()
        if len(trees) != 1 or trees[0] is None or isinstance(trees[0], exp.Command):
            return frozenset()
        for lit in _literals(trees[0]):
            i = values.get(str(lit.this))
            if i is None:
                continue
            seen[i] = seen.get(i, 0) + 1
            if _kind_of(lit) == _kind_of_class(shape.slot_class(i)) and _free_position(lit):
                ok.add(i)
    return frozenset(i for i in ok if seen[i] == 1)


def _literals(tree: exp.Expr) -> Iterator[exp.Expr]:
    for node in tree.walk():
        if type(node) is exp.Literal or type(node) is exp.RawString:
            yield node


def _kind_of(lit: exp.Expr) -> str:
    if isinstance(lit, exp.RawString):
        return "$"  # a dollar-quoted string
    return STRING if lit.args.get("is_string") else NUMBER


def _kind_of_class(cls: str) -> str:
    return cls[0]


def _free_position(lit: exp.Expr) -> bool:
    parent = lit.parent
    kind = type(parent)
    if kind is exp.Tuple and isinstance(parent.parent if parent else None, exp.Values):
        # A VALUES row: INSERT into a row-filtered table checks these values against
        # the filter (writecheck.py), so the decision depends on them.
        return False
    if kind in _FREE_PARENTS:
        return True
    if kind in _FREE_ARGS:
        return lit.arg_key == _FREE_ARGS[kind]
    if kind is exp.Cast and lit.arg_key == "this":
        to = parent.args.get("to") if parent is not None else None
        return isinstance(to, exp.DataType) and to.this in _PLAIN_TYPES and not to.expressions
    return False
