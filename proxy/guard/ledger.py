"""The subject-ledger detectors: they judge a statement by the subjects it received or sought.

The other detectors (detectors.py) look at a statement before it runs. These
two look at its subject tally (proxy/ledger/tally.py) once it has run, so
the statement that fires one has already run; what a hit changes is the
user's later statements:

- coverage: the user has received, over `window` (default 7d), about
  `share` of the subject table's rows as distinct subjects (the table's size
  is `of:` when given, else the planner's estimate, reltuples; without
  either the detector stays quiet). Counted with a HyperLogLog per bucket
  of the window (hll.py), from the `seen` hashes each statement lists (at
  most 1,000 a statement: bulk reads are the per-query caps' and budgets'
  business). It fires on every statement that adds subjects while the
  count is at or over the threshold.
- restricted_lookup: the first time within `window` (default 30d) the user
  looks up one of the rule's restricted subjects: a search on the subject's
  key or a `via` column (`looked_up`) or, unless `how:` leaves it out, a row
  carrying the key (`seen`), which is how a search by name or SSN shows.
  Later sightings of the same subject in the window do not fire again.

`standing` answers, before a statement, whether an earlier hit still stands
(coverage still at or over its threshold; a restricted sighting still in the
window): `block` then refuses the statement (42501) and `throttle` (coverage
only) delays it.
"""

from __future__ import annotations

import math
from typing import Any

from proxy.guard.detectors import Hit, SizeEstimator
from proxy.guard.limits import ExtractionSpec
from proxy.guard.store import Store, state_key
from proxy.ledger.tally import Tally


def _key(spec: ExtractionSpec, user: str) -> str:
    assert spec.detect is not None and spec.subject is not None
    return state_key(spec.detect, spec.id, user, spec.subject)


def coverage_threshold(
    spec: ExtractionSpec, sizes: SizeEstimator, table: str | None
) -> tuple[int, int] | None:
    """(distinct subjects that fire it, the table size it is a share of), or None: unknown size."""
    assert spec.share is not None
    size = spec.of if spec.of is not None else sizes.rows(table) if table else None
    if size is None or size <= 0:
        return None
    return max(math.ceil(spec.share * size), 1), int(size)


def _coverage_hit(
    spec: ExtractionSpec, distinct: int, threshold: int, size: int, table: str | None
) -> Hit:
    figures: dict[str, Any] = {
        "subject": spec.subject,
        "distinct": distinct,
        "threshold": threshold,
        "share": spec.share,
        "of": size,
        "window_s": spec.detector_window,
    }
    if spec.of is None:
        figures["table"] = table
    return Hit(spec.id, "coverage", spec.action, figures, spec.dry_run)


async def standing(
    spec: ExtractionSpec,
    user: str,
    store: Store,
    sizes: SizeEstimator,
    table: str | None,
    now: float,
) -> Hit | None:
    """The hit an earlier statement left that still stands, or None (looks, records nothing)."""
    window = spec.detector_window
    if spec.detect == "coverage":
        limit = coverage_threshold(spec, sizes, table)
        if limit is None:
            return None
        distinct = await store.cover(_key(spec, user), (), window, now)
        if distinct < limit[0]:
            return None
        return _coverage_hit(spec, distinct, limit[0], limit[1], table)
    held, _ = await store.first_seen(_key(spec, user), (), window, now)
    if not held:
        return None
    figures = {"subject": spec.subject, "restricted_seen": held, "window_s": window}
    return Hit(spec.id, "restricted_lookup", spec.action, figures, spec.dry_run)


async def after(
    spec: ExtractionSpec,
    user: str,
    tally: Tally,
    store: Store,
    sizes: SizeEstimator,
    table: str | None,
    now: float,
) -> Hit | None:
    """Record what the statement brought (one store call) and return its hit, if any."""
    assert spec.subject is not None
    entry = tally.subjects.get(spec.subject)
    if entry is None:
        return None
    window = spec.detector_window
    if spec.detect == "coverage":
        if not entry.seen:
            return None
        limit = coverage_threshold(spec, sizes, table)
        if limit is None:
            return None
        distinct = await store.cover(_key(spec, user), list(entry.seen), window, now)
        if distinct < limit[0]:
            return None
        return _coverage_hit(spec, distinct, limit[0], limit[1], table)
    found: dict[str, str] = {}  # hash -> how; a search counts before a row that carried it
    if "looked_up" in spec.how:
        for _, h in entry.looked_up:
            if h in spec.restricted:
                found.setdefault(h, "looked_up")
    if "seen" in spec.how:
        for h in entry.seen:
            if h in spec.restricted:
                found.setdefault(h, "seen")
    if not found:
        return None
    held, new = await store.first_seen(_key(spec, user), list(found), window, now)
    if not new:
        return None
    figures = {
        "subject": spec.subject,
        "restricted": [{"hash": h, "how": found[h]} for h in new],
        "restricted_seen": held,
        "window_s": window,
    }
    return Hit(spec.id, "restricted_lookup", spec.action, figures, spec.dry_run)


def reason(hit: Hit) -> str:
    """The human part of the 42501 message while a ledger hit stands."""
    f = hit.figures
    span = _span(float(f["window_s"]))
    if hit.kind == "coverage":
        return (
            f"received about {f['distinct']} distinct {f['subject']} records within {span},"
            f" over {f['share']:g} of {f['of']}; the statement that crossed it already ran"
        )
    return (
        f"looked up a restricted {f['subject']} record within {span};"
        " the statement that did already ran"
    )


def _span(seconds: float) -> str:
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{int(seconds // 86400)}d"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"
