"""The guard's own view of an `extraction:` rule entry, with defaults filled in.

proxy/rules validates entries (sizes like `50MB` and windows like `1h`
already parsed, unknown keys refused at load). The guard wants one flat
record with every detector threshold resolved to a number, so
`spec_from_entry` reads the validated `ExtractionRule`'s typed attributes;
it never re-parses raw data, so nothing the rule-file model forbids can
reach the guard. Stream rates and throttle delays are not rule-file keys:
specs carry their defaults, and only code building a spec directly sets them.

Thresholds: `min_rows` (unfiltered_scan), `max_pages` (paging_scan) and
`max_distinct` (enumeration), or the generic `threshold`. A detector fires
when the count reaches the threshold (the 20th distinct page, the 50th
distinct lookup).

The ledger detectors (coverage, restricted_lookup; ledger.py) keep their
subject id and, for restricted_lookup, the ledger hashes of the restricted
keys: the keys are hashed here, once per rule set, and the spec never holds
them in plaintext.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from proxy.ledger.hashing import DEFAULT_KEY, subject_hash
from proxy.rules import ExtractionRule, Mode
from proxy.rules.model import LEDGER_DETECTORS, DetectorName

GuardAction = Literal["log", "throttle", "block"]
Detector = DetectorName
How = Literal["looked_up", "seen"]

# Thresholds a detector entry may override (DESIGN.md leaves them to "sensible defaults").
DEFAULT_MIN_TABLE_ROWS = 100_000  # unfiltered_scan: planner estimate that counts as large
DEFAULT_MIN_PAGES = 20  # paging_scan: distinct pages of one fingerprint in the window
DEFAULT_MIN_DISTINCT = 50  # enumeration: distinct literal sets of one fingerprint
DEFAULT_DETECTOR_WINDOW = 3600.0
DEFAULT_COVERAGE_WINDOW = 7 * 86400.0  # coverage: a slow harvest spread over days
DEFAULT_RESTRICTED_WINDOW = 30 * 86400.0  # restricted_lookup: "first time" means in 30 days
DEFAULT_THROTTLE_DELAY = 1.0  # seconds a throttling detector holds each statement back
DEFAULT_MAX_DELAY = 30.0  # the longest a throttled statement waits before it runs


@dataclass(frozen=True, slots=True)
class ExtractionSpec:
    """One `extraction:` entry as the guard uses it."""

    id: str
    action: GuardAction = "block"
    dry_run: bool = False
    # Per-statement caps, enforced mid-stream by the session.
    max_rows_per_query: int | None = None
    max_bytes_per_query: int | None = None
    # Per-user budgets over a sliding window.
    window: float | None = None
    max_rows: int | None = None
    max_bytes: int | None = None
    max_queries: int | None = None
    # Explicit stream rates for throttling; default is the budget spread over its window.
    rows_per_second: float | None = None
    bytes_per_second: float | None = None
    max_delay: float = DEFAULT_MAX_DELAY
    # Detector and its thresholds.
    detect: Detector | None = None
    min_table_rows: int = DEFAULT_MIN_TABLE_ROWS
    min_pages: int = DEFAULT_MIN_PAGES
    min_distinct: int = DEFAULT_MIN_DISTINCT
    delay: float = DEFAULT_THROTTLE_DELAY
    # Ledger detectors: the subject, coverage's share of its table (of `of` rows
    # when given, else the planner's estimate), restricted keys' hashes.
    subject: str | None = None
    share: float | None = None
    of: int | None = None
    restricted: frozenset[str] = frozenset()
    how: tuple[How, ...] = ("looked_up", "seen")

    @property
    def ledger(self) -> bool:
        """Does this entry's detector work after the statement, from its subjects?"""
        return self.detect in LEDGER_DETECTORS

    @property
    def has_budget(self) -> bool:
        return self.window is not None and (
            self.max_rows is not None or self.max_bytes is not None or self.max_queries is not None
        )

    @property
    def detector_window(self) -> float:
        if self.window is not None:
            return self.window
        if self.detect == "coverage":
            return DEFAULT_COVERAGE_WINDOW
        if self.detect == "restricted_lookup":
            return DEFAULT_RESTRICTED_WINDOW
        return DEFAULT_DETECTOR_WINDOW

    def row_rate(self) -> float | None:
        """Rows per second a throttled stream is aimed at, or None when rows are not limited."""
        if self.rows_per_second is not None:
            return self.rows_per_second
        if self.max_rows is not None and self.window:
            return max(self.max_rows, 1) / self.window
        return None

    def byte_rate(self) -> float | None:
        if self.bytes_per_second is not None:
            return self.bytes_per_second
        if self.max_bytes is not None and self.window:
            return max(self.max_bytes, 1) / self.window
        return None


def spec_from_entry(
    entry: ExtractionRule, default_mode: Mode = "enforce", ledger_key: bytes = DEFAULT_KEY
) -> ExtractionSpec:
    """Build an ExtractionSpec from a validated `extraction:` entry.

    An entry without its own `mode` follows `defaults.mode` (`default_mode`);
    restricted keys are hashed under `ledger_key`, as the tally hashes keys.
    """
    threshold = entry.threshold
    restricted = frozenset(
        subject_hash(ledger_key, entry.subject, k) for k in entry.keys or () if entry.subject
    )
    return ExtractionSpec(
        id=entry.id,
        action=entry.action,
        dry_run=(entry.mode or default_mode) == "dry_run",
        max_rows_per_query=entry.max_rows_per_query,
        max_bytes_per_query=entry.max_bytes_per_query,
        window=entry.window,
        max_rows=entry.max_rows,
        max_bytes=entry.max_bytes,
        max_queries=entry.max_queries,
        detect=entry.detect,
        min_table_rows=_first(entry.min_rows, threshold, DEFAULT_MIN_TABLE_ROWS),
        min_pages=max(_first(entry.max_pages, threshold, DEFAULT_MIN_PAGES), 1),
        min_distinct=max(_first(entry.max_distinct, threshold, DEFAULT_MIN_DISTINCT), 1),
        subject=entry.subject,
        share=entry.share,
        of=entry.of,
        restricted=restricted,
        how=tuple(entry.how) if entry.how else ("looked_up", "seen"),
    )


def _first(*values: int | None) -> int:
    return next(v for v in values if v is not None)
