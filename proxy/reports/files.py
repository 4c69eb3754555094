"""Which audit files a report reads: the configured log and its rotated siblings, or globs.

A plain path names a live file: its rotated siblings (proxy/audit/rotate.py
names them `FILE.<UTC stamp>`) come with it, as `oversight audit verify
--rotated` does. A glob (`/var/log/oversight/*.jsonl*`, one per proxy
instance) is taken as it matches. Either way the result is in chain order
(each live file after its rotated ones), grouped per chain for verification.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable

from proxy.audit.rotate import chain_order, discover, live_name
from proxy.reports.errors import ReportError

_GLOB_CHARS = frozenset("*?[")


def resolve(patterns: Iterable[str]) -> list[str]:
    """Every audit file the patterns name, each once, oldest of a chain first."""
    found: dict[str, None] = {}
    empty: list[str] = []
    for pattern in patterns:
        if _GLOB_CHARS & set(pattern):
            matches = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
        else:
            matches = discover(pattern)
        if not matches:
            empty.append(pattern)
        found.update(dict.fromkeys(matches))
    if not found:
        named = ", ".join(empty) or "(none given)"
        raise ReportError(f"no audit files found: {named}")
    return chain_order(list(found))


def chains(files: list[str]) -> list[list[str]]:
    """`files` (in chain order) split into one list per hash chain (one per live file)."""
    groups: dict[str, list[str]] = {}
    for name in files:
        groups.setdefault(live_name(name), []).append(name)
    return list(groups.values())
