"""The session's stated purpose, `oversight.purpose` (DESIGN.md, Purpose; issue #17).

A session says why it is looking with `SET [LOCAL] oversight.purpose = '...'`,
`set_config('oversight.purpose', ...)` or `-c oversight.purpose=...` in its
startup options. The value follows PostgreSQL's SET semantics (proxy/gucs.py
tracks it like search_path), is forwarded to the server (a custom setting is a
placeholder there), is written in every audit record and can be matched by
rules (`match: {purposes: [...]}`) and demanded by `defaults.require_purpose`.

This module holds what the rules, the engine and the startup share: the name,
the limits a purpose must keep, and glob matching.
"""

from __future__ import annotations

import re
from functools import lru_cache

NAME = "oversight.purpose"

# Long enough for a case number and a sentence; short enough for every record.
MAX_LENGTH = 200


def problem(value: str) -> str | None:
    """Why `value` cannot be a purpose, or None. The empty string is "no purpose"."""
    if len(value) > MAX_LENGTH:
        return f"a purpose is at most {MAX_LENGTH} characters (this one has {len(value)})"
    if any(ch in value for ch in "\r\n\x0b\x0c\x85\u2028\u2029"):
        return "a purpose is one line"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        return "a purpose holds no control characters"
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in value) or "\ufffd" in value:
        # U+FFFD: what the session's decoder puts in place of bytes it could not read.
        return "a purpose must be valid UTF-8"
    return None


@lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    """`CASE-*`: `*` is any run of characters (dots and spaces too), `?` one character."""
    out = [".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern]
    return re.compile("".join(out), re.DOTALL)


def fits(purpose: str, globs: list[str]) -> bool:
    """Does the purpose match one of the globs? No purpose (empty) matches none."""
    return bool(purpose) and any(_glob(g).fullmatch(purpose) for g in globs)
