"""The ledger detectors' history in the memory store: first sightings and the coverage sketch."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from proxy.guard import MemoryStore
from proxy.guard.hll import WindowSketch, estimate, register
from proxy.guard.store import MAX_MEMBERS
from proxy.rules import RulesError, load_rules


def hashes(n: int, start: int = 0) -> list[str]:
    """Ledger-like members: 32 hex digits of a keyed hash."""
    return [hashlib.sha256(str(i).encode()).hexdigest()[:32] for i in range(start, start + n)]


def test_sketch_is_exact_for_few_and_close_for_many() -> None:
    for n in (0, 1, 2, 7, 50):
        s = WindowSketch()
        s.add(0, hashes(n))
        assert s.count() == n, n
    s.add(0, hashes(250, 50))  # two members may share a register now and then
    assert abs(s.count() - 300) <= 3
    s = WindowSketch()
    for start in range(0, 60_000, 1000):  # as 60 statements of 1,000 people
        s.add(0, hashes(1000, start))
    assert abs(s.count() - 60_000) < 60_000 * 0.03
    s.add(0, hashes(1000))  # seen again: nothing new
    assert abs(s.count() - 60_000) < 60_000 * 0.03


def test_sketch_union_over_buckets_and_rebuild_on_expiry() -> None:
    s = WindowSketch()
    s.add(0, hashes(100))
    s.add(1000, hashes(100, 50))  # 50 of them again, 50 new
    assert abs(s.count() - 150) <= 2
    s.prune(now_ms=2500, window_ms=1500, width=1000)  # bucket 0 ends at 1000 <= 2500 - 1500
    assert abs(s.count() - 100) <= 1 and list(s.buckets) == [1000]
    assert s.union == s.buckets[1000]  # rebuilt from what is left
    s.prune(now_ms=10_000, window_ms=1500, width=1000)
    assert s.count() == 0 and s.hist[0] == len(s.union)


def test_register_takes_any_text() -> None:
    for member in ("", "x", "not hex at all, long enough", "-1234567890abcdef", "ff" * 16):
        idx, rank = register(member)
        assert 0 <= idx < 1 << 14 and 1 <= rank <= 51
    assert estimate([1 << 14] + [0] * 51) == 0


async def test_first_seen_reports_new_members_and_slides() -> None:
    store = MemoryStore()
    assert await store.first_seen("k", [], 10, 100.0) == (0, [])
    assert store._seen == {}  # a look at nothing leaves nothing behind
    assert await store.first_seen("k", ["a", "b", "a"], 10, 100.0) == (2, ["a", "b"])
    assert await store.first_seen("k", ["b", "c"], 10, 105.0) == (3, ["c"])
    assert await store.first_seen("k", [], 10, 109.0) == (3, [])
    # a was last seen at 100: gone at 110; b was refreshed at 105
    assert await store.first_seen("k", ["a", "b"], 10, 110.0) == (3, ["a"])
    assert await store.seen("k", "d", 10, 110.0) == 4  # the detectors' one-member form


async def test_first_seen_is_bounded() -> None:
    store = MemoryStore()
    members = [f"m{i}" for i in range(MAX_MEMBERS + 10)]
    count, new = await store.first_seen("k", members, 60, 1.0)
    assert count == MAX_MEMBERS and len(new) == MAX_MEMBERS + 10


async def test_cover_counts_distinct_members_over_a_sliding_window() -> None:
    store = MemoryStore()
    assert await store.cover("k", [], 1200.0, 0.0) == 0
    assert store._sketches == {}  # looking creates nothing
    assert await store.cover("k", hashes(30), 1200.0, 0.0) == 30
    assert await store.cover("k", hashes(30, 20), 1200.0, 600.0) == 50
    assert await store.cover("other", hashes(5), 1200.0, 600.0) == 5
    # buckets are 100 s wide: the first one counts until 1300 s
    assert await store.cover("k", [], 1200.0, 1299.0) == 50
    assert await store.cover("k", [], 1200.0, 1300.0) == 30
    assert await store.cover("k", [], 1200.0, 1900.0) == 0


async def test_idle_sketches_are_swept() -> None:
    store = MemoryStore()
    await store.cover("idle", hashes(3), 10.0, 0.0)
    for i in range(4096):  # writes trigger the sweep
        await store.cover("busy", hashes(1, i), 10.0, 100.0)
    assert "idle" not in store._sketches and "busy" in store._sketches


def test_rule_files_name_a_known_subject(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "version: 1\n"
        "subjects: [{id: person, table: public.people, key: id}]\n"
        "extraction:\n"
        "  - {id: cov, detect: coverage, subject: persons, share: 0.2}\n"
        "  - {id: vip, detect: restricted_lookup, subject: person, keys: [1, 2], how: [seen]}\n"
    )
    with pytest.raises(RulesError) as e:
        load_rules(tmp_path)
    assert e.value.problems == [
        f"{tmp_path / 'a.yaml'}: rule cov: subject: no subject 'persons' (known: person)"
    ]
    (tmp_path / "a.yaml").write_text(
        "version: 1\n"
        "subjects: [{id: person, table: public.people, key: id}]\n"
        "extraction:\n"
        "  - {id: cov, detect: coverage, subject: person, share: 0.2, window: 7d}\n"
        "  - {id: vip, detect: restricted_lookup, subject: person, keys: [1, x], action: block}\n"
        "alerts:\n"
        "  - id: soc\n"
        "    when: {detectors: [coverage, restricted_lookup]}\n"
        "    webhook: https://siem.example.org/x\n"
    )
    rs = load_rules(tmp_path)
    assert [e.detect for e in rs.extraction] == ["coverage", "restricted_lookup"]
    assert rs.extraction[1].keys == ["1", "x"] and rs.extraction[0].window == 7 * 86400
