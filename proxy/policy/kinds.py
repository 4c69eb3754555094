"""Statement kinds from the leading keywords, including those sqlglot parses only as Command.

sqlglot 30 misreads several PostgreSQL utility statements (`LISTEN x` and
`CLOSE c` parse as a column alias, `ABORT` as a column, `SHOW`, `EXPLAIN`,
`DECLARE`, `PREPARE`, `DO` as a generic Command). So the kind is always taken
from the leading tokens here, and sqlglot is only trusted for the statements
it really models. For EXPLAIN, DECLARE and PREPARE the inner statement is cut
out so the engine can police it as if it stood alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot.tokenizer_core import Token, TokenType

from proxy.policy.split import Piece

DEFAULT_SEARCH_PATH = ("$user", "public")

# Kinds whose text sqlglot parses into a real tree that the engine analyzes.
PARSED = {"select", "insert", "update", "delete", "merge", "copy", "truncate"}
# Utility statements that read no table data and change nothing the engine tracks.
_SIMPLE = {
    "SHOW": "show",
    "FETCH": "fetch",
    "MOVE": "fetch",
    "CLOSE": "close",
    "DEALLOCATE": "deallocate",
    "DISCARD": "discard",
    "LISTEN": "listen",
    "UNLISTEN": "listen",
    "NOTIFY": "notify",
    "CHECKPOINT": "checkpoint",
    "LOAD": "load",
    "DO": "do",
    "CALL": "call",
    "VACUUM": "vacuum",
    "ANALYZE": "analyze",
    "ANALYSE": "analyze",
    "LOCK": "lock",
    "REINDEX": "reindex",
    "CLUSTER": "cluster",
    "REFRESH": "refresh",
    "GRANT": "grant",
    "REVOKE": "revoke",
    "SECURITY": "security_label",
    "IMPORT": "import",
    "REASSIGN": "reassign",
}
_DDL = {"CREATE": "create", "ALTER": "alter", "DROP": "drop", "COMMENT": "comment"}
# Transaction control; savepoints count as the transaction kind they resemble.
_TX = {
    "BEGIN": "begin",
    "START": "begin",
    "SAVEPOINT": "begin",
    "COMMIT": "commit",
    "END": "commit",
    "RELEASE": "commit",
    "ROLLBACK": "rollback",
    "ABORT": "rollback",
}
_PARSED_FIRST = {
    "SELECT": "select",
    "WITH": "select",  # refined from the tree: WITH ... INSERT is an insert
    "VALUES": "select",
    "TABLE": "select",
    "(": "select",
    "INSERT": "insert",
    "UPDATE": "update",
    "DELETE": "delete",
    "MERGE": "merge",
    "COPY": "copy",
    "TRUNCATE": "truncate",
}
_EXPLAIN_OPTS = {"ANALYZE", "ANALYSE", "VERBOSE"}
_FALSE = {"FALSE", "OFF", "0"}


@dataclass(frozen=True, slots=True)
class Head:
    """What the leading tokens say about a statement."""

    kind: str
    parse: bool = False  # hand the whole text to sqlglot
    inner: str | None = None  # inner statement to police (EXPLAIN / DECLARE / PREPARE)
    prefix: str = ""  # text before `inner`, kept verbatim in a rewrite
    analyze: bool = False  # EXPLAIN ANALYZE: runs the query and reports real row counts
    ddl: bool = False
    setting: str | None = None  # SET/RESET: the parameter name (lower case)
    values: tuple[str, ...] = ()  # SET: the values, as PostgreSQL will read them
    reset: bool = False


def _word(t: Token) -> str:
    return t.text.upper() if t.token_type != TokenType.IDENTIFIER else ""


def head(piece: Piece) -> Head:
    toks = piece.tokens
    first = _word(toks[0]) if toks[0].token_type != TokenType.L_PAREN else "("
    if first in _PARSED_FIRST:
        return Head(_PARSED_FIRST[first], parse=True)
    if first in _TX:
        if first == "ROLLBACK" and len(toks) > 1 and _word(toks[1]) == "PREPARED":
            return Head("rollback")
        return Head(_TX[first])
    if first in _DDL:
        return Head(_DDL[first], parse=True, ddl=True)
    if first == "EXPLAIN":
        return _explain(piece)
    if first == "DECLARE":
        return _after_keyword(piece, "declare", "FOR")
    if first == "PREPARE":
        if len(toks) > 1 and _word(toks[1]) == "TRANSACTION":
            return Head("commit")
        return _after_keyword(piece, "prepare", "AS")
    if first == "EXECUTE":
        return Head("execute")
    if first in ("SET", "RESET"):
        return _set(piece, first == "RESET")
    if first == "DISCARD":
        what = _word(toks[1]).lower() if len(toks) > 1 else ""
        return Head("discard", setting=what)
    if first in _SIMPLE:
        return Head(_SIMPLE[first])
    return Head("unknown")


def _inner(piece: Piece, idx: int, kind: str, analyze: bool = False) -> Head:
    toks = piece.tokens
    if idx >= len(toks):
        return Head("unknown")
    start = piece.rel(toks[idx].start)
    text = piece.parse_text
    return Head(kind, inner=text[start:], prefix=text[:start], analyze=analyze)


def _explain(piece: Piece) -> Head:
    toks = piece.tokens
    i, analyze = 1, False
    if i < len(toks) and toks[i].token_type == TokenType.L_PAREN:
        depth, j = 0, i
        while j < len(toks):
            tt = toks[j].token_type
            depth += 1 if tt == TokenType.L_PAREN else -1 if tt == TokenType.R_PAREN else 0
            word = _word(toks[j])
            if word in ("ANALYZE", "ANALYSE"):
                nxt = _word(toks[j + 1]) if j + 1 < len(toks) else ""
                analyze = analyze or nxt not in _FALSE
            j += 1
            if depth == 0:
                break
        i = j
    while i < len(toks) and _word(toks[i]) in _EXPLAIN_OPTS:
        analyze = analyze or _word(toks[i]) in ("ANALYZE", "ANALYSE")
        i += 1
    return _inner(piece, i, "explain", analyze)


def _after_keyword(piece: Piece, kind: str, keyword: str) -> Head:
    toks = piece.tokens
    depth = 0
    for i, t in enumerate(toks):
        depth += 1 if t.token_type == TokenType.L_PAREN else 0
        depth -= 1 if t.token_type == TokenType.R_PAREN else 0
        if i > 1 and depth == 0 and _word(t) == keyword:
            return _inner(piece, i + 1, kind)
    return Head("unknown")


def _set(piece: Piece, reset: bool) -> Head:
    """SET [SESSION | LOCAL] name {TO | =} value [, ...] | RESET name | RESET ALL."""
    toks = list(piece.tokens[1:])
    scope_word = len(toks) > 1 and _word(toks[0]) in ("SESSION", "LOCAL")
    if scope_word and _word(toks[1]) not in ("AUTHORIZATION", "CHARACTERISTICS", "TO", "="):
        toks = toks[1:]
    if not toks:
        return Head("unknown")
    # A dotted custom setting (my.var) arrives as name DOT name.
    name_parts = [toks[0].text]
    k = 1
    while k + 1 < len(toks) and toks[k].token_type == TokenType.DOT:
        name_parts.append(toks[k + 1].text)
        k += 2
    name = ".".join(p.lower() for p in name_parts)
    if reset:
        return Head("set", setting=name, reset=True)
    rest = toks[k:]
    if rest and (_word(rest[0]) in ("TO",) or rest[0].token_type == TokenType.EQ):
        rest = rest[1:]
    values = tuple(
        t.text if t.token_type in (TokenType.IDENTIFIER, TokenType.STRING) else t.text.lower()
        for t in rest
        if t.token_type != TokenType.COMMA
    )
    return Head("set", setting=name, values=values)


def search_path_of(h: Head) -> tuple[str, ...] | None:
    """The search_path a SET/RESET leaves, or None when it does not touch search_path."""
    if h.kind == "discard" and h.setting == "all":
        return DEFAULT_SEARCH_PATH  # DISCARD ALL includes RESET ALL
    if h.kind != "set" or h.setting not in ("search_path", "all"):
        return None
    if h.reset or h.values in ((), ("default",)):
        return DEFAULT_SEARCH_PATH
    if h.setting == "all":
        return None
    # As in PostgreSQL, a quoted 'a, b' is one (odd) schema name, not two.
    return h.values
