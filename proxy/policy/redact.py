"""Literal-free forms of a statement for the audit log and the extraction detectors.

Works on tokens rather than the tree, so it covers every statement kind the
same way (utility commands included) and costs one pass: `redacted` is the
original text with each literal replaced by `?`, `fingerprint` a short stable
hash of the normalized token stream, `literals` the values in order.
"""

from __future__ import annotations

import hashlib

from sqlglot.tokenizer_core import Token, TokenType

LITERALS = frozenset(
    {
        TokenType.STRING,
        TokenType.NUMBER,
        TokenType.NATIONAL_STRING,
        TokenType.BYTE_STRING,
        TokenType.BIT_STRING,
        TokenType.HEX_STRING,
        TokenType.HEREDOC_STRING,
        TokenType.RAW_STRING,
        TokenType.UNICODE_STRING,
    }
)


def redact(text: str, tokens: tuple[Token, ...], base: int = 0) -> tuple[str, str, tuple[str, ...]]:
    """(redacted text, fingerprint, literals) of one statement; `base`: offset of text."""
    out: list[str] = []
    norm: list[str] = []
    literals: list[str] = []
    pos = 0
    prev: Token | None = None
    for t in tokens:
        if t.token_type == TokenType.NUMBER and prev is not None and _is_placeholder(prev, t):
            norm.append(t.text)  # the 1 of $1 is a parameter number, not a value
        elif t.token_type in LITERALS:
            # A minus sign glued to a number is part of the literal.
            if t.token_type == TokenType.NUMBER and prev is not None and _is_sign(prev, t):
                norm.pop()
            out.append(text[pos : t.start - base])
            out.append("?")
            pos = t.end + 1 - base
            literals.append(t.text)
            norm.append("?")
        elif t.token_type in (TokenType.VAR, TokenType.IDENTIFIER):
            norm.append(t.text if t.token_type == TokenType.IDENTIFIER else t.text.lower())
        else:
            norm.append(t.text.upper())
        prev = t
    out.append(text[pos:])
    digest = hashlib.blake2b(" ".join(norm).encode(), digest_size=8).hexdigest()
    return "".join(out), digest, tuple(literals)


def _is_sign(prev: Token, t: Token) -> bool:
    return prev.token_type == TokenType.DASH and prev.end + 1 == t.start


def _is_placeholder(prev: Token, t: Token) -> bool:
    return prev.token_type == TokenType.PARAMETER and prev.end + 1 == t.start
