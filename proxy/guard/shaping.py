"""Shaping one statement's stream: its caps, its pace, and how long it waits to start.

Pure arithmetic, no store: `Caps` picks the tightest row and byte caps of
all matching entries (and what is left of blocking budgets); `Pacer` turns
a throttled stream's running totals into pauses that hold it at a rate;
`throttle_delay` says how long an over-budget statement waits before it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.guard.limits import ExtractionSpec
from proxy.guard.store import Usage
from proxy.hooks import StreamLimits


class Caps:
    """The tightest row and byte caps offered, each with the rule it came from."""

    def __init__(self) -> None:
        self.rows: tuple[int, str] | None = None
        self.bytes: tuple[int, str] | None = None

    def offer(self, rule: str, rows: int | None, nbytes: int | None) -> None:
        if rows is not None and (self.rows is None or rows < self.rows[0]):
            self.rows = (rows, rule)
        if nbytes is not None and (self.bytes is None or nbytes < self.bytes[0]):
            self.bytes = (nbytes, rule)

    def limits(self) -> StreamLimits | None:
        if self.rows is None and self.bytes is None:
            return None
        # StreamLimits names one rule: the row cap's (the one the 54000 message states).
        rule = self.rows[1] if self.rows else self.bytes[1] if self.bytes else ""
        return StreamLimits(
            max_rows=self.rows[0] if self.rows else None,
            max_bytes=self.bytes[0] if self.bytes else None,
            rule=rule,
        )


@dataclass(slots=True)
class Pacer:
    """Aims one stream at a rate once it has used up what the budget still allowed."""

    rule: str
    row_rate: float | None
    byte_rate: float | None
    rows_free: int | float  # rows the stream may send before pacing starts
    bytes_free: int | float
    crossed_at: float | None = None
    rows_at_cross: int = 0
    bytes_at_cross: int = 0

    def wait(self, now: float, rows: int, nbytes: int) -> float:
        if rows <= self.rows_free and nbytes <= self.bytes_free:
            return 0.0
        if self.crossed_at is None:
            # The session asks after forwarding a chunk, so the part of this chunk past
            # the free allowance was already sent "now" and is paid for from here on.
            self.crossed_at = now
            self.rows_at_cross = int(min(self.rows_free, rows))
            self.bytes_at_cross = int(min(self.bytes_free, nbytes))
        due = 0.0
        if self.row_rate:
            due = max(due, (rows - self.rows_at_cross) / self.row_rate)
        if self.byte_rate:
            due = max(due, (nbytes - self.bytes_at_cross) / self.byte_rate)
        return max(0.0, due - (now - self.crossed_at))


def budget_figures(spec: ExtractionSpec, used: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {"window_s": spec.window}
    if spec.max_queries is not None:
        out.update(queries=used.queries, max_queries=spec.max_queries)
    if spec.max_rows is not None:
        out.update(rows=used.rows, max_rows=spec.max_rows)
    if spec.max_bytes is not None:
        out.update(bytes=used.bytes, max_bytes=spec.max_bytes)
    return out


def throttle_delay(spec: ExtractionSpec, used: Usage, queries: int) -> float:
    """How long an over-budget statement waits: its overdraft at the sustainable rate.

    The sustainable rate is the budget spread over the window (2000 queries
    an hour is one query every 1.8 s). At least the entry's base delay, at
    most max_delay, so a throttled client slows down but never hangs.
    """
    window = spec.window or 0.0
    delay = spec.delay
    if spec.max_queries is not None and used.queries + queries > spec.max_queries:
        over = used.queries + queries - spec.max_queries
        delay = max(delay, over * window / max(spec.max_queries, 1))
    row_rate, byte_rate = spec.row_rate(), spec.byte_rate()
    if spec.max_rows is not None and row_rate and used.rows >= spec.max_rows:
        delay = max(delay, (used.rows - spec.max_rows) / row_rate)
    if spec.max_bytes is not None and byte_rate and used.bytes >= spec.max_bytes:
        delay = max(delay, (used.bytes - spec.max_bytes) / byte_rate)
    return min(delay, spec.max_delay)
