"""`oversight audit verify`: walk the hash chain and name the first record that breaks it.

Each line must be a JSON object whose `prev` is the previous record's `hash`
(64 zeros for the very first record) and whose `hash` recomputes from `prev`
and its canonical JSON. The chain runs on across rotated files in order.
What each failure means:

- hash mismatch: the record was edited (or the key is wrong);
- prev mismatch: a record before it was deleted, or records were reordered;
- no final newline: the last line was truncated (a crash mid-write, or a cut);
- not JSON / not a record: garbage was written into the file.

Deleting records from the very end of the newest file cannot be seen from the
file alone; compare the printed last hash with one kept elsewhere.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.audit.record import GENESIS, canonical, compute_hash
from proxy.audit.rotate import chain_order, discover


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.what}"


@dataclass(frozen=True, slots=True)
class Verdict:
    records: int  # records that verified (before the problem, if any)
    files: int
    last_hash: str
    problem: Problem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _lines(path: str) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, content without newline, whether it ended with a newline)."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            if raw.endswith(b"\n"):
                yield n, raw[:-1], True
            else:
                yield n, raw, False


def _check(
    record: Any, expected_prev: str | None, key: bytes | None, first: bool
) -> tuple[str | None, str]:
    """(what is wrong or None, the record's hash)."""
    if not isinstance(record, dict):
        return "not an audit record (not a JSON object)", ""
    digest, prev = record.get("hash"), record.get("prev")
    if not isinstance(digest, str) or not isinstance(prev, str):
        return "not an audit record (no hash/prev)", ""
    if expected_prev is not None and prev != expected_prev:
        if first and expected_prev == GENESIS:
            return (
                "prev is not the start of the chain: earlier records or files are missing "
                "(give the rotated files too, or allow a partial chain)",
                digest,
            )
        return "prev mismatch: a record before this one was deleted or records reordered", digest
    if compute_hash(prev, canonical(record), key) != digest:
        if first:
            hint = "wrong key, or" if key is not None else "a keyed chain (give the key), or"
            return f"hash mismatch: {hint} the record was edited", digest
        return "hash mismatch: the record was edited", digest
    return None, digest


def verify_files(
    files: list[str], key: bytes | None, *, partial: bool = False, after: str | None = None
) -> Verdict:
    """Check the chain across `files` (oldest first).

    With `partial`, the first record may continue a chain whose start is not
    given (older rotated files archived elsewhere); otherwise it must be the
    chain's first record. `after`: the first record must continue the chain
    from this hash (the last one of the file before, checked on its own).
    """
    expected: str | None = after if after is not None else None if partial else GENESIS
    count, first = 0, True
    last = expected or GENESIS
    for path in files:
        try:
            for n, content, complete in _lines(path):
                if not complete:
                    cut = "last line truncated (no final newline: crash mid-write, or cut)"
                    return Verdict(count, len(files), last, Problem(path, n, cut))
                try:
                    record = orjson.loads(content)
                except orjson.JSONDecodeError:
                    bad = "empty line" if not content.strip() else "not JSON"
                    return Verdict(count, len(files), last, Problem(path, n, bad))
                what, digest = _check(record, expected, key, first)
                if what is not None:
                    return Verdict(count, len(files), last, Problem(path, n, what))
                expected, last, first = digest, digest, False
                count += 1
        except OSError as exc:
            return Verdict(count, len(files), last, Problem(path, 0, f"cannot read: {exc}"))
    return Verdict(count, len(files), last, None)


def cmd_verify(
    files: list[str], key: bytes | None, *, discover_rotated: bool = False, partial: bool = False
) -> int:
    """Print the verdict; exit status 0 when the chain is intact, 1 otherwise.

    `discover_rotated`: each given path is a live file; its rotated siblings
    are checked before it.
    """
    if discover_rotated:
        found: list[str] = []
        for path in files:
            found.extend(p for p in discover(path) if p not in found)
        files = found
    files = chain_order(files)
    if not files:
        print("error: no audit files to verify", file=sys.stderr)
        return 1
    verdict = verify_files(files, key, partial=partial)
    if verdict.problem is None:
        print(f"ok: {verdict.records} records in {verdict.files} files, chain intact")
        print(f"last hash: {verdict.last_hash}")
        return 0
    print(f"broken: {verdict.problem}")
    print(f"{verdict.records} records before it verify")
    return 1
