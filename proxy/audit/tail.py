"""`oversight tail`: the audit trail as a person reads it, live.

One line per record: time, user, decision (or session event), rule, the start
of the SQL, rows. `--json` prints the raw lines instead. `--follow` keeps
reading a file that is being written and moves on when it is rotated
(replaced) or truncated, like `tail -F`; it first shows the last 10 matching
records, or everything since `--since`.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, TextIO

import orjson

from proxy.audit.record import parse_ts
from proxy.audit.rotate import discover, rotated_siblings

REFUSED = frozenset({"block", "cutoff"})
_BACKLOG = 10
_SQL_WIDTH = 80
_RELATIVE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_COLORS = {
    "allow": "32",
    "rewrite": "36",
    "block": "1;31",
    "throttle": "33",
    "cutoff": "35",
    "auth_failure": "1;31",
    "canary": "1;31",
    "connect": "2",
    "disconnect": "2",
}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """An RFC 3339 time, or a relative age like 10m, 2h, 3d."""
    match = _RELATIVE.match(text)
    if match:
        delta = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        return (now or datetime.now(UTC)) - delta
    try:
        return parse_ts(text.strip())
    except ValueError as exc:
        raise ValueError(f"--since: not an RFC 3339 time or an age like 10m/2h: {text!r}") from exc


def is_refused(record: dict[str, Any]) -> bool:
    return record.get("decision") in REFUSED or record.get("event") == "auth_failure"


def _paint(text: str, code: str | None, color: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if color and code else text


def _short(value: Any, width: int) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def format_record(record: dict[str, Any], *, color: bool = False) -> str:
    """The one-line, human form of a record."""
    ts = str(record.get("ts", ""))
    when = ts[:19].replace("T", " ") if len(ts) >= 19 else ts
    user = str(record.get("user") or "-")
    event = str(record.get("event") or "?")
    rules = record.get("rules") or []
    rule = str(rules[0]) if isinstance(rules, list) and rules else "-"
    if event == "statement":
        label = str(record.get("decision") or "?")
        body = _short(record.get("sql") or "", _SQL_WIDTH)
        tail = f"rows={record.get('rows', '-')}"
        if record.get("dry_run"):
            tail += " dry-run"
        if record.get("error"):
            tail += f" error={_short(record['error'], 60)}"
    else:
        label = event
        if event == "canary":  # which decoy, not a rule
            rule = str(record.get("canary") or "-")
        parts = [str(record.get("client") or "")]
        if record.get("application"):
            parts.append(f"app={record['application']}")
        if record.get("database"):
            parts.append(f"db={record['database']}")
        for key in ("statements", "rows", "bytes", "duration_ms", "reason", "error", "how"):
            if record.get(key) not in (None, ""):
                parts.append(f"{key}={_short(record[key], 60)}")
        body, tail = " ".join(p for p in parts if p), ""
    cells = [
        _paint(when, "2", color),
        f"{user:<12}",
        _paint(f"{label:<12}", _COLORS.get(label), color),
        f"{rule:<20}",
        body,
    ]
    line = " ".join(cells)
    return f"{line}  {tail}" if tail else line


def _keep(record: dict[str, Any], blocked: bool, user: str | None, since: datetime | None) -> bool:
    if blocked and not is_refused(record):
        return False
    if user is not None and record.get("user") != user:
        return False
    if since is not None:
        try:
            return parse_ts(str(record.get("ts"))) >= since
        except ValueError:
            return False
    return True


def follow_lines(
    path: str, *, poll: float = 0.25, stop: Callable[[], bool] | None = None
) -> Iterator[bytes | None]:
    """Complete lines of `path` from its start, then as they are written.

    Yields None once when the existing content has been read. When the file
    is replaced (rotation) the rest of the old one is read first; when it
    shrinks (truncation) reading starts again at its beginning.
    """
    f: BinaryIO | None = None
    ident: tuple[int, int] | None = None
    # Identity of the last file read to its end after a rotation, until the new live file is
    # open with no rotation in between (several can happen between two polls).
    consumed: tuple[int, int] | None = None
    buf = b""
    caught_up = False
    try:
        while True:
            if f is None:
                if consumed is not None:
                    for name in _rotated_after(path, consumed):
                        with open(name, "rb") as older:
                            st = os.fstat(older.fileno())
                            yield from older.read().split(b"\n")[:-1]
                        consumed = (st.st_dev, st.st_ino)
                try:
                    f = open(path, "rb")  # noqa: SIM115 - reopened across rotation
                except FileNotFoundError:
                    f = None
                if f is not None:
                    st = os.fstat(f.fileno())
                    ident, buf = (st.st_dev, st.st_ino), b""
                    if consumed is not None and _rotated_after(path, consumed):
                        f.close()  # rotated again meanwhile: read those files first
                        f = None
                        continue
                    consumed = None
            chunk = f.read(1 << 16) if f is not None else b""
            if chunk:
                buf += chunk
                *lines, buf = buf.split(b"\n")
                yield from lines
                continue
            if not caught_up:
                caught_up = True
                yield None
            try:
                st = os.stat(path)
                now = (st.st_dev, st.st_ino)
            except FileNotFoundError:
                now = None
            if f is not None and now != ident:
                # Rotated away. The writer finished the old file before renaming it, so
                # read what is left of it; the files rotated after it come next.
                rest = f.read()
                f.close()
                f = None
                if rest:
                    buf += rest
                    *lines, buf = buf.split(b"\n")
                    yield from lines
                consumed = ident
                continue
            if f is not None and st.st_size < f.tell():
                # A failed batch truncated back only cuts the partial line we hold;
                # anything shorter is a truncation: read the file again from its start.
                complete = f.tell() - len(buf)
                f.seek(complete if st.st_size >= complete else 0)
                buf = b""
                continue
            if stop is not None and stop():
                return
            time.sleep(poll)
    finally:
        if f is not None:
            f.close()


def _rotated_after(path: str, ident: tuple[int, int] | None) -> list[str]:
    """Rotated siblings of `path` newer than the file identified by `ident`."""
    siblings = rotated_siblings(path)
    for i, name in enumerate(siblings):
        try:
            st = os.stat(name)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == ident:
            return siblings[i + 1 :]
    return []


def _records(lines: Iterator[bytes | None]) -> Iterator[tuple[bytes, dict[str, Any]] | None]:
    for line in lines:
        if line is None:
            yield None
            continue
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            print(
                f"oversight tail: skipping a line that is not JSON: {line[:60]!r}", file=sys.stderr
            )
            continue
        if isinstance(record, dict):
            yield line, record


def _file_lines(files: list[str]) -> Iterator[bytes | None]:
    for name in files:
        with open(name, "rb") as f:
            for raw in f:
                if raw.endswith(b"\n"):
                    yield raw[:-1]
    yield None


def cmd_tail(
    path: str,
    *,
    blocked: bool,
    user: str | None,
    since: str | None,
    follow: bool,
    json_out: bool,
    color: bool | None = None,
    out: TextIO | None = None,
    poll: float = 0.25,
    stop: Callable[[], bool] | None = None,
) -> int:
    """Print the records of the audit file `path`; 0 on success, 1 or 2 on errors."""
    stream = out or sys.stdout
    if color is None:
        color = stream.isatty() and "NO_COLOR" not in os.environ
    try:
        since_at = parse_since(since) if since else None
    except ValueError as exc:
        print(f"oversight tail: {exc}", file=sys.stderr)
        return 2
    if not follow and not os.path.exists(path):
        print(f"oversight tail: no such audit file: {path}", file=sys.stderr)
        return 1

    def show(line: bytes, record: dict[str, Any]) -> None:
        text = line.decode("utf-8", "replace") if json_out else format_record(record, color=color)
        stream.write(text + "\n")

    if follow:
        lines: Iterator[bytes | None] = follow_lines(path, poll=poll, stop=stop)
    else:
        # With --since the rotated files may hold part of the window too.
        lines = _file_lines(discover(path) if since_at else [path])
    backlog: deque[tuple[bytes, dict[str, Any]]] | None = (
        deque(maxlen=_BACKLOG) if follow and since_at is None else None
    )
    try:
        for item in _records(lines):
            if item is None:
                for line, record in backlog or ():
                    show(line, record)
                backlog = None
                stream.flush()
                continue
            if not _keep(item[1], blocked, user, since_at):
                continue
            if backlog is not None:
                backlog.append(item)
            else:
                show(*item)
                if follow:
                    stream.flush()
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # `oversight tail | head`: the reader left; not an error.
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), sys.stdout.fileno())
        return 0
    return 0
