"""One statement's ledger entry: what it received (`seen`) joined with what it searched for.

The result stream fills a statement's own tally with the keys its rows
carried; the hooks hand over, on the statement's admission, the hashes of
the values it compared with subject columns (policy/lookups.py, hashed in
proxy/enforce.py). `statement_tally` puts both in one tally, the one the
audit record's `subjects` field and the canary check read.
"""

from __future__ import annotations

from collections.abc import Iterable

from proxy.ledger.tally import Tally

Looked = tuple[str, str, str]  # (subject id, column as in the rule file, hash)


def statement_tally(seen: Tally | None, looked_up: Iterable[Looked]) -> Tally | None:
    """`seen` (the stream's tally, or None) with the lookups added; None when both are empty."""
    tally = seen
    for subject, column, h in looked_up:
        if tally is None:
            tally = Tally()
        tally.looked_up(subject, column, h)
    return tally if tally else None
