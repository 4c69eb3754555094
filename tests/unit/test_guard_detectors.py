"""Detectors fire on their pattern and stay quiet on ordinary analyst work."""

from __future__ import annotations

from guard_helpers import ALICE, BOB, Clock, Stmt, catalog, ruleset

from proxy.catalog import Relation
from proxy.errors import Blocked
from proxy.guard import Guard, MemoryStore

CATALOG = catalog(
    {"public.people": 2_000_000, "public.regions": 12, "public.events": 150_000},
    **{
        "public.people_v": Relation("public", "people_v", "view", depends_on=("public.people",)),
        "public.log": Relation("public", "log", "partitioned"),
        "public.log_1": Relation("public", "log_1", reltuples=60_000, parents=("public.log",)),
        "public.log_2": Relation("public", "log_2", reltuples=70_000, parents=("public.log",)),
        "public.fresh": Relation("public", "fresh", reltuples=-1),
    },
)


def make(entry: dict[str, object]) -> tuple[Guard, Clock]:
    clock = Clock()
    return Guard(ruleset(entry), MemoryStore(), CATALOG, clock=clock), clock


async def test_copy_out_blocks_copy_to_stdout_only() -> None:
    guard, _ = make({"id": "no-copy", "detect": "copy_out", "action": "block"})
    adm = await guard.admit(ALICE, [Stmt(kind="copy", copy_out=True)])
    assert isinstance(adm.error, Blocked) and adm.error.sqlstate == "42501"
    assert adm.error.message.startswith("oversight: blocked by no-copy: ")
    assert adm.hits == [
        {"rule": "no-copy", "detector": "copy_out", "action": "block", "tables": ["public.people"]}
    ]
    assert (await guard.admit(ALICE, [Stmt()])).hits == []
    # the offending statement anywhere in a multi-statement text blocks the text
    adm = await guard.admit(ALICE, [Stmt(), Stmt(kind="copy", copy_out=True)])
    assert isinstance(adm.error, Blocked)


async def test_copy_out_from_the_text_when_the_parser_gave_up() -> None:
    guard, _ = make({"id": "no-copy", "detect": "copy_out", "action": "block"})
    for text in (
        "COPY (SELECT * FROM people) TO STDOUT (FORMAT csv)",
        "copy people to program ?",
        "COPY people TO ?",
    ):
        adm = await guard.admit(ALICE, [Stmt(kind="copy", tables=(), redacted=text)])
        assert isinstance(adm.error, Blocked), text
    for text in ("COPY people FROM STDIN", "COPY people (a, b) FROM ?"):
        assert (await guard.admit(ALICE, [Stmt(kind="copy", redacted=text)])).error is None


async def test_unfiltered_scan_of_a_large_table() -> None:
    guard, _ = make({"id": "scan", "detect": "unfiltered_scan", "action": "block"})
    adm = await guard.admit(ALICE, [Stmt(has_where=False)])
    assert isinstance(adm.error, Blocked)
    assert "public.people" in adm.error.message
    assert adm.hits[0]["reltuples"] == 2_000_000 and adm.hits[0]["threshold"] == 100_000


async def test_unfiltered_scan_quiet_on_ordinary_work() -> None:
    guard, _ = make({"id": "scan", "detect": "unfiltered_scan", "action": "block"})
    quiet = [
        Stmt(has_where=True),  # filtered
        Stmt(has_where=False, has_limit=True),  # a peek: SELECT * FROM people LIMIT 100
        Stmt(has_where=False, tables=("public.regions",)),  # small lookup table
        Stmt(has_where=False, tables=("public.unknown",)),  # no estimate: cannot judge
        Stmt(has_where=False, tables=("public.fresh",)),  # never analyzed: cannot judge
        Stmt(has_where=False, tables=("public.log_1",)),  # one partition is small
        Stmt(kind="explain", has_where=False),  # EXPLAIN reads no rows
        Stmt(has_where=False, functions=("pg_catalog.count",)),  # SELECT count(*) FROM people
        Stmt(has_where=False, functions=("pg_catalog.avg", "pg_catalog.max")),
    ]
    for stmt in quiet:
        adm = await guard.admit(ALICE, [stmt])
        assert adm.error is None and adm.hits == [], stmt


async def test_unfiltered_scan_sees_gathering_aggregates() -> None:
    guard, _ = make({"id": "scan", "detect": "unfiltered_scan", "action": "block"})
    gather = Stmt(has_where=False, functions=("pg_catalog.count", "pg_catalog.string_agg"))
    assert isinstance((await guard.admit(ALICE, [gather])).error, Blocked)
    upper = Stmt(has_where=False, functions=("pg_catalog.upper",))
    assert isinstance((await guard.admit(ALICE, [upper])).error, Blocked)


async def test_unfiltered_scan_sees_through_views_and_partitions() -> None:
    guard, _ = make({"id": "scan", "detect": "unfiltered_scan", "action": "log"})
    adm = await guard.admit(ALICE, [Stmt(has_where=False, tables=("public.people_v",))])
    assert adm.hits[0]["reltuples"] == 2_000_000
    adm = await guard.admit(ALICE, [Stmt(has_where=False, tables=("public.log",))])
    assert adm.hits[0]["reltuples"] == 130_000


async def test_unfiltered_scan_threshold_is_a_rule_key() -> None:
    guard, _ = make(
        {"id": "scan", "detect": "unfiltered_scan", "action": "log", "min_rows": 1_000_000}
    )
    assert (await guard.admit(ALICE, [Stmt(has_where=False, tables=("public.events",))])).hits == []
    adm = await guard.admit(ALICE, [Stmt(has_where=False)])
    assert adm.error is None and adm.hits[0]["detector"] == "unfiltered_scan"


async def test_unfiltered_scan_without_catalog_stays_quiet() -> None:
    guard = Guard(
        ruleset({"id": "scan", "detect": "unfiltered_scan"}), MemoryStore(), None, clock=Clock()
    )
    assert (await guard.admit(ALICE, [Stmt(has_where=False)])).error is None


def page(n: int, size: int = 100) -> Stmt:
    return Stmt(has_limit=True, fingerprint="pagefp", offset=n * size, literals=(size, n * size))


async def test_paging_scan_fires_at_the_twentieth_page() -> None:
    guard, clock = make({"id": "paging", "detect": "paging_scan", "action": "block"})
    for n in range(19):
        adm = await guard.admit(ALICE, [page(n)])
        assert adm.error is None and adm.hits == [], n
        clock.advance(5)
    adm = await guard.admit(ALICE, [page(19)])
    assert isinstance(adm.error, Blocked)
    assert "20 pages" in adm.error.message
    assert adm.hits[0]["pages"] == 20 and adm.hits[0]["fingerprint"] == "pagefp"
    # another user's paging is his own history
    assert (await guard.admit(BOB, [page(19)])).error is None


async def test_three_pages_and_repeats_are_not_a_scrape() -> None:
    guard, clock = make({"id": "paging", "detect": "paging_scan", "action": "block"})
    for _ in range(30):  # the same three pages, back and forth, all afternoon
        for n in (0, 1, 2):
            adm = await guard.admit(ALICE, [page(n)])
            assert adm.error is None and adm.hits == []
        clock.advance(30)


async def test_paging_history_expires_with_the_window() -> None:
    guard, clock = make(
        {"id": "paging", "detect": "paging_scan", "action": "block", "window": "10m"}
    )
    for n in range(19):
        assert (await guard.admit(ALICE, [page(n)])).error is None
    clock.advance(601)
    for n in range(19, 38):
        assert (await guard.admit(ALICE, [page(n)])).error is None
    assert isinstance((await guard.admit(ALICE, [page(38)])).error, Blocked)


async def test_keyset_paging_counts_changing_literals() -> None:
    guard, _ = make({"id": "paging", "detect": "paging_scan", "action": "log", "max_pages": 5})
    hits = []
    for last_id in range(0, 1000, 100):  # WHERE id > $last ORDER BY id LIMIT 100
        stmt = Stmt(
            has_limit=True,
            fingerprint="keyset",
            literals=(last_id, 100),
            redacted="SELECT * FROM people WHERE id > ? ORDER BY id LIMIT ?",
        )
        hits.append(bool((await guard.admit(ALICE, [stmt])).hits))
    assert hits == [False] * 4 + [True] * 6


async def test_limited_lookups_are_not_pages() -> None:
    guard, _ = make({"id": "paging", "detect": "paging_scan", "action": "block", "max_pages": 3})
    for person in range(10):  # SELECT * FROM people WHERE id = ? LIMIT 1
        stmt = Stmt(
            has_limit=True,
            fingerprint="lookup1",
            literals=(person, 1),
            redacted="SELECT * FROM people WHERE id = ? LIMIT ?",
        )
        assert (await guard.admit(ALICE, [stmt])).hits == []


async def test_enumeration_fires_on_many_distinct_lookups() -> None:
    guard, _ = make({"id": "enum", "detect": "enumeration", "action": "block"})
    for person in range(49):
        stmt = Stmt(fingerprint="lookup", literals=(f"person-{person}",))
        assert (await guard.admit(ALICE, [stmt])).error is None
    adm = await guard.admit(ALICE, [Stmt(fingerprint="lookup", literals=("person-49",))])
    assert isinstance(adm.error, Blocked) and "50 distinct lookups" in adm.error.message
    assert adm.hits[0]["distinct"] == 50


async def test_enumeration_quiet_on_ordinary_work() -> None:
    guard, clock = make({"id": "enum", "detect": "enumeration", "action": "block"})
    # the same few lookups repeated, and many different queries each run a few times
    for rep in range(20):
        for region in ("north", "south", "east"):
            stmt = Stmt(fingerprint="by-region", literals=(region,))
            assert (await guard.admit(ALICE, [stmt])).hits == []
        for q in range(30):
            stmt = Stmt(fingerprint=f"report-{q}", literals=(rep % 4,))
            assert (await guard.admit(ALICE, [stmt])).hits == []
        clock.advance(60)
    # OFFSET paging is paging_scan's business, not enumeration's
    for n in range(60):
        assert (await guard.admit(ALICE, [page(n)])).hits == []


async def test_enumeration_threshold_key_and_throttle() -> None:
    guard, _ = make(
        {"id": "enum", "detect": "enumeration", "action": "throttle", "max_distinct": 3}
    )
    delays = []
    for person in range(5):
        stmt = Stmt(fingerprint="lookup", literals=(person,))
        delays.append((await guard.admit(ALICE, [stmt])).delay)
    assert delays == [0, 0, 1.0, 1.0, 1.0]


async def test_detector_dry_run_reports_only() -> None:
    guard, _ = make({"id": "no-copy", "detect": "copy_out", "action": "block", "mode": "dry_run"})
    adm = await guard.admit(ALICE, [Stmt(kind="copy", copy_out=True)])
    assert adm.error is None and adm.hits[0]["dry_run"] is True


class Recording(MemoryStore):
    """A memory store that remembers the members the detectors hand it."""

    def __init__(self) -> None:
        super().__init__()
        self.members: list[str] = []

    async def seen(self, key: str, member: str, window: float, now: float) -> int:
        self.members.append(member)
        return await super().seen(key, member, window, now)


async def test_looked_up_values_reach_the_store_keyed_by_the_ledger_key() -> None:
    """The enumeration history holds keyed digests: a reader of the shared store
    cannot test guesses of the SSNs looked up (the same key on every instance)."""
    import hashlib

    members: dict[bytes, list[str]] = {}
    for key in (b"ledger-one", b"ledger-two", b"ledger-one"):
        store = Recording()
        entry = {"id": "enum", "detect": "enumeration", "action": "log"}
        guard = Guard(ruleset(entry), store, CATALOG, clock=Clock(), ledger_key=key)
        await guard.admit(ALICE, [Stmt(fingerprint="lookup", literals=("078-05-1120",))])
        assert members.setdefault(key, store.members) == store.members  # stable per key
    assert members[b"ledger-one"] != members[b"ledger-two"]
    plain = hashlib.blake2b(repr(("078-05-1120",)).encode(), digest_size=12).hexdigest()
    assert plain not in members[b"ledger-one"] and "078-05-1120" not in members[b"ledger-one"][0]
