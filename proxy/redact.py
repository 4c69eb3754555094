"""The one literal redactor: SQL text with every literal replaced by `?`.

Search terms are often the sensitive part of a statement (`WHERE ssn = '...'`),
so the audit log keeps a statement's shape but not its values, and the
extraction detectors count statements by that shape. Both go through `redact`:
the policy engine calls it on the tokens it already has (and gets a
fingerprint and the literals too), the audit trail calls `redact_sql` for
text the engine never tokenized (rewritten SQL, statements refused before
parsing). Working on tokens covers every statement kind alike (utility
commands included); everything but literals is copied from the original text
untouched (layout, comments, identifiers). When the tokenizer gives up (an
unterminated quote, say), a small scanner over quoted strings and numbers
does the same job.

No cache here: the caller that sees repeats (proxy/recorder.py) has one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import SqlglotError
from sqlglot.tokenizer_core import Token, TokenType

_DIALECT = Postgres()
_MAYBE_LITERAL = re.compile(r"[0-9'$]")
# Past this size the scanner, about 2.5x faster than the tokenizer, keeps the loop stall short
# (a 1 MB multi-row INSERT: ~0.5 s instead of ~1.3 s here).
_TOKENIZE_MAX = 64 * 1024
_STRINGS = frozenset(
    {
        TokenType.STRING,
        TokenType.NATIONAL_STRING,
        TokenType.RAW_STRING,
        TokenType.HEX_STRING,
        TokenType.BIT_STRING,
        TokenType.BYTE_STRING,
        TokenType.HEREDOC_STRING,
        TokenType.UNICODE_STRING,
    }
)
LITERALS = _STRINGS | {TokenType.NUMBER}
_QUOTED_PREFIXES = ("E'", "N'", "X'", "B'", "U&")

# Fallback scanner: each alternative is tried at a position, left to right.
_SCAN = re.compile(
    r"""
      (?P<ident>"(?:[^"]|"")*"?)                          # quoted identifier: keep
    | (?P<line>--[^\n]*)                                  # comment: keep
    | (?P<block>/\*.*?(?:\*/|\Z))                         # block comment: keep
    | (?P<param>\$\d+)                                    # bind parameter: keep
    | (?P<dollar>\$\$.*?(?:\$\$|\Z))                       # $$ ... $$
    | (?P<tagged>\$(?P<tag>[A-Za-z_][A-Za-z_0-9]*)\$.*?(?:\$(?P=tag)\$|\Z))
    | (?P<estr>[eE]'(?:[^'\\]|\\.|'')*(?:'|\Z))
    | (?P<str>(?:[uU]&|[bBxXnN])?'(?:[^']|'')*(?:'|\Z))
    | (?P<word>[A-Za-z_][A-Za-z_0-9$]*)                   # identifier or keyword: keep
    | (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    """,
    re.VERBOSE | re.DOTALL,
)


def _scan_replace(match: re.Match[str]) -> str:
    kind = match.lastgroup
    if kind in ("dollar", "tagged", "estr", "str", "num"):
        return "?"
    return match.group(0)


def redact_fallback(sql: str) -> str:
    """Regex-based redaction for text the tokenizer cannot read."""
    return _SCAN.sub(_scan_replace, sql)


def redact(text: str, tokens: Sequence[Token], base: int = 0) -> tuple[str, str, tuple[str, ...]]:
    """(redacted text, fingerprint, literals) of one statement; `base`: offset of text.

    The fingerprint is a short stable hash of the normalized token stream
    (keywords upper-cased, literals as `?`), so statements that differ only
    in their values share it.
    """
    out: list[str] = []
    norm: list[str] = []
    literals: list[str] = []
    pos = 0
    prev: Token | None = None
    for t in tokens:
        start, end = t.start - base, t.end + 1 - base
        if start < pos:  # a token the tokenizer synthesized: nothing of its own in the text
            continue
        if t.token_type == TokenType.NUMBER and prev is not None and _glued(prev, t, "param"):
            norm.append(t.text)  # the 1 of $1 is a parameter number, not a value
        elif t.token_type in LITERALS:
            raw = text[start:end]
            if t.token_type in _STRINGS and not _quoted(raw):
                # The unparsed remainder of a generic command (SHOW x, VACUUM t):
                # keep its shape, hide the literals inside it.
                replacement = redact_fallback(raw)
                norm.append(replacement)
            else:
                # A minus sign glued to a number is part of the literal.
                if t.token_type == TokenType.NUMBER and prev is not None and _glued(prev, t, "-"):
                    norm.pop()
                replacement = "?"
                literals.append(t.text)
                norm.append("?")
            out.append(text[pos:start])
            out.append(replacement)
            pos = end
        elif t.token_type in (TokenType.VAR, TokenType.IDENTIFIER):
            norm.append(t.text if t.token_type == TokenType.IDENTIFIER else t.text.lower())
        else:
            norm.append(t.text.upper())
        prev = t
    out.append(text[pos:])
    digest = hashlib.blake2b(" ".join(norm).encode(), digest_size=8).hexdigest()
    return "".join(out), digest, tuple(literals)


def redact_sql(sql: str) -> str:
    """`sql` with every string and numeric literal replaced by `?`."""
    if not _MAYBE_LITERAL.search(sql):
        return sql  # every literal has a quote, a dollar sign or a digit
    if len(sql) > _TOKENIZE_MAX:
        return redact_fallback(sql)
    try:
        tokens = _DIALECT.tokenize(sql)
    except SqlglotError:
        return redact_fallback(sql)
    return redact(sql, tokens)[0]


# SQLSTATE class 22 (data exception): PostgreSQL quotes the offending value,
# `22P02: invalid input syntax for type bigint: "078-05-1120"`.
_ERROR_VALUE = re.compile(r'"(?:[^"]|"")*"')


def redact_error(error: str | None) -> str | None:
    """A statement's error as the audit log keeps it: a data exception's quoted value
    (the search value the server could not read) replaced by `?`."""
    if error is None or not error.startswith("22"):
        return error
    return _ERROR_VALUE.sub('"?"', error)


def _quoted(raw: str) -> bool:
    return raw[:1] in ("'", "$") or raw[:2].upper() in _QUOTED_PREFIXES


def _glued(prev: Token, t: Token, what: str) -> bool:
    """`prev` is a `$` (what="param") or a minus sign (what="-") right before `t`."""
    kind = TokenType.PARAMETER if what == "param" else TokenType.DASH
    return prev.token_type == kind and prev.end + 1 == t.start
