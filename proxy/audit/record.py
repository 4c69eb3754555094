"""One audit record as bytes: field order for people, canonical form and hash chain for proof.

A line on disk keeps a stable, readable field order (ts, event, session, user
first, then the rest of DESIGN.md's fields, then anything else sorted, then
prev and hash). The hash never depends on that order: it covers `prev` plus
the canonical JSON of the record without `hash` (orjson, keys sorted), so a
verifier can rebuild it from the parsed line alone.

    hash = HMAC-SHA256(key, prev + canonical)   with OVERSIGHT_AUDIT_KEY
    hash = SHA-256(prev + canonical)            without a key
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from proxy.statement import CORE, StatementRecord

GENESIS = "0" * 64

# Readability order of a line; fields not listed follow sorted, then prev, hash.
FIELD_ORDER: tuple[str, ...] = CORE  # the statement record's core fields, in order
_ORDERED = frozenset(FIELD_ORDER) | {"prev", "hash"}


def format_ts(when: datetime) -> str:
    """RFC 3339 UTC with microseconds: 2026-11-28T02:31:07.123456Z."""
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when.isoformat(timespec="microseconds") + "Z"


_second: list[Any] = [-1, ""]  # the last whole second formatted, and its text


def wall_ts(epoch: float) -> str:
    """format_ts for a time.time() value, without building a datetime (a hot path).

    The date and time of day are formatted once per second and reused.
    """
    sec = int(epoch // 1)
    if sec != _second[0]:
        _second[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _second[0] = sec
    return f"{_second[1]}.{int((epoch - sec) * 1_000_000):06d}Z"


def parse_ts(text: str) -> datetime:
    """Parse an RFC 3339 timestamp (Z or offset) into an aware UTC datetime."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _default(value: Any) -> Any:
    # Sets, bytes, enums without a JSON form: the text is what the record keeps.
    if isinstance(value, (set, frozenset)):
        return sorted(str(v) for v in value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    return str(value)


def _scrub(value: Any) -> Any:
    """Make any value orjson-safe: lone surrogates escaped, huge ints as text."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, Mapping):
        return {str(_scrub(k)): _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return _scrub(_default(value))


def canonical(record: Mapping[str, Any]) -> bytes:
    """Sorted-key JSON of the record without its `hash` (what the hash covers)."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def compute_hash(prev: str, canon: bytes, key: bytes | None) -> str:
    message = prev.encode("ascii", "replace") + canon
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def ordered(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record's fields in display order (see module docstring)."""
    out = {k: record[k] for k in FIELD_ORDER if k in record}
    for k in sorted(k for k in record if k not in _ORDERED):
        out[k] = record[k]
    for k in ("prev", "hash"):
        if k in record:
            out[k] = record[k]
    return out


def seal(
    record: Mapping[str, Any] | StatementRecord, prev: str, key: bytes | None
) -> tuple[bytes, str]:
    """Chain one record after `prev`: returns (line with trailing newline, its hash).

    The hash covers exactly what a verifier rebuilds from the parsed line:
    orjson writes tuples as lists, datetimes and enums as text, and `_default`
    turns anything else into text, so serializing the record itself with
    sorted keys gives the same bytes as serializing the line parsed back
    (tests/unit/test_audit_chain.py checks odd types), without parsing it.
    Values orjson cannot write (lone surrogates, huge ints) are scrubbed first.
    """
    if isinstance(record, StatementRecord):
        body = record.audit_fields()  # already in display order
    else:
        body = ordered(record)
        body.pop("hash", None)
    body["prev"] = prev
    try:
        head = orjson.dumps(body, default=_default)
        canon = orjson.dumps(body, default=_default, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        body = _scrub(body)
        head = orjson.dumps(ordered(body))
        canon = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    digest = compute_hash(prev, canon, key)
    # `prev` is the last field so far; `hash` goes after it.
    return b'%s,"hash":"%s"}\n' % (head[:-1], digest.encode()), digest
