"""Hypothesis strategies for SQL literals, and a statement's literals swapped for others.

Used by test_normcache.py to make texts that differ from a corpus statement
only in literal values: `same_class` keeps each literal's lexical class (what
the shape cache would share a decision across), `any_literal` may change it.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st
from sqlglot.tokenizer_core import TokenType

from proxy.policy.split import SplitError, split
from proxy.redact import LITERALS

# Contents that look like what the engine reads values for: names of settings,
# functions and tables, keywords, SQL, quotes, comment and dollar-quote marks.
TRICKY = [
    "",
    "x",
    "north",
    "south",
    "search_path",
    "standard_conforming_strings",
    "client_encoding",
    "application_name",
    "off",
    "on",
    "SQL_ASCII",
    "query_to_xml",
    "pg_read_file",
    "lo_import",
    "dblink",
    "set_config",
    "regclass",
    "people",
    "public.people",
    "internal.secrets",
    "pg_catalog.pg_statistic",
    "SELECT * FROM people",
    "select notes from cases",
    "'; DROP TABLE people; --",
    "it's",
    "''",
    "\\",
    "a\\'b",
    "\\x41",
    '"',
    '"people"',
    "$$",
    "$q$",
    "$1",
    "/*",
    "*/",
    "--",
    ";",
    "\n",
    "\t",
    "ü",
    "日本",
    "😀",
    "1",
    "-1",
    "0x1F",
    "1e5",
    "NULL",
    "true",
]

_TEXT = st.one_of(
    st.sampled_from(TRICKY),
    st.sampled_from(TRICKY[:20]),  # the names, twice as often
    st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=12),
    st.lists(st.sampled_from(TRICKY), min_size=2, max_size=3).map("".join),
)


def plain(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def dollar(text: str, tag: str) -> str:
    """`text` dollar-quoted, the tag lengthened until it closes only at the end."""
    while (text + f"${tag}$").find(f"${tag}$") < len(text):
        tag += "q"
    return f"${tag}${text}${tag}$"


def escaped(text: str) -> str:
    return "E'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def unicode_escaped(text: str) -> str:
    body = "".join(c if c.isalnum() and ord(c) < 128 else f"\\+{ord(c):06X}" for c in text)
    return "U&'" + body + "'"


_INT = st.integers(min_value=0, max_value=10**25).map(str)
_DECIMAL = st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)).map(lambda p: f"{p[0]}.{p[1]}")
_EXPONENT = st.tuples(
    st.integers(0, 999), st.sampled_from(["e", "E", "e+", "e-"]), st.integers(0, 30)
)
# Numbers sqlglot reads as plain ones: what the shape cache may share a decision across.
PURE_NUMBER = st.one_of(
    _INT,
    _DECIMAL,
    _EXPONENT.map(lambda p: f"{p[0]}{p[1]}{p[2]}"),
    st.sampled_from(["0", "1", "1.", "00012", "42"]),
)
NUMBER = st.one_of(
    PURE_NUMBER,
    st.sampled_from([".5", "0x1F", "0X1f", "0o17", "0b101", "1_000", "1.5e3", "9" * 40]),
)
PLAIN_STRING = _TEXT.map(plain)
STRING = st.one_of(
    PLAIN_STRING,
    st.tuples(_TEXT, st.sampled_from(["", "a", "tag", "Q1"])).map(lambda p: dollar(*p)),
    _TEXT.map(escaped),
    _TEXT.map(unicode_escaped),
    _TEXT.map(lambda t: "N" + plain(t)),
    st.sampled_from(["B'101'", "b''", "X'1F'", "x'00ff'"]),
)
any_literal = st.one_of(STRING, NUMBER)


@dataclass(frozen=True)
class Slot:
    start: int
    end: int  # exclusive
    kind: str  # "string", "dollar", "number" or "other" (E'', U&'', B'', X'', N'', ...)


def slots(sql: str) -> list[Slot]:
    """The literals of `sql` as the engine's tokenizer reads them (parameter numbers excluded)."""
    try:
        pieces = split(sql)
    except SplitError:
        return []
    out: list[Slot] = []
    for p in pieces:
        if p.source is not sql:
            continue  # U&-decoded piece: token offsets refer to another text
        prev = None
        for t in p.tokens:
            if out and t.start < out[-1].end:
                continue  # a token the tokenizer made up inside another
            placeholder = (
                prev is not None
                and prev.token_type == TokenType.PARAMETER
                and prev.end + 1 == t.start
            )
            if t.token_type in LITERALS and not placeholder:
                src = sql[t.start : t.end + 1]
                if t.token_type == TokenType.STRING and src.startswith("'"):
                    kind = "string"
                elif t.token_type == TokenType.HEREDOC_STRING:
                    kind = "dollar"
                elif t.token_type == TokenType.NUMBER:
                    kind = "number"
                else:
                    kind = "other"
                out.append(Slot(t.start, t.end + 1, kind))
            prev = t
    return out


def swap(sql: str, found: list[Slot], values: list[str | None]) -> str:
    """`sql` with found[i] replaced by values[i] (None: left as written)."""
    out: list[str] = []
    pos = 0
    for slot, value in zip(found, values, strict=True):
        out.append(sql[pos : slot.start])
        out.append(sql[slot.start : slot.end] if value is None else value)
        pos = slot.end
    out.append(sql[pos:])
    return "".join(out)


def same_class(sql: str, slot: Slot) -> st.SearchStrategy[str | None]:
    """Another value of the slot's lexical class (None, as written, when it has none)."""
    if slot.kind == "string":
        return st.one_of(st.sampled_from([plain(t) for t in TRICKY[:20]]), PLAIN_STRING)
    if slot.kind == "number":
        return PURE_NUMBER
    if slot.kind == "dollar":
        src = sql[slot.start : slot.end]
        tag = src[1 : src.index("$", 1)]
        return _TEXT.map(lambda t: dollar(t, tag))
    return st.none()
