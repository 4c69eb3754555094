"""What SQL session plumbing does to the names a session holds: PREPARE, EXECUTE, DECLARE...

A prepared statement or a cursor made in SQL can be run later by name, in
SQL (EXECUTE, FETCH) or by the extended protocol (Bind naming the statement,
Execute naming the cursor's portal). The guard must admit each such run the
way it admits a protocol Execute, so the session has to know these names.
This module reads them from the statements the policy engine has already
split and decided: one `Effect` per statement that defines, runs or drops a
name (proxy/hooks.py), by statement index.

Names follow PostgreSQL: an unquoted identifier is folded to lower case
(ASCII letters only) and every identifier is cut to 63 bytes. MOVE returns no
rows and is not a run; DISCARD other than ALL leaves names alone. `CREATE
TABLE t AS EXECUTE s` and `EXPLAIN ANALYZE EXECUTE s` are runs of s (its
rows go into a table, or are counted by the server): admitted like EXECUTE,
so detectors and a rules reload reach them too.

EXECUTE's values are its arguments by position (a literal's value, or the
argument's text behind a NUL when it is an expression), so that `$n` of the
prepared statement finds its value for the subject ledger (policy/lookups.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from itertools import pairwise
from typing import Protocol

from sqlglot.tokenizer_core import Token, TokenType

from proxy.hooks import Effect
from proxy.policy.kinds import head
from proxy.policy.lookups import execute_args
from proxy.policy.split import Piece, SplitError, split
from proxy.policy.utilexpr import BadArgs, arg_list, name_end
from proxy.redact import LITERALS

# Statement kinds (policy/kinds.py) that may touch the session's names.
KINDS = frozenset(
    {
        "prepare",
        "execute",
        "declare",
        "fetch",
        "close",
        "deallocate",
        "discard",
        "create",
        "explain",
    }
)
_RUN_INSIDE = frozenset({"create", "explain"})  # only when they hold an EXECUTE
NAMEDATALEN = 64
_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class Decided(Protocol):
    """What the policy engine says of each statement (its StatementInfo)."""

    @property
    def kind(self) -> str: ...
    @property
    def literals(self) -> tuple[str, ...]: ...


def effects(sql: str, statements: Sequence[Decided]) -> dict[int, Effect]:
    """Effects of the statements of `sql`, as the policy engine decided them."""
    kinds = {s.kind for s in statements} & KINDS
    if not kinds or (kinds <= _RUN_INSIDE and "execute" not in sql.lower()):
        return {}  # most statements: no need to split the text again
    try:
        pieces = split(sql)
    except SplitError:
        return {}
    if len(pieces) != len(statements):
        return {}  # not the statements the engine decided: track nothing
    out = {}
    for i, (piece, stmt) in enumerate(zip(pieces, statements, strict=True)):
        effect = _effect(piece.tokens, stmt.kind, stmt.literals)
        if effect is not None:
            if stmt.kind == "execute" and effect.params:
                effect = replace(effect, params=_arguments(piece) or effect.params)
            out[i] = replace(effect, text=piece.text)
    return out


def _arguments(piece: Piece) -> tuple[str, ...] | None:
    """EXECUTE s(args): the values by position; None when the list cannot be read."""
    try:
        args = arg_list(piece, name_end(piece, 1))
    except BadArgs:
        return None
    return None if args is None else execute_args(args.text)


def _effect(toks: Sequence[Token], kind: str, literals: tuple[str, ...]) -> Effect | None:
    if kind not in KINDS or len(toks) < 2:
        return None
    first, second = toks[0].text.upper(), _word(toks[1])
    if kind in ("create", "explain"):
        # CREATE TABLE t AS EXECUTE s and EXPLAIN ANALYZE EXECUTE s run s too.
        if kind == "explain" and not any(t.text.upper() == "ANALYZE" for t in toks):
            return None  # a plan only: EXECUTE s is not run, so nothing to admit
        name = _executed(toks, after_as=kind == "create")
        return None if name is None else Effect("run", name, params=literals)
    if kind == "prepare":
        name = ident(toks[1])
        return None if name is None else Effect("prepare", name)
    if kind == "execute":
        name = ident(toks[1])
        return None if name is None else Effect("run", name, params=literals)
    if kind == "declare":
        name = ident(toks[1])
        return None if name is None else Effect("declare", name, hold=_holds(toks))
    if kind == "fetch":
        name = ident(toks[-1])
        if first != "FETCH" or name is None:
            return None
        return Effect("run", name, cursor=True)
    if kind == "discard":
        return Effect("discard") if second == "ALL" else None
    # CLOSE name | CLOSE ALL, DEALLOCATE [PREPARE] name | DEALLOCATE [PREPARE] ALL
    target = toks[2] if kind == "deallocate" and second == "PREPARE" and len(toks) > 2 else toks[1]
    close = kind == "close"
    name = None if _word(target) == "ALL" else ident(target)
    if name is None and _word(target) != "ALL":
        return None
    return Effect("close", name) if close else Effect("deallocate", name)


def _executed(toks: Sequence[Token], *, after_as: bool) -> str | None:
    """The statement an inner EXECUTE runs (for CREATE, only right after AS)."""
    depth = 0
    for i, t in enumerate(toks[:-1]):
        depth += (t.token_type == TokenType.L_PAREN) - (t.token_type == TokenType.R_PAREN)
        if depth == 0 and _word(t) == "EXECUTE" and (not after_as or _word(toks[i - 1]) == "AS"):
            return ident(toks[i + 1])
    return None


def _holds(toks: Sequence[Token]) -> bool:
    """DECLARE ... WITH HOLD ... FOR: the options before FOR."""
    words = []
    for t in toks[2:]:
        if _word(t) == "FOR":
            break
        words.append(_word(t))
    return any(a == "WITH" and b == "HOLD" for a, b in pairwise(words))


def _word(t: Token) -> str:
    """A keyword's text in upper case; "" for a quoted name or a literal ('execute')."""
    return (
        "" if t.token_type == TokenType.IDENTIFIER or t.token_type in LITERALS else t.text.upper()
    )


def ident(t: Token) -> str | None:
    """The name a token stands for as PostgreSQL reads an identifier, if it is one."""
    if t.token_type == TokenType.IDENTIFIER:
        text = t.text
    elif t.token_type not in LITERALS and (t.text[:1].isalpha() or t.text[:1] == "_"):
        text = t.text.translate(_LOWER)
    else:
        return None
    raw = text.encode()
    if len(raw) < NAMEDATALEN:
        return text
    return raw[: NAMEDATALEN - 1].decode("utf-8", "ignore")  # cut on a character boundary


def run_kind(kind: str, redacted: str) -> str:
    """The kind a run of a prepared statement has: that of the statement it prepares."""
    if kind != "prepare":
        return kind
    try:
        inner = head(Piece.alone(redacted)).inner
        return head(Piece.alone(inner)).kind if inner else kind
    except (SplitError, IndexError):
        return kind
