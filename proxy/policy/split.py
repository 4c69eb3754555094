"""Split a simple-query string into statements the way PostgreSQL will, and fold U& identifiers.

The split uses sqlglot's postgres tokenizer, which knows standard-conforming
strings, E'' escapes, dollar quotes and nested comments, so a `;` inside any
of them never splits. The engine refuses `SET standard_conforming_strings = off`
and non-UTF-8 client encodings, which would make PostgreSQL read the same bytes
differently from this tokenizer.

Each piece keeps its original text (sent upstream unchanged when allowed) and a
parse text in which `U&"..."` identifiers are decoded to plain quoted
identifiers, because sqlglot cannot parse them.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from sqlglot.dialects.postgres import Postgres
from sqlglot.tokenizer_core import Token, TokenType


class _Plain(Postgres):
    """Postgres with no "command" keywords: sqlglot would swallow the rest of an
    EXPLAIN/SHOW/FETCH... as one string; the engine wants the real tokens."""

    class Tokenizer(Postgres.Tokenizer):
        COMMANDS = set()


_DIALECT = _Plain()
_HEX = re.compile(r"[0-9A-Fa-f]+")


class SplitError(ValueError):
    """The text cannot be tokenized (unterminated string or comment, bad U& escape)."""


@dataclass(frozen=True, slots=True)
class Piece:
    text: str  # the statement as the client wrote it, without the `;`
    parse_text: str  # the same with U&"..." decoded, for sqlglot
    tokens: tuple[Token, ...]  # tokens of parse_text, with offsets into `source`
    source: str = ""  # the text the token offsets refer to
    base: int = 0  # offset of parse_text within source

    @classmethod
    def alone(cls, text: str) -> Piece:
        """A piece that is a whole text by itself (the inner statement of EXPLAIN...)."""
        return cls(text, text, tuple(tokenize(text)), text, 0)

    def _replace_text(self, text: str) -> Piece:
        return Piece(text, self.parse_text, self.tokens, self.source, self.base)

    def rel(self, offset: int) -> int:
        """A token offset made relative to parse_text."""
        return offset - self.base


class _Tokenizers(threading.local):
    """One tokenizer per thread, reused: building one costs as much as tokenizing a
    short statement, and `tokenize` resets its state (a fresh token list each call)."""

    def __init__(self) -> None:
        self.tokenizer = _DIALECT.tokenizer()


_TOKENIZERS = _Tokenizers()


def tokenize(text: str) -> list[Token]:
    try:
        return list(_TOKENIZERS.tokenizer.tokenize(text))
    except Exception as e:  # sqlglot raises TokenError, and ValueError on odd input
        # Not sqlglot's message: it quotes the text around the failure, which may be a
        # search value (`ssn = '078-05-11`), and the reason goes into the audit log.
        raise SplitError("the text does not tokenize (an unterminated quote or comment?)") from e


def split(sql: str) -> list[Piece]:
    """Non-empty statements in order; raises SplitError when the text does not tokenize."""
    tokens = tokenize(sql)
    for t in tokens if "$" in sql else ():
        # PostgreSQL reads `x$$` or `a$1` as one identifier; sqlglot starts a dollar quote or a
        # parameter there. Refuse the text rather than split it differently from the server.
        if sql[t.start] == "$" and t.start > 0 and _ident_char(sql[t.start - 1]):
            raise SplitError("a `$` right after an identifier character is ambiguous")
    pieces: list[Piece] = []
    start_tok = 0
    for i in range(len(tokens) + 1):
        if i < len(tokens) and tokens[i].token_type != TokenType.SEMICOLON:
            continue
        group = tokens[start_tok:i]
        start_tok = i + 1
        if not group:
            continue
        # Keep comments before the first token out; they belong to no statement.
        base = group[0].start
        text = sql[base : group[-1].end + 1]
        parse_text = decode_unicode_identifiers(text, group, base)
        if parse_text != text:
            group = tokenize(parse_text)
            base = 0
        parse_text = oid_arrays(parse_text, group, base)
        if parse_text != text:
            pieces.append(Piece.alone(parse_text)._replace_text(text))
        else:
            # Offsets stay absolute: the parser can take these tokens with `sql` as source.
            pieces.append(Piece(text, text, tuple(group), sql, base))
    return pieces


def oid_arrays(text: str, tokens: list[Token], base: int) -> str:
    """`x::oid[]` -> `x::_oid`: sqlglot cannot parse arrays of the reg*/oid types, and
    `_oid` is PostgreSQL's own name for `oid[]` (asyncpg's introspection sends these)."""
    if "[" not in text:
        return text  # the common case, without a pass over the tokens
    out: list[str] = []
    pos = 0
    for i, t in enumerate(tokens):
        if (
            t.token_type == TokenType.OBJECT_IDENTIFIER
            and i + 2 < len(tokens)
            and tokens[i + 1].token_type == TokenType.L_BRACKET
            and tokens[i + 2].token_type == TokenType.R_BRACKET
        ):
            j = i + 1
            while j + 1 < len(tokens) and tokens[j].token_type == TokenType.L_BRACKET:
                if tokens[j + 1].token_type != TokenType.R_BRACKET:
                    break
                j += 2
            out.append(text[pos : t.start - base])
            out.append("_" + t.text.lower())
            pos = tokens[j - 1].end + 1 - base
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


def _ident_char(ch: str) -> bool:
    return ch.isalnum() or ch in "_$" or ord(ch) > 127


def decode_unicode_identifiers(text: str, tokens: list[Token], base: int) -> str:
    """Replace `U&"d\\0061ta" [UESCAPE '!']` by `"data"` (PostgreSQL's Unicode escapes)."""
    if "&" not in text:
        return text  # the common case, without a pass over the tokens
    out: list[str] = []
    pos = 0
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if (
            t.token_type == TokenType.VAR
            and t.text in ("U", "u")
            and i + 2 < len(tokens)
            and tokens[i + 1].token_type == TokenType.AMP
            and tokens[i + 1].start == t.end + 1
            and tokens[i + 2].token_type == TokenType.IDENTIFIER
            and tokens[i + 2].start == t.end + 2
        ):
            escape = "\\"
            end_tok = tokens[i + 2]
            nxt = i + 3
            if nxt + 1 < len(tokens) and tokens[nxt].text.upper() == "UESCAPE":
                escape = tokens[nxt + 1].text
                if len(escape) != 1 or escape in "+'\" \t\n" or _HEX.fullmatch(escape):
                    raise SplitError(f"invalid UESCAPE character {escape!r}")
                end_tok = tokens[nxt + 1]
                nxt += 2
            name = unescape_unicode(tokens[i + 2].text, escape)
            out.append(text[pos : t.start - base])
            out.append('"' + name.replace('"', '""') + '"')
            pos = end_tok.end + 1 - base
            i = nxt
            continue
        i += 1
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


def unescape_unicode(body: str, escape: str = "\\") -> str:
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != escape:
            out.append(ch)
            i += 1
            continue
        if body[i + 1 : i + 2] == escape:
            out.append(escape)
            i += 2
        elif body[i + 1 : i + 2] == "+" and _HEX.fullmatch(body[i + 2 : i + 8] or "x"):
            out.append(_char(body[i + 2 : i + 8]))
            i += 8
        elif len(body) >= i + 5 and _HEX.fullmatch(body[i + 1 : i + 5]):
            out.append(_char(body[i + 1 : i + 5]))
            i += 5
        else:
            raise SplitError("invalid Unicode escape in a U& string")  # its text is not logged
    return "".join(out)


def _char(hexdigits: str) -> str:
    if len(hexdigits) not in (4, 6):
        raise SplitError(f"invalid Unicode escape \\{hexdigits}")
    code = int(hexdigits, 16)
    if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        raise SplitError(f"invalid Unicode code point {hexdigits}")
    return chr(code)
