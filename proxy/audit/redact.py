"""Replace SQL literals with `?` before a statement reaches the audit log.

Search terms are often the sensitive part of a statement (`WHERE ssn = '...'`),
so the `sql` and `rewritten` fields keep the statement's shape but not its
values. The sqlglot postgres tokenizer finds the literals and everything else
is copied from the original text untouched (layout, comments, identifiers).
When the tokenizer gives up (an unterminated quote, say), a small scanner
over quoted strings and numbers does the same job.
"""

from __future__ import annotations

import re
from functools import lru_cache

from sqlglot import TokenType
from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import SqlglotError

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


@lru_cache(maxsize=2048)
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
    out: list[str] = []
    pos = 0
    prev_type: TokenType | None = None
    prev_end = -2
    for tok in tokens:
        start, end = tok.start, tok.end + 1
        if start < pos:  # a token the tokenizer synthesized; nothing to copy
            continue
        text = sql[start:end]
        if tok.token_type in _STRINGS:
            if text[:1] in "'$" or text[:2].upper() in ("E'", "N'", "X'", "B'", "U&"):
                replacement = "?"
            else:
                # The unparsed remainder of a generic command (SHOW x, DO ...).
                replacement = redact_fallback(text)
        elif tok.token_type == TokenType.NUMBER:
            is_param = prev_type == TokenType.PARAMETER and prev_end == start
            replacement = text if is_param else "?"
        else:
            replacement = text
        out.append(sql[pos:start])
        out.append(replacement)
        pos = end
        prev_type, prev_end = tok.token_type, end
    out.append(sql[pos:])
    return "".join(out)
