"""Canaries (DESIGN.md, "Rule files": `canaries:`): decoy subject keys nobody has a reason to touch.

The keys of every `canaries:` entry are hashed once, when rules load or
reload, the way the ledger hashes a subject's key (hashing.py), so that a
statement's tally (tally.py: keys it received, values it searched for on the
key or a `via` column) is checked by set membership: `hits` gives one hit per
canary a statement touched, however many of its rows held the decoy. A
search on a `lookups` column is hashed with the column name and never
matches a key: canaries are keys.

`Tripwire` remembers the sessions a canary with `action: block` tripped: the
statement that touched it has already run (its rows may be on their way), so
it is the session's later statements that the hooks refuse.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from proxy.ledger.hashing import subject_hash
from proxy.ledger.tally import Tally

How = Literal["seen", "looked_up"]


class CanaryLike(Protocol):
    """What is read of a rules.subjects.CanaryRule."""

    @property
    def id(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def keys(self) -> Sequence[str]: ...
    @property
    def action(self) -> str: ...


@dataclass(frozen=True, slots=True)
class CanaryHit:
    canary: str  # the canary entry's id (never the key)
    subject: str
    how: How  # looked_up when the statement searched for it, else seen
    action: str  # alert | block


class Canaries:
    """The hashed canary keys of the rule set in force."""

    def __init__(self, key: bytes, canaries: Sequence[CanaryLike] = ()) -> None:
        self.key = key
        self._by_hash: dict[tuple[str, str], CanaryLike] = {}
        self.load(canaries)

    def load(self, canaries: Sequence[CanaryLike]) -> None:
        """Hash the keys of a (re)loaded rule set; swapped in one assignment."""
        by_hash = {}
        for c in canaries:
            for k in c.keys:
                by_hash[(c.subject, subject_hash(self.key, c.subject, k))] = c
        self._by_hash = by_hash

    def __bool__(self) -> bool:
        return bool(self._by_hash)

    def hashes(self) -> frozenset[str]:
        """Every canary key's hash, for a reader that stops listing keys at the cap."""
        return frozenset(h for _, h in self._by_hash)

    def hits(
        self, tally: Tally | None, looked_up: Iterable[tuple[str, str, str]] = ()
    ) -> list[CanaryHit]:
        """One hit per canary the statement touched, in the order found.

        `looked_up`: every (subject, column, hash) the statement searched for, past
        the tally's cap too (an IN list of 5,000 keys with a decoy at the end).
        """
        by_hash = self._by_hash
        if not by_hash:
            return []
        found: dict[str, CanaryHit] = {}
        for sid, _, h in looked_up:
            c = by_hash.get((sid, h))
            if c is not None and c.id not in found:
                found[c.id] = CanaryHit(c.id, sid, "looked_up", c.action)
        for sid, s in tally.subjects.items() if tally else ():
            for _, h in s.looked_up:
                c = by_hash.get((sid, h))
                if c is not None and c.id not in found:
                    found[c.id] = CanaryHit(c.id, sid, "looked_up", c.action)
            for h in s.seen:
                c = by_hash.get((sid, h))
                if c is not None and c.id not in found:
                    found[c.id] = CanaryHit(c.id, sid, "seen", c.action)
        return list(found.values())


class Tripwire:
    """Sessions a blocking canary tripped: session id -> canary id."""

    def __init__(self) -> None:
        self._tripped: dict[str, str] = {}

    def trip(self, session: str, canary: str) -> None:
        self._tripped.setdefault(session, canary)

    def tripped(self, session: str) -> str | None:
        return self._tripped.get(session) if self._tripped else None

    def forget(self, session: str) -> None:
        self._tripped.pop(session, None)
