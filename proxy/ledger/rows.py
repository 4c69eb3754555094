"""Subjects' keys read out of result rows: which columns carry one, and their values hashed.

A RowDescription names each result column's origin, (table OID, attnum),
whenever the column is a plain reference to a table column (through
subqueries too, so a masking rewrite that passes the key through keeps its
origin, and one that computes it does not). `described` picks the columns
whose origin is a watched key or `via` column; `RowReader` then reads only
those fields of each DataRow, skipping the others by their lengths, and
adds each distinct value's ledger hash to the statement's tally.

Values are hashed as PostgreSQL prints them in text: text-format fields are
the client encoding's bytes; binary fields are decoded for the types a key
usually has (integers, oid, text types, uuid). A binary field of another
type (numeric, a date...) cannot be printed as the server would without
its type's output function, so it is not read (`undecodable` says which).

Cost: nothing for a statement without watched columns (the session never
makes a reader). Per row of one with them: walking the lengths up to the
last watched field and a dictionary look-up of its raw bytes; a value not
met before in the statement is decoded and hashed (one HMAC), until the
tally's list is full; past that, new values are only counted. So past
1,000 the count is approximate: a value listed through another column of
the same subject, or repeated after the list filled, may count again.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from proxy.ledger.tally import CAP, Tally

Read = Callable[[bytes], str]  # the client encoding's reader (invalid bytes as U+FFFD)

INT8, INT2, INT4, TEXT, OID = 20, 21, 23, 25, 26
NAME, BPCHAR, VARCHAR, UUID = 19, 1042, 1043, 2950
# Catalog type names (proxy/catalog.py `Relation.types`) of the types decoded in binary.
TYPE_OIDS = {
    "int2": INT2, "int4": INT4, "int8": INT8, "oid": OID, "text": TEXT, "name": NAME,
    "bpchar": BPCHAR, "varchar": VARCHAR, "uuid": UUID,
}  # fmt: skip
_TEXT_TYPES = frozenset({TEXT, NAME, BPCHAR, VARCHAR})
_INT_TYPES = frozenset({INT2, INT4, INT8})

_I16 = struct.Struct("!h").unpack_from
_I32 = struct.Struct("!i").unpack_from
# After a field's name: table OID, attnum, type OID, type length, type modifier, format.
_FIELD = struct.Struct("!IhIhih")


@dataclass(frozen=True, slots=True)
class Column:
    """A result column that carries a subject's key."""

    index: int  # position in the row
    subject: str
    type_oid: int
    fmt: int = 0  # 0 text, 1 binary


def described(body: bytes, columns: Mapping[tuple[int, int], str]) -> tuple[Column, ...]:
    """The columns of a RowDescription body whose origin `columns` maps to a subject.

    A malformed body yields none: the upstream is trusted to send good ones,
    and a bad one must not end the session.
    """
    out: list[Column] = []
    try:
        (count,) = _I16(body, 0)
        p = 2
        for i in range(count):
            p = body.index(b"\0", p) + 1
            table, attnum, type_oid, _, _, fmt = _FIELD.unpack_from(body, p)
            p += _FIELD.size
            subject = columns.get((table, attnum))
            if subject is not None:
                out.append(Column(i, subject, type_oid, fmt))
    except (ValueError, struct.error):
        return ()
    return tuple(out)


def bind_result_formats(body: bytes) -> tuple[int, ...]:
    """The result-column format codes of a Bind body (none: all text)."""
    try:
        p = body.index(b"\0", body.index(b"\0") + 1) + 1  # past the portal and statement names
        (n,) = _I16(body, p)
        p += 2 + 2 * max(n, 0)  # parameter formats
        (n,) = _I16(body, p)
        p += 2
        for _ in range(max(n, 0)):  # parameter values
            (size,) = _I32(body, p)
            p += 4 + max(size, 0)
        (n,) = _I16(body, p)
        return struct.unpack_from(f"!{max(n, 0)}h", body, p + 2)
    except (ValueError, struct.error):
        return ()


def with_formats(cols: tuple[Column, ...], formats: tuple[int, ...]) -> tuple[Column, ...]:
    """A statement's columns as a Bind asked for them: none, one for all, or one each."""
    out = []
    for c in cols:
        if not formats:
            fmt = 0
        elif len(formats) == 1:
            fmt = formats[0]
        else:
            fmt = formats[c.index] if c.index < len(formats) else 0
        out.append(c if c.fmt == fmt else Column(c.index, c.subject, c.type_oid, fmt))
    return tuple(out)


def _int(raw: bytes) -> str | None:
    return str(int.from_bytes(raw, "big", signed=True)) if len(raw) in (2, 4, 8) else None


def _oid(raw: bytes) -> str | None:
    return str(int.from_bytes(raw, "big")) if len(raw) == 4 else None


def _uuid(raw: bytes) -> str | None:
    return str(uuid.UUID(bytes=raw)) if len(raw) == 16 else None


def decoder(col: Column, read: Read) -> Callable[[bytes], str | None] | None:
    """How to print `col`'s values as the server does in text; None when it cannot."""
    if col.fmt == 0 or col.type_oid in _TEXT_TYPES:
        return read  # text format, or a text type's binary form (its bytes)
    if col.type_oid in _INT_TYPES:
        return _int
    if col.type_oid == OID:
        return _oid
    if col.type_oid == UUID:
        return _uuid
    return None


def raw_decoys(col: Column, decoys: frozenset[str]) -> frozenset[bytes] | None:
    """The canary keys as `col`'s values arrive on the wire, so a row past the cap
    is checked by one set look-up instead of a decode; None: decode to compare."""
    if col.fmt == 0 or col.type_oid in _TEXT_TYPES:
        # ASCII reads alike in every client encoding Oversight supports.
        return frozenset(k.encode() for k in decoys) if all(k.isascii() for k in decoys) else None
    out: set[bytes] = set()
    for k in decoys:
        if col.type_oid in _INT_TYPES or col.type_oid == OID:
            size = {INT2: 2, INT4: 4, INT8: 8, OID: 4}[col.type_oid]
            try:
                n = int(k)
                if str(n) == k:  # the server prints no other form of it
                    out.add(n.to_bytes(size, "big", signed=col.type_oid != OID))
            except (ValueError, OverflowError):
                pass  # cannot be a value of this column
        elif col.type_oid == UUID:
            try:
                u = uuid.UUID(k)
                if str(u) == k:
                    out.add(u.bytes)
            except ValueError:
                pass
        else:
            return None
    return frozenset(out)


def undecodable(cols: tuple[Column, ...]) -> list[Column]:
    """Columns a reader skips: binary values of a type it cannot print."""
    return [c for c in cols if decoder(c, bytes.decode) is None]


class Owner(Protocol):
    """What holds the statement's tally (the session's `Running`)."""

    subjects: Tally | None


_Plan = tuple[
    int,
    str,
    Callable[[bytes], str | None],
    "hmac.HMAC",
    dict[bytes | str, None],
    frozenset[bytes] | None,
]
Decoys = Mapping[str, frozenset[str]]  # subject id -> its canary keys as text


class RowReader:
    """One statement's DataRows: the watched fields decoded, hashed into `owner.subjects`."""

    __slots__ = ("_decoys", "_owner", "_plan")

    def __init__(
        self,
        cols: tuple[Column, ...],
        key: bytes,
        read: Read,
        owner: Owner,
        decoys: Decoys | None = None,
    ) -> None:
        """`decoys`: canary keys, still looked for past the cap (`_past_cap`)."""
        self._owner = owner
        self._decoys = decoys or {}
        bases: dict[str, hmac.HMAC] = {}
        plan: list[_Plan] = []
        for c in sorted(cols, key=lambda c: c.index):
            decode = decoder(c, read)
            if decode is None:
                continue
            # subject_hash(key, subject, value): HMAC over subject \0 "" \0 value.
            base = bases.get(c.subject)
            if base is None:
                prefix = c.subject.encode() + b"\x00\x00"
                base = bases[c.subject] = hmac.new(key, prefix, hashlib.sha256)
            raw = raw_decoys(c, self._decoys.get(c.subject, frozenset()))
            plan.append((c.index, c.subject, decode, base, {}, raw))
        self._plan = tuple(plan)

    def __bool__(self) -> bool:
        return bool(self._plan)

    def row(self, buf: bytes, pos: int, end: int = 0) -> None:
        """Read the DataRow whose body starts at `buf[pos]` (its 5-byte header skipped).

        Each column remembers the raw values it handed to the tally, up to
        the cap: a repeat costs a dictionary look-up; past the cap a new
        value is counted without being decoded or hashed.
        """
        try:
            (count,) = _I16(buf, pos)
            p = pos + 2
            i = 0
            for index, subject, decode, base, memo, raws in self._plan:
                if index >= count:
                    return
                while i < index:  # skip the fields before it by their lengths
                    (n,) = _I32(buf, p)
                    p += 4 + n if n > 0 else 4
                    i += 1
                (n,) = _I32(buf, p)
                p += 4
                i += 1
                if n < 0:
                    continue  # NULL
                raw = buf[p : p + n]
                p += n
                if raw in memo:
                    continue
                tally = self._owner.subjects
                if len(memo) >= CAP and tally is not None:
                    if raws is not None and raw not in raws:
                        tally.seen_unlisted(subject)  # no decoy has this wire form
                    else:
                        self._past_cap(tally, subject, base, decode, raw)
                    continue
                value = decode(raw)
                if value is None:
                    continue
                if tally is None:
                    tally = self._owner.subjects = Tally()
                h = base.copy()
                h.update(value.encode("utf-8", "surrogatepass"))
                tally.seen(subject, h.hexdigest()[:32])
                memo[raw] = None
        except (ValueError, struct.error):
            return  # a malformed row: what was read counts, the rest is not guessed at

    def _past_cap(
        self,
        tally: Tally,
        subject: str,
        base: hmac.HMAC,
        decode: Callable[[bytes], str | None] | None,
        raw: bytes | str,
    ) -> None:
        """A new value past the cap: counted, not hashed, unless it is a canary key
        (decoded only when the subject has canaries)."""
        decoys = self._decoys.get(subject) if self._decoys else None
        if decoys:
            value = decode(raw) if decode is not None and isinstance(raw, bytes) else raw
            if isinstance(value, str) and value in decoys:
                h = base.copy()
                h.update(value.encode("utf-8", "surrogatepass"))
                tally.seen_decoy(subject, h.hexdigest()[:32])
                return
        tally.seen_unlisted(subject)

    def values(self, fields: Sequence[str | None]) -> None:
        """Read a row already split into text values (COPY's text and CSV forms)."""
        for index, subject, _, base, memo, _raws in self._plan:
            if index >= len(fields):
                return
            value = fields[index]
            if value is None or value in memo:
                continue
            tally = self._owner.subjects
            if len(memo) >= CAP and tally is not None:
                self._past_cap(tally, subject, base, None, value)
                continue
            if tally is None:
                tally = self._owner.subjects = Tally()
            h = base.copy()
            h.update(value.encode("utf-8", "surrogatepass"))
            tally.seen(subject, h.hexdigest()[:32])
            memo[value] = None
