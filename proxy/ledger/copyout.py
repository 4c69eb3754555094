"""Subjects' keys read out of `COPY table TO STDOUT`: no RowDescription, so the statement says.

COPY's output names no column origins; for the plain form, `COPY [ONLY]
table [(columns)] TO STDOUT [options]`, the columns are the table's (all,
in order, or those listed) and the options say how a row is written. That
is what `copy_plan` reads from the statement text (its own small scanner:
the form is narrow, and anything it does not recognize is not read, never
guessed at). `COPY (query) TO STDOUT` is not read: its columns have no
origin the proxy could name without planning the query.

`CopyReader` then reads each CopyData (one row each, as PostgreSQL sends
them) in the text, CSV or binary format and hands the watched fields' values
to the same per-column memo, hash and tally as `RowReader`.
"""

from __future__ import annotations

import csv
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from proxy.ledger.rows import Column, Decoys, Owner, Read, RowReader

# `COPY [ONLY] name [(cols)] TO STDOUT rest`; names bare or double-quoted.
_NAME = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_COPY = re.compile(
    rf"\s*copy\s+(?:only\s+)?(?P<table>{_NAME}(?:\s*\.\s*{_NAME})?)\s*"
    rf"(?:\((?P<cols>[^()]*)\))?\s*to\s+stdout\b(?P<rest>.*)",
    re.IGNORECASE | re.DOTALL,
)
_IDENT = re.compile(_NAME)
_OPTION = {  # new-style `(opt value, ...)` and the legacy forms alike
    "delimiter": re.compile(r"\bdelimiter\s+(?:as\s+)?'((?:[^']|'')*)'", re.IGNORECASE),
    "null": re.compile(r"\bnull\s+(?:as\s+)?'((?:[^']|'')*)'", re.IGNORECASE),
    "quote": re.compile(r"\bquote\s+(?:as\s+)?'((?:[^']|'')*)'", re.IGNORECASE),
    "escape": re.compile(r"\bescape\s+(?:as\s+)?'((?:[^']|'')*)'", re.IGNORECASE),
}
_CSV = re.compile(r"\bcsv\b", re.IGNORECASE)
_HEADER = re.compile(r"\bheader\b(?!\s*(?:false|off|0)\b)", re.IGNORECASE)
_UNSURE = re.compile(r"\bencoding\b", re.IGNORECASE)  # written in another encoding
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_I16 = struct.Struct("!h").unpack_from
_I32 = struct.Struct("!i").unpack_from
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_BACKSLASH = re.compile(r"\\(x[0-9A-Fa-f]{1,2}|[0-7]{1,3}|.)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class CopyTable:
    """A watched table's columns in order, each with its subject (or None) and type OID."""

    columns: tuple[str, ...]
    subjects: tuple[str | None, ...]
    types: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CopyPlan:
    """What a COPY TO STDOUT writes: the watched columns and how a row is written."""

    cols: tuple[Column, ...]  # index: position in the COPY's output
    csv: bool = False
    delimiter: str = "\t"
    null: str = "\\N"
    quote: str = '"'
    escape: str = '"'
    header: bool = False


def _ident(text: str) -> str:
    text = text.strip()
    return text[1:-1].replace('""', '"') if text.startswith('"') else text.lower()


def _option(rest: str, name: str) -> str | None:
    m = _OPTION[name].search(rest)
    return m.group(1).replace("''", "'") if m else None


def copy_plan(
    sql: str,
    tables: Mapping[str, CopyTable],
    resolve: Callable[[str], Sequence[str]],
    binary: bool,
) -> CopyPlan | None:
    """The watched columns of `sql`'s output, if it is a plain COPY of a watched table.

    `resolve(name)`: the qualified names an unqualified table name may mean,
    in search_path order (the first is what the server reads).
    """
    m = _COPY.fullmatch(sql.strip().rstrip(";"))
    if m is None or _UNSURE.search(m.group("rest")):
        return None
    parts = [_ident(p) for p in _IDENT.findall(m.group("table"))]
    names = [".".join(parts)] if len(parts) == 2 else list(resolve(parts[0]))[:1]
    table = tables.get(names[0]) if names else None
    if table is None:
        return None
    if m.group("cols") is not None:
        listed = [_ident(c) for c in m.group("cols").split(",")]
        if any(c not in table.columns for c in listed):
            return None
        order = [table.columns.index(c) for c in listed]
    else:
        order = list(range(len(table.columns)))
    cols = tuple(
        Column(i, s, table.types[j], int(binary))
        for i, j in enumerate(order)
        if (s := table.subjects[j]) is not None
    )
    if not cols:
        return None
    rest, is_csv = m.group("rest"), bool(_CSV.search(m.group("rest")))
    delimiter = _option(rest, "delimiter") or ("," if is_csv else "\t")
    quote = _option(rest, "quote") or '"'
    null = _option(rest, "null")
    return CopyPlan(
        cols,
        csv=is_csv,
        delimiter=delimiter,
        null=("" if is_csv else "\\N") if null is None else null,
        quote=quote,
        escape=_option(rest, "escape") or quote,
        header=bool(_HEADER.search(rest)),
    )


def _unescape(field: str) -> str:
    def one(m: re.Match[str]) -> str:
        e = m.group(1)
        if e[0] == "x" and len(e) > 1:
            return chr(int(e[1:], 16))
        if e[0] in "01234567":
            return chr(int(e, 8) & 0xFF)
        return _ESCAPES.get(e, e)

    return _BACKSLASH.sub(one, field)


def _split_text(line: str, delimiter: str) -> list[str]:
    """Fields of a text-format line; a delimiter after a backslash is data."""
    if "\\" not in line:
        return line.split(delimiter)
    out, cur, i = [], [], 0
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line):
            cur.append(line[i : i + 2])
            i += 2
            continue
        if c == delimiter:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return out


class CopyReader:
    """One COPY TO STDOUT's CopyData rows: the watched fields, hashed into `owner.subjects`."""

    __slots__ = ("_binary", "_header", "_plan", "_read", "_rows", "_signature")

    def __init__(
        self,
        plan: CopyPlan,
        binary: bool,
        key: bytes,
        read: Read,
        owner: Owner,
        decoys: Decoys | None = None,
    ) -> None:
        self._plan = plan
        self._read = read
        self._header = plan.header and not binary  # a header line to skip
        self._binary = binary
        self._signature = binary  # the binary header, before the first tuple
        # The binary form reads fields as a DataRow does; text and CSV reuse its memo and hash.
        self._rows = RowReader(plan.cols, key, read, owner, decoys)

    def __bool__(self) -> bool:
        return bool(self._rows)

    def row(self, buf: bytes, pos: int, end: int) -> None:
        """Read the CopyData whose body is `buf[pos:end]`."""
        if self._binary:
            if self._signature and buf.startswith(_SIGNATURE, pos):
                try:
                    (ext,) = _I32(buf, pos + 15)
                except struct.error:
                    return
                pos += 19 + max(ext, 0)
                self._signature = False
            if pos + 2 <= end and _I16(buf, pos)[0] >= 0:  # -1: the trailer
                self._rows.row(buf, pos)
            return
        if self._header:
            self._header = False
            return
        line = self._read(buf[pos:end])
        if line.endswith("\n"):
            line = line[:-2] if line.endswith("\r\n") else line[:-1]
        fields = self._fields(line)
        if fields is not None:
            self._rows.values(fields)

    def _fields(self, line: str) -> list[str | None] | None:
        p = self._plan
        if p.csv:
            try:
                raw = next(
                    csv.reader(
                        [line],
                        delimiter=p.delimiter,
                        quotechar=p.quote,
                        escapechar=None if p.escape == p.quote else p.escape,
                        doublequote=p.escape == p.quote,
                        strict=True,
                    )
                )
            except (csv.Error, StopIteration, TypeError):
                return None
            return [None if f == p.null else f for f in raw]
        return [
            None if f == p.null else _unescape(f) if "\\" in f else f
            for f in _split_text(line, p.delimiter)
        ]
