"""One statement's subjects: the hashes it saw and looked up, capped, with counts.

The audit record's `subjects` field (DESIGN.md, "Audit log"):

    {"person": {"seen": [h, ...], "seen_count": 300,
                "looked_up": [{"column": "ssn", "hash": h}], "looked_up_count": 1}}

Each list holds distinct hashes in first-seen order and stops growing at
`CAP`; the counts go on: distinct while the list has room, then every
further occurrence of a hash not in it (remembering more would let a bulk
read grow the proxy's memory), so past 1,000 a count means "at least".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CAP = 1000


@dataclass(slots=True)
class _Subject:
    seen: dict[str, None] = field(default_factory=dict)  # ordered set
    seen_count: int = 0
    looked_up: dict[tuple[str, str], None] = field(default_factory=dict)  # (column, hash)
    looked_up_count: int = 0


@dataclass(slots=True)
class Tally:
    """Hashes of one statement, by subject id."""

    subjects: dict[str, _Subject] = field(default_factory=dict)

    def _of(self, subject: str) -> _Subject:
        s = self.subjects.get(subject)
        if s is None:
            s = self.subjects[subject] = _Subject()
        return s

    def seen(self, subject: str, h: str) -> None:
        s = self._of(subject)
        if h in s.seen:
            return
        s.seen_count += 1
        if len(s.seen) < CAP:
            s.seen[h] = None

    def seen_decoy(self, subject: str, h: str) -> None:
        """A canary key read past the cap: listed all the same (canaries.py reads the
        list), so the list may exceed the cap by the number of canary keys."""
        s = self._of(subject)
        if h not in s.seen:
            s.seen_count += 1
            s.seen[h] = None

    def seen_unlisted(self, subject: str) -> None:
        """One more distinct key past the cap, known by its reader not to be listed.

        The row reader (rows.py) remembers which values it listed, so past the
        cap it counts the others without hashing them: same count as `seen`.
        """
        self._of(subject).seen_count += 1

    def looked_up(self, subject: str, column: str, h: str) -> None:
        s = self._of(subject)
        k = (column, h)
        if k in s.looked_up:
            return
        s.looked_up_count += 1
        if len(s.looked_up) < CAP:
            s.looked_up[k] = None

    def __bool__(self) -> bool:
        return bool(self.subjects)

    def hashes(self) -> set[str]:
        """Every hash held, seen or looked up (canary checks)."""
        out: set[str] = set()
        for s in self.subjects.values():
            out.update(s.seen)
            out.update(h for _, h in s.looked_up)
        return out

    def field(self) -> dict[str, Any]:
        """The record's `subjects` value."""
        return {
            sid: {
                "seen": list(s.seen),
                "seen_count": s.seen_count,
                "looked_up": [{"column": c, "hash": h} for c, h in s.looked_up],
                "looked_up_count": s.looked_up_count,
            }
            for sid, s in self.subjects.items()
        }
