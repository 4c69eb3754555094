"""Extraction detectors: does this statement, with the user's recent history, look like a scrape?

Each detector looks at one statement before it runs (the policy engine's
facts about it) and, for the history-based ones, at how many distinct pages
or lookups of the same statement fingerprint the user ran in the window.
The history lives in the Store, so every instance sharing it sees the same
scraper. A detector returns a `Hit` with its figures; what happens then
(log, throttle, block) is the rule's action, decided by the guard.

- copy_out: COPY ... TO STDOUT or COPY (query) TO.
- unfiltered_scan: a read of a table the planner estimates at >= min_rows
  rows, with no WHERE and no LIMIT (and not just aggregates over it).
- paging_scan: the same fingerprint with a LIMIT, run over >= max_pages
  distinct OFFSETs (or keyset values: a range comparison like `id > ?`
  whose literal changes) in the window.
- enumeration: the same fingerprint with >= max_distinct distinct literal
  sets in the window (person after person looked up one by one).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from proxy.catalog import Catalog, Relation
from proxy.guard.limits import ExtractionSpec
from proxy.guard.store import Store, state_key

# Statement kinds that read rows out to the client. DECLARE is policed by its
# inner query (engine.py), so its tables and WHERE/LIMIT facts are that query's.
READ_KINDS = frozenset({"select", "declare", "copy", "with", "table", "values"})

# A whole-table read that only aggregates (SELECT count(*) FROM big) is everyday
# analyst work, not extraction; aggregates that gather rows into one value are not.
REDUCING = frozenset(
    [
        "count",
        "sum",
        "avg",
        "min",
        "max",
        "stddev",
        "stddev_pop",
        "stddev_samp",
        "variance",
        "var_pop",
        "var_samp",
        "bool_and",
        "bool_or",
        "every",
        "bit_and",
        "bit_or",
        "bit_xor",
        "corr",
        "covar_pop",
        "covar_samp",
        "regr_avgx",
        "regr_avgy",
        "regr_count",
        "regr_intercept",
        "regr_r2",
        "regr_slope",
        "regr_sxx",
        "regr_sxy",
        "regr_syy",
        "percentile_cont",
        "percentile_disc",
        "mode",
        "approx_count_distinct",
    ]
)
COLLECTING = frozenset(
    [
        "array_agg",
        "string_agg",
        "group_concat",
        "json_agg",
        "jsonb_agg",
        "json_object_agg",
        "jsonb_object_agg",
        "xmlagg",
        "json_arrayagg",
        "json_objectagg",
    ]
)


class StatementFacts(Protocol):
    """What the detectors need from policy.engine.StatementInfo."""

    @property
    def kind(self) -> str: ...
    @property
    def tables(self) -> Sequence[str]: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def literals(self) -> Sequence[Any]: ...
    @property
    def has_where(self) -> bool: ...
    @property
    def has_limit(self) -> bool: ...
    @property
    def offset(self) -> int | None: ...
    @property
    def copy_out(self) -> bool: ...
    @property
    def functions(self) -> Sequence[str]: ...


@dataclass(frozen=True, slots=True)
class Hit:
    """One detector or budget that fired, as it goes into the audit record."""

    rule: str
    kind: str  # detector name, or "budget"
    action: str
    figures: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False

    def record(self) -> dict[str, Any]:
        key = "budget" if self.kind == "budget" else "detector"
        out: dict[str, Any] = {"rule": self.rule, key: self.kind, "action": self.action}
        if self.dry_run:
            out["dry_run"] = True
        out.update(self.figures)
        return out


class SizeEstimator:
    """Planner row estimates (pg_class.reltuples) for `schema.table`, from a Catalog snapshot.

    A view or materialized view without its own estimate counts as its
    largest base table; a partitioned table as the sum of its leaf
    partitions. Unknown or never-analyzed relations (-1) have no estimate,
    and the detector stays quiet rather than guess. Answers are cached per
    snapshot (the guard makes a new estimator when the catalog is swapped).
    """

    def __init__(self, catalog: Catalog | None) -> None:
        self.catalog = catalog
        self._cache: dict[str, float | None] = {}
        self._children: dict[str, list[Relation]] | None = None

    def rows(self, table: str) -> float | None:
        if table not in self._cache:
            self._cache[table] = self._estimate(table)
        return self._cache[table]

    def _estimate(self, table: str) -> float | None:
        if self.catalog is None:
            return None
        rel = self.catalog.relations.get(table)
        if rel is None:
            return None
        if rel.kind == "partitioned":
            leaves = [c.reltuples for c in self._leaves(table) if c.reltuples >= 0]
            return sum(leaves) if leaves else None
        if rel.reltuples >= 0 and rel.kind != "view":
            return rel.reltuples
        if rel.depends_on:
            bases = [self.rows(t) for t in rel.depends_on if t != table]
            known = [b for b in bases if b is not None]
            return max(known) if known else None
        return None

    def _leaves(self, table: str) -> list[Relation]:
        if self._children is None:
            self._children = {}
            assert self.catalog is not None
            for r in self.catalog.relations.values():
                if r.kind != "partitioned":
                    for p in r.parents:
                        self._children.setdefault(p, []).append(r)
        return self._children.get(table, [])


def _digest(values: Sequence[Any], key: bytes) -> str:
    """The statement's literal values as the store keeps them: keyed (the ledger key,
    shared by every instance), so a reader of Redis cannot test guesses of an SSN."""
    if len(key) > 64:  # blake2b's longest key
        key = hashlib.blake2b(key).digest()
    return hashlib.blake2b(repr(tuple(values)).encode(), digest_size=12, key=key).hexdigest()


# COPY ... TO STDOUT / PROGRAM / a file (redacted to `?`), found in the text for
# statements the parser could not model (e.g. `TO STDOUT (FORMAT csv)` options).
_COPY_TO = re.compile(r"^\s*COPY\b.*\bTO\s+(?:STDOUT\b|PROGRAM\b|\?|E?')", re.I | re.S)


def _copies_out(stmt: StatementFacts) -> bool:
    if stmt.copy_out:
        return True
    text = getattr(stmt, "redacted", None) or ""
    return stmt.kind == "copy" and bool(_COPY_TO.match(str(text)))


# Keyset paging compares with the last key seen: `id > ?`, `(a, b) < (?, ?)`.
_RANGE = re.compile(r"(?:(?<![<>!])>=?|<(?!>)=?)\s*\(?\s*\$?\?")  # not <> or !=


def _keyset(stmt: StatementFacts) -> bool:
    text = getattr(stmt, "redacted", None)
    return True if not text else bool(_RANGE.search(str(text)))


def _reads(stmt: StatementFacts) -> bool:
    return stmt.kind in READ_KINDS


def _only_aggregates(stmt: StatementFacts) -> bool:
    names = {f.rpartition(".")[2].lower() for f in stmt.functions}
    return bool(names & REDUCING) and not names & COLLECTING


async def detect(
    spec: ExtractionSpec,
    stmt: StatementFacts,
    user: str,
    store: Store,
    sizes: SizeEstimator,
    now: float,
    key: bytes = b"",
) -> Hit | None:
    """Run `spec`'s detector on one statement; record history; return a Hit if it fires.

    `key`: what the literal values the history keeps are keyed with (the ledger key).
    """
    kind = spec.detect
    if kind == "copy_out":
        if not _copies_out(stmt):
            return None
        return _hit(spec, {"tables": list(stmt.tables)})
    if kind == "unfiltered_scan":
        if not _reads(stmt) or stmt.has_where or stmt.has_limit or _only_aggregates(stmt):
            return None
        for table in stmt.tables:
            rows = sizes.rows(table)
            if rows is not None and rows >= spec.min_table_rows:
                figures = {"table": table, "reltuples": int(rows), "threshold": spec.min_table_rows}
                return _hit(spec, figures)
        return None
    if kind == "paging_scan":
        if not _reads(stmt) or not stmt.has_limit or not stmt.fingerprint:
            return None
        if stmt.offset is not None:
            page = f"o:{stmt.offset}"
        elif stmt.literals and _keyset(stmt):
            page = "k:" + _digest(stmt.literals, key)  # keyset paging: WHERE id > <last seen>
        else:
            page = "o:0"  # the first page, or a lookup with a LIMIT (enumeration's business)
        where = state_key("page", spec.id, user, stmt.fingerprint)
        pages = await store.seen(where, page, spec.detector_window, now)
        if pages < spec.min_pages:
            return None
        return _hit(spec, _history_figures(stmt, "pages", pages, spec.min_pages, spec))
    if kind == "enumeration":
        # OFFSET paging changes a literal too; that is paging_scan's pattern, not this one.
        if not _reads(stmt) or not stmt.literals or not stmt.fingerprint:
            return None
        if stmt.offset is not None:
            return None
        where = state_key("enum", spec.id, user, stmt.fingerprint)
        distinct = await store.seen(where, _digest(stmt.literals, key), spec.detector_window, now)
        if distinct < spec.min_distinct:
            return None
        return _hit(spec, _history_figures(stmt, "distinct", distinct, spec.min_distinct, spec))
    return None


def _history_figures(
    stmt: StatementFacts, name: str, count: int, threshold: int, spec: ExtractionSpec
) -> dict[str, Any]:
    return {
        name: count,
        "threshold": threshold,
        "window_s": spec.detector_window,
        "fingerprint": stmt.fingerprint,
        "tables": list(stmt.tables),
    }


def _hit(spec: ExtractionSpec, figures: dict[str, Any]) -> Hit:
    assert spec.detect is not None
    return Hit(spec.id, spec.detect, spec.action, figures, spec.dry_run)


def reason(hit: Hit) -> str:
    """The human part of the 42501 message when a detector blocks."""
    f = hit.figures
    if hit.kind == "copy_out":
        return "COPY out of the database is not allowed"
    if hit.kind == "unfiltered_scan":
        return (
            f"unfiltered read of {f['table']} (about {f['reltuples']} rows); add a WHERE or LIMIT"
        )
    if hit.kind == "paging_scan":
        return f"paging scan: {f['pages']} pages of the same query within {_span(f['window_s'])}"
    if hit.kind == "enumeration":
        return (
            f"enumeration: {f['distinct']} distinct lookups of the same query "
            f"within {_span(f['window_s'])}"
        )
    return hit.kind


def _span(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"
