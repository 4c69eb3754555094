"""Argument lists of utility statements, cut out so they can be policed as a SELECT.

`EXECUTE s(args)` and `CALL p(args)` evaluate their arguments on the server
exactly as `SELECT args` would: subqueries read tables, functions run. sqlglot
does not model either statement, so the list between the parentheses is cut
out of the tokens here, decided as the synthetic `SELECT <args>` (decide.py),
and spliced back in when the decision rewrote it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot.tokenizer_core import TokenType

from proxy.policy.split import Piece


class BadArgs(ValueError):
    """The tokens after the name are not one balanced argument list."""


@dataclass(frozen=True, slots=True)
class ArgList:
    open: int  # offset of "(" in the piece's parse_text
    close: int  # offset of the matching ")"
    text: str  # what lies between them

    def splice(self, parse_text: str, args: str) -> str:
        return parse_text[: self.open + 1] + args + parse_text[self.close :]


def arg_list(piece: Piece, at: int) -> ArgList | None:
    """The parenthesised list starting at token `at`, None when the statement ends there.

    Raises BadArgs for anything else, including text after the closing parenthesis.
    """
    toks = piece.tokens
    if at >= len(toks):
        return None
    if toks[at].token_type != TokenType.L_PAREN:
        raise BadArgs("expected an argument list")
    depth = 0
    for i in range(at, len(toks)):
        tt = toks[i].token_type
        if tt == TokenType.L_PAREN:
            depth += 1
        elif tt == TokenType.R_PAREN:
            depth -= 1
            if depth == 0:
                if i != len(toks) - 1:
                    raise BadArgs("text after the argument list")
                start, end = piece.rel(toks[at].start), piece.rel(toks[i].start)
                return ArgList(start, end, piece.parse_text[start + 1 : end])
    raise BadArgs("unbalanced parentheses in the argument list")


def name_end(piece: Piece, at: int) -> int:
    """Index of the token after a possibly schema-qualified name starting at `at`."""
    toks = piece.tokens
    i = at + 1
    while i + 1 < len(toks) and toks[i].token_type == TokenType.DOT:
        i += 2
    return i
