"""Sliding-window arithmetic, the MemoryStore, and reading extraction entries into specs."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from proxy.guard import BudgetLimits, ExtractionSpec, MemoryStore, Usage, spec_from_entry
from proxy.guard.store import MAX_MEMBERS
from proxy.guard.windows import BUCKETS, Counters, bucket_ms, bucket_start, live
from proxy.rules import ExtractionRule, Mode, RulesError, load_rules


def test_bucket_arithmetic() -> None:
    assert bucket_ms(3600) == 60_000
    assert bucket_ms(0.01) == 1  # never zero
    assert bucket_start(125.5, 3600) == 120_000
    # a bucket counts while any part of it is inside the window
    assert live(120_000, 3600 + 120.0, 3600)
    assert live(120_000, 3600 + 179.9, 3600)
    assert not live(120_000, 3600 + 180.0, 3600)


def test_counters_sum_and_forget() -> None:
    c = Counters()
    for t in range(0, 120, 10):
        c.add(float(t), 60, 1, 10, 100)
    assert c.totals(119.0, 60) == (6, 60, 600)  # events at 60..110
    assert c.totals(120.5, 60) == (6, 60, 600)  # bucket [60, 61) still overlaps the window
    assert c.totals(121.0, 60) == (5, 50, 500)  # and now it does not
    assert len(c.buckets) <= BUCKETS + 1
    assert c.totals(500.0, 60) == (0, 0, 0)
    assert c.buckets == {}


def test_budget_limits_exhausted() -> None:
    limits = BudgetLimits(max_queries=2, max_rows=100, max_bytes=None)
    assert limits.exhausted(Usage(1, 99, 10**9)) is None
    assert limits.exhausted(Usage(2, 0, 0)) == "2 of 2 queries"
    assert limits.exhausted(Usage(0, 100, 0)) == "100 of 100 rows"
    assert limits.exhausted(Usage(0, 0, 0), queries=3) == "0 of 2 queries"


async def test_memory_admit_is_check_and_count() -> None:
    store = MemoryStore()
    limits = BudgetLimits(max_queries=2)
    assert await store.admit("k", 60, 0.0, limits, enforce=True) == (True, Usage(0, 0, 0))
    assert await store.admit("k", 60, 1.0, limits, enforce=True) == (True, Usage(1, 0, 0))
    assert await store.admit("k", 60, 2.0, limits, enforce=True) == (False, Usage(2, 0, 0))
    # a refused statement is not counted; a non-enforcing entry counts regardless
    assert await store.admit("k", 60, 3.0, limits, enforce=False) == (True, Usage(2, 0, 0))
    await store.add("k", 60, 3.0, 5, 50)
    assert await store.usage("k", 60, 3.0) == Usage(3, 5, 50)
    assert await store.usage("other", 60, 3.0) == Usage()


async def test_memory_seen_counts_distinct_members_in_window() -> None:
    store = MemoryStore()
    assert await store.seen("h", "a", 10, 0.0) == 1
    assert await store.seen("h", "a", 10, 1.0) == 1
    assert await store.seen("h", "b", 10, 2.0) == 2
    assert await store.seen("h", "c", 10, 10.5) == 3  # "a" was seen again at 1.0
    assert await store.seen("h", "d", 10, 11.5) == 3  # "a" has now left the window


async def test_memory_seen_is_capped() -> None:
    store = MemoryStore()
    for i in range(MAX_MEMBERS + 50):
        n = await store.seen("h", str(i), 3600, float(i) / 1000)
    assert n == MAX_MEMBERS


async def test_memory_cancel_keys() -> None:
    store = MemoryStore()
    await store.put_cancel_key((1, 2), {"pid": 9}, ttl=60)
    await store.put_cancel_key(b"\xff\x00", {"pid": 10}, ttl=0.01)
    assert await store.get_cancel_key((1, 2)) == {"pid": 9}
    assert await store.get_cancel_key((2, 1)) is None
    await asyncio.sleep(0.02)
    assert await store.get_cancel_key(b"\xff\x00") is None
    await store.del_cancel_key((1, 2))
    assert await store.get_cancel_key((1, 2)) is None


def test_spec_from_rule_entry() -> None:
    entry = ExtractionRule.model_validate(
        {
            "id": "hourly",
            "window": "1h",
            "max_rows": 200000,
            "max_bytes": "50MB",
            "max_queries": 2000,
            "action": "throttle",
        }
    )
    spec = spec_from_entry(entry)
    assert (spec.id, spec.window, spec.max_bytes, spec.action) == (
        "hourly",
        3600.0,
        50_000_000,
        "throttle",
    )
    assert spec.has_budget and spec.row_rate() == pytest.approx(200000 / 3600)
    cap = spec_from_entry(ExtractionRule.model_validate({"id": "c", "max_rows_per_query": 5}))
    assert cap.action == "block" and not cap.has_budget and cap.detect is None


def spec(entry: dict[str, object], default_mode: Mode = "enforce") -> ExtractionSpec:
    return spec_from_entry(ExtractionRule.model_validate(entry), default_mode)


def test_detector_thresholds_and_defaults() -> None:
    s = spec({"id": "d", "detect": "paging_scan"})
    assert (s.min_pages, s.min_distinct, s.min_table_rows) == (20, 50, 100_000)
    assert s.detector_window == 3600.0
    s = spec({"id": "d", "detect": "paging_scan", "max_pages": 5, "window": "10m"})
    assert (s.min_pages, s.detector_window) == (5, 600.0)
    s = spec({"id": "d", "detect": "enumeration", "threshold": 7})
    assert (s.min_pages, s.min_distinct) == (7, 7)
    s = spec({"id": "d", "detect": "unfiltered_scan", "min_rows": 10, "mode": "dry_run"})
    assert s.min_table_rows == 10 and s.dry_run
    assert spec({"id": "d", "detect": "copy_out"}, "dry_run").dry_run  # defaults.mode
    assert not spec({"id": "d", "detect": "copy_out", "mode": "enforce"}, "dry_run").dry_run
    s = replace(spec({"id": "d", "window": 60, "max_rows": 60}), rows_per_second=5)
    assert s.row_rate() == 5  # an explicit rate beats the budget spread over the window


@pytest.mark.parametrize(
    "extra",
    [{"rate": {"rows": 5}}, {"rows_per_second": 5}, {"delay": "2s"}, {"max_delay": 9}],
)
def test_keys_the_rule_model_forbids_are_refused_at_load(
    tmp_path: Path, extra: dict[str, object]
) -> None:
    """The guard once read these straight from the entry; now only the model's keys exist."""
    entry = {"id": "d", "window": "1h", "max_rows": 60, **extra}
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "extraction": [entry]}))
    with pytest.raises(RulesError) as e:
        load_rules(path)
    assert f"rule d: {next(iter(extra))}: Extra inputs are not permitted" in str(e.value)


def test_bad_detectors_and_missing_ids_never_reach_the_guard() -> None:
    with pytest.raises(ValidationError):
        ExtractionRule.model_validate({"id": "d", "detect": "telepathy"})
    with pytest.raises(ValidationError):
        ExtractionRule.model_validate({"detect": "copy_out"})
