"""What a statement's text does to tracked settings and savepoints (see proxy/gucs.py).

The session learns from the CommandComplete tag whether a statement ran and
what kind it was, but a tag names no savepoint and does not tell `ROLLBACK`
from `ROLLBACK TO SAVEPOINT`, nor `SET` from `SET LOCAL`. The engine reads
that from the statement's tokens here and hands it over as a `Change`.
"""

from __future__ import annotations

from sqlglot.tokenizer_core import Token, TokenType

from proxy.gucs import PURPOSE, TRACKED, Change
from proxy.policy.kinds import Head
from proxy.policy.split import Piece


def _word(t: Token) -> str:
    return t.text.upper() if t.token_type != TokenType.IDENTIFIER else ""


def _name(t: Token) -> str:
    """An identifier as PostgreSQL folds it."""
    return t.text if t.token_type == TokenType.IDENTIFIER else t.text.lower()


def statement_change(h: Head, piece: Piece) -> Change | None:
    """The Change of a SET/RESET/DISCARD/savepoint statement, or None."""
    toks = piece.tokens
    words = [_word(t) for t in toks]
    if h.kind == "discard" and h.setting == "all":
        return Change("reset_all")
    if h.kind == "set":
        if h.setting == "all":
            return Change("reset_all") if h.reset else None
        if h.setting not in TRACKED:
            return None
        local = len(words) > 1 and words[0] == "SET" and words[1] == "LOCAL"
        default = h.reset or h.values in ((), ("default",))
        if h.setting == PURPOSE and not h.reset:
            # One string; a quoted 'default' is that text, not the keyword.
            default = default and toks[-1].token_type != TokenType.STRING
            if not default and len(h.values) != 1:
                return Change("unknown", PURPOSE)  # the server refuses a list anyway
        return Change("local" if local else "set", h.setting, None if default else h.values)
    if not toks:
        return None
    first = words[0]
    if first == "SAVEPOINT" and len(toks) == 2:
        return Change("savepoint", _name(toks[1]))
    if first == "RELEASE":
        return Change("release", _savepoint(toks, 1) or UNREADABLE)
    if first == "ROLLBACK" and "TO" in words:
        return Change("rollback_to", _savepoint(toks, words.index("TO") + 1) or UNREADABLE)
    return None


# A savepoint name no client can have used: the change it names is not found, and
# the session marks its settings unknown rather than guess.
UNREADABLE = "\0unreadable"


def _savepoint(toks: tuple[Token, ...], i: int) -> str | None:
    """The name in `[SAVEPOINT] name` from token i on (`savepoint` itself may be the name)."""
    rest = toks[i:]
    if len(rest) == 2 and _word(rest[0]) == "SAVEPOINT":
        return _name(rest[1])
    return _name(rest[0]) if len(rest) == 1 else None
