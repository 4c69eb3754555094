"""Audit files on disk: rotated names, finding siblings, reading the chain head back.

A live file `oversight-audit.jsonl` is renamed on rotation to
`oversight-audit.jsonl.2026-11-28T02-31-07.123456` (UTC time of the rotation;
the fixed-width stamp sorts chronologically as text). The chain simply goes
on in the new file, so verify walks the rotated files in order, then the live one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

import orjson

from proxy.audit.record import GENESIS, parse_ts

_STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.\d{6}(-\d+)?$")
_ROTATED = re.compile(r"^(.*)\.(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.\d{6}(?:-\d+)?)$")
_TAIL_CHUNK = 64 * 1024


def rotated_name(path: str, when: datetime) -> str:
    """A free name for `path` rotated at `when`; a counter keeps it unique."""
    stamp = when.astimezone(UTC).strftime("%Y-%m-%dT%H-%M-%S.%f")
    name = f"{path}.{stamp}"
    n = 0
    while os.path.exists(name):
        n += 1
        name = f"{path}.{stamp}-{n}"
    return name


def _stamp_key(stamp: str) -> tuple[str, int]:
    # "2026-11-28T02-31-07.123456-2": the uniqueness counter sorts numerically.
    base, _, counter = stamp.partition(".")
    micros, _, n = counter.partition("-")
    return f"{base}.{micros}", int(n or 0)


def rotated_siblings(path: str) -> list[str]:
    """Rotated files of `path`, oldest first."""
    directory = os.path.dirname(path) or "."
    prefix = os.path.basename(path) + "."
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    stamps = [n[len(prefix) :] for n in names if n.startswith(prefix)]
    stamps = [s for s in stamps if _STAMP.match(s)]
    stamps.sort(key=_stamp_key)
    return [os.path.join(os.path.dirname(path), prefix + s) for s in stamps]


def chain_order(files: list[str]) -> list[str]:
    """`files` with each live file after its rotated siblings, oldest first.

    A shell glob (`oversight-audit.jsonl*`) lists the live file first; the
    chain runs through the rotated ones before it.
    """

    def split(name: str) -> tuple[str, str | None]:
        match = _ROTATED.match(name)
        return (match.group(1), match.group(2)) if match else (name, None)

    first_seen: dict[str, int] = {}
    for i, name in enumerate(files):
        first_seen.setdefault(split(name)[0], i)

    def key(item: tuple[int, str]) -> tuple[int, int, tuple[str, int], int]:
        i, name = item
        base, stamp = split(name)
        if stamp is None:
            return first_seen[base], 1, ("", 0), i
        return first_seen[base], 0, _stamp_key(stamp), i

    return [name for _, name in sorted(enumerate(files), key=key)]


def live_name(name: str) -> str:
    """The live file `name` was rotated from (`name` itself when it is not a rotated file)."""
    match = _ROTATED.match(name)
    return match.group(1) if match else name


def discover(path: str) -> list[str]:
    """Every file of the chain that `path` is the live file of, oldest first."""
    files = rotated_siblings(path)
    if os.path.exists(path):
        files.append(path)
    return files


def torn_tail(fd: int) -> int:
    """Offset where the file's last complete line ends (the file size if none is torn)."""
    size = os.fstat(fd).st_size
    pos = size
    while pos > 0:
        start = max(0, pos - _TAIL_CHUNK)
        chunk = os.pread(fd, pos - start, start)
        if pos == size and chunk.endswith(b"\n"):
            return size
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            return start + nl + 1
        pos = start
    return 0


def last_line(fd: int, end: int) -> bytes | None:
    """The last complete line before offset `end` (which ends a line), without newline."""
    if end <= 0:
        return None
    pos = end - 1  # skip the final newline
    pieces: list[bytes] = []
    while pos > 0:
        start = max(0, pos - _TAIL_CHUNK)
        chunk = os.pread(fd, pos - start, start)
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            pieces.append(chunk[nl + 1 :])
            break
        pieces.append(chunk)
        pos = start
    return b"".join(reversed(pieces))


@dataclass(frozen=True, slots=True)
class Head:
    """Where the chain stands in a file: its last hash and the UTC day of its last record."""

    hash: str
    day: date | None


class BrokenHead(Exception):
    """The last complete line is not an audit record, so the chain cannot go on from it."""


def head_of_line(line: bytes) -> Head:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise BrokenHead(f"last line is not JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise BrokenHead("last line is not a JSON object")
    digest = record.get("hash")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise BrokenHead("last line has no valid hash")
    day: date | None = None
    ts = record.get("ts")
    if isinstance(ts, str):
        try:
            day = parse_ts(ts).date()
        except ValueError:
            day = None
    return Head(digest, day)


def head_of_file(path: str) -> Head | None:
    """Head of a closed (rotated) file, or None when it holds no complete line."""
    fd = os.open(path, os.O_RDONLY)
    try:
        line = last_line(fd, torn_tail(fd))
    finally:
        os.close(fd)
    return None if line is None else head_of_line(line)


def previous_head(path: str) -> Head:
    """Chain head carried over from the newest rotated sibling that has a record."""
    for older in reversed(rotated_siblings(path)):
        try:
            head = head_of_file(older)
        except (OSError, BrokenHead):
            continue
        if head is not None:
            return head
    return Head(GENESIS, None)
