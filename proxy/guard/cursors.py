"""Per-cursor row counts, so a per-query cap holds across a FETCH loop.

`DECLARE c CURSOR FOR <big query>` followed by `FETCH 1000 FROM c` again and
again would otherwise get a fresh cap on every FETCH. The guard remembers,
per session and cursor name, what earlier FETCHes streamed and hands it to
the session as `StreamLimits.used_rows/used_bytes`.

Names are read from the statement text (the policy engine's redacted SQL:
literals are replaced, identifiers are kept). Tracking errs towards
remembering: a cursor is forgotten on CLOSE, and its count starts over
only when a cursor of that name is declared again; transaction end is not
trusted to close it (WITH HOLD cursors survive it, and RELEASE/ROLLBACK TO
do not end a transaction).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

_NAME = r'("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_DECLARE = re.compile(r"^\s*DECLARE\s+" + _NAME, re.IGNORECASE)
_FETCH = re.compile(r"^\s*(?:FETCH|MOVE)\b.*?" + _NAME + r"\s*;?\s*$", re.IGNORECASE | re.DOTALL)
_CLOSE = re.compile(r"^\s*CLOSE\s+" + _NAME + r"\s*;?\s*$", re.IGNORECASE)

MAX_SESSIONS = 10_000  # sessions whose cursors are remembered (least recently used dropped)
MAX_CURSORS = 1_000  # cursors per session


def _ident(raw: str) -> str:
    if raw.startswith('"'):
        return raw[1:-1].replace('""', '"')
    return raw.lower()


@dataclass(slots=True)
class CursorCount:
    rows: int = 0
    bytes: int = 0


class CursorTracker:
    """Session id -> cursor name -> what FETCHes from it have streamed so far."""

    def __init__(self) -> None:
        self._sessions: OrderedDict[str, dict[str, CursorCount]] = OrderedDict()

    def _session(self, session: str) -> dict[str, CursorCount]:
        cursors = self._sessions.get(session)
        if cursors is None:
            cursors = self._sessions[session] = {}
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(session)
        return cursors

    def observe(self, session: str, kind: str, text: str) -> CursorCount | None:
        """Note DECLARE/CLOSE; for a FETCH or MOVE return its cursor's running count."""
        if kind == "declare":
            m = _DECLARE.match(text)
            if m:
                cursors = self._session(session)
                if len(cursors) >= MAX_CURSORS:
                    cursors.pop(next(iter(cursors)))
                cursors[_ident(m.group(1))] = CursorCount()
            return None
        if kind == "close":
            m = _CLOSE.match(text)
            if m and m.group(1).upper() == "ALL":
                self._sessions.pop(session, None)
            elif m:
                self._session(session).pop(_ident(m.group(1)), None)
            return None
        if kind == "fetch":
            m = _FETCH.match(text)
            if m:
                return self._session(session).setdefault(_ident(m.group(1)), CursorCount())
        return None

    def forget(self, session: str) -> None:
        self._sessions.pop(session, None)
