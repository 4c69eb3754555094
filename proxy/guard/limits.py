"""The guard's own view of an `extraction:` rule entry, with defaults filled in.

proxy/rules.py validates entries (sizes like `50MB` and windows like `1h`
already parsed). The guard wants one flat record with every detector
threshold resolved to a number, so `spec_from_entry` reads the entry's
attributes (or a mapping's keys, as tests and extra data give them) by name;
optional keys rules.py does not declare yet (rates, delays) simply keep
their defaults until it does.

Thresholds: `min_rows` (unfiltered_scan), `max_pages` (paging_scan) and
`max_distinct` (enumeration), or the generic `threshold`. A detector fires
when the count reaches the threshold (the 20th distinct page, the 50th
distinct lookup).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from proxy.rules import parse_duration, parse_size

GuardAction = Literal["log", "throttle", "block"]
Detector = Literal["copy_out", "unfiltered_scan", "paging_scan", "enumeration"]
DETECTORS: tuple[Detector, ...] = ("copy_out", "unfiltered_scan", "paging_scan", "enumeration")

# Thresholds a detector entry may override (DESIGN.md leaves them to "sensible defaults").
DEFAULT_MIN_TABLE_ROWS = 100_000  # unfiltered_scan: planner estimate that counts as large
DEFAULT_MIN_PAGES = 20  # paging_scan: distinct pages of one fingerprint in the window
DEFAULT_MIN_DISTINCT = 50  # enumeration: distinct literal sets of one fingerprint
DEFAULT_DETECTOR_WINDOW = 3600.0
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

    @property
    def has_budget(self) -> bool:
        return self.window is not None and (
            self.max_rows is not None or self.max_bytes is not None or self.max_queries is not None
        )

    @property
    def detector_window(self) -> float:
        return self.window if self.window is not None else DEFAULT_DETECTOR_WINDOW

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


def _raw(entry: Any) -> dict[str, Any]:
    """All keys of an entry: declared attributes plus any extra data a model kept."""
    if isinstance(entry, Mapping):
        return {k: v for k, v in entry.items() if v is not None}
    out: dict[str, Any] = {}
    extra = getattr(entry, "model_extra", None)
    if isinstance(extra, Mapping):
        out.update(extra)
    for name in getattr(type(entry), "model_fields", {}):
        value = getattr(entry, name, None)
        if value is not None:
            out[name] = value
    return out


def _opt(raw: Mapping[str, Any], key: str, conv: Any) -> Any:
    value = raw.get(key)
    return None if value is None else conv(value)


def _enum_value(value: Any) -> Any:
    return getattr(value, "value", value)


def spec_from_entry(entry: Any, default_mode: str = "enforce") -> ExtractionSpec:
    """Build an ExtractionSpec from a rules.py extraction entry (or a mapping).

    An entry without its own `mode` follows `defaults.mode` (`default_mode`).
    """
    raw = _raw(entry)
    rule_id = str(raw.get("id") or "")
    if not rule_id:
        raise ValueError("extraction entry without an id")
    action = str(_enum_value(raw.get("action") or "block"))  # rules.py's default
    if action not in ("log", "throttle", "block"):
        raise ValueError(f"{rule_id}: action must be log, throttle or block, not {action!r}")
    detect = _enum_value(raw.get("detect"))
    if detect is not None and detect not in DETECTORS:
        raise ValueError(f"{rule_id}: unknown detector {detect!r}")
    window = raw.get("window")
    threshold = _opt(raw, "threshold", int)
    rate = raw.get("rate")  # a combined `rate: {rows: N, bytes: 10MB}` per second, if given
    rate_map: Mapping[str, Any] = rate if isinstance(rate, Mapping) else {}
    return ExtractionSpec(
        id=rule_id,
        action=action,  # type: ignore[arg-type]
        dry_run=str(_enum_value(raw.get("mode") or default_mode)) == "dry_run",
        max_rows_per_query=_opt(raw, "max_rows_per_query", int),
        max_bytes_per_query=_opt(raw, "max_bytes_per_query", parse_size),
        window=None if window is None else parse_duration(window),
        max_rows=_opt(raw, "max_rows", int),
        max_bytes=_opt(raw, "max_bytes", parse_size),
        max_queries=_opt(raw, "max_queries", int),
        rows_per_second=_opt(raw, "rows_per_second", float) or _opt(rate_map, "rows", float),
        bytes_per_second=_opt(raw, "bytes_per_second", parse_size)
        or _opt(rate_map, "bytes", parse_size),
        max_delay=_opt(raw, "max_delay", parse_duration) or DEFAULT_MAX_DELAY,
        detect=detect,
        min_table_rows=_first(raw.get("min_rows"), threshold, DEFAULT_MIN_TABLE_ROWS),
        min_pages=max(_first(raw.get("max_pages"), threshold, DEFAULT_MIN_PAGES), 1),
        min_distinct=max(_first(raw.get("max_distinct"), threshold, DEFAULT_MIN_DISTINCT), 1),
        delay=_opt(raw, "delay", parse_duration) or DEFAULT_THROTTLE_DELAY,
    )


def _first(*values: Any) -> int:
    return int(next(v for v in values if v is not None))
