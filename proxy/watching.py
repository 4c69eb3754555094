"""Which result columns hold subjects' keys, per database: the rule files' subjects on the catalog.

A subject's key column and its `via` columns are named in the rule files as
schema.table.column; a RowDescription names a column by (table OID,
attnum). `watch_map` joins the two through a database's catalog snapshot,
including the partitions and inheritance children of each table (their
rows are the table's rows). `Watching` keeps one map per database for the
sessions, rebuilt when the rules or that database's snapshot change; a
subject column the catalog does not know is not watched, and said once in
the log. `subject_problems` is the same check for `oversight check`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from proxy.catalog import Catalog
from proxy.ledger.copyout import CopyTable
from proxy.ledger.rows import TYPE_OIDS, Decoys
from proxy.ledger.watch import Watch
from proxy.rules import RuleSet
from proxy.rules.subjects import SubjectRule

log = logging.getLogger("oversight.ledger")

# A database name -> the subjects in force and that database's catalog (None: not loaded).
Inputs = Callable[[str], tuple[Sequence[SubjectRule], Catalog | None]]


def _missing(catalog: Catalog, table: str, column: str) -> str | None:
    """Why (table, column) cannot be watched in `catalog`, or None if it can."""
    rel = catalog.relations.get(table)
    if rel is None:
        return f"{table} is not in the catalog"
    if column not in rel.columns:
        return f"{table} has no column {column}"
    return None


def _fields(s: SubjectRule) -> list[tuple[str, str, str]]:
    """(field as the rule file writes it, table, column) of a subject's watched columns."""
    out = [("key", s.table, s.key)]
    out += [(f"via[{i}]", v.table, v.column) for i, v in enumerate(s.via)]
    return out


def watch_map(
    subjects: Sequence[SubjectRule], catalog: Catalog
) -> tuple[dict[tuple[int, int], str], list[str]]:
    """(table OID, attnum) -> subject id, and what could not be watched (subject: why)."""
    children: dict[str, list[str]] = {}
    for q, rel in catalog.relations.items():
        for parent in rel.parents:
            children.setdefault(parent, []).append(q)
    out: dict[tuple[int, int], str] = {}
    missing: list[str] = []
    for s in subjects:
        for where, table, column in _fields(s):
            why = _missing(catalog, table, column)
            if why is not None:
                missing.append(f"subject {s.id}: {where}: {why}")
                continue
            for q in (table, *children.get(table, ())):
                rel = catalog.relations[q]
                attnum = rel.attnum(column)
                if rel.oid and attnum is not None:
                    out[(rel.oid, attnum)] = s.id
    out.update(_through_views(out, catalog))
    return out, missing


def _through_views(
    base: dict[tuple[int, int], str], catalog: Catalog
) -> dict[tuple[int, int], str]:
    """View and matview columns that pass a watched column through, over views of views too."""
    origin = {
        (rel.oid, att): (tbl, col)
        for rel in catalog.relations.values()
        if rel.oid
        for att, tbl, col in rel.origins
    }
    out: dict[tuple[int, int], str] = {}
    for column, cur in origin.items():
        for _ in range(32):  # views nest; a cycle cannot exist, but is not trusted either
            if cur in base or cur not in origin:
                break
            cur = origin[cur]
        if cur in base:
            out[column] = base[cur]
    return out


def subject_problems(rs: RuleSet, catalog: Catalog) -> list[str]:
    """`oversight check`: subjects' tables and columns the catalog does not have."""
    out = []
    for s in rs.subjects:
        for where, table, column in _fields(s):
            why = _missing(catalog, table, column)
            if why is not None:
                out.append(f"{rs.sources.get(s.id, '?')}: subject {s.id}: {where}: {why}")
    return out


def copy_tables(columns: dict[tuple[int, int], str], catalog: Catalog) -> dict[str, CopyTable]:
    """The tables holding watched columns, by name, for reading COPY TO STDOUT (copyout.py)."""
    out: dict[str, CopyTable] = {}
    for q, rel in catalog.relations.items():
        if not rel.oid or len(rel.attnums) != len(rel.columns):
            continue
        subjects = tuple(columns.get((rel.oid, a)) for a in rel.attnums)
        if any(subjects):
            types = rel.types if len(rel.types) == len(rel.columns) else ("",) * len(rel.columns)
            out[q] = CopyTable(rel.columns, subjects, tuple(TYPE_OIDS.get(t, 0) for t in types))
    return out


class Watching:
    """The sessions' source of `Watch`es: one per database, following reloads and refreshes."""

    def __init__(
        self, key: bytes, inputs: Inputs, decoys: Callable[[], Decoys] | None = None
    ) -> None:
        """`decoys`: the canary keys in force by subject, read with the subjects."""
        self.key = key
        self._inputs = inputs
        self._decoys = decoys
        self._cache: dict[str, tuple[Sequence[SubjectRule], Catalog, Watch | None]] = {}
        self._warned: set[tuple[str, str]] = set()

    def get(self, database: str) -> Watch | None:
        """The watch of `database`; None when nothing there is watched."""
        subjects, catalog = self._inputs(database)
        if not subjects or catalog is None:
            return None
        hit = self._cache.get(database)
        if hit is not None and hit[0] is subjects and hit[1] is catalog:
            return hit[2]
        columns, missing = watch_map(subjects, catalog)
        for why in missing:
            if (database, why) not in self._warned:
                self._warned.add((database, why))
                log.warning("ledger: database %r: %s; not watched", database, why)
        watch = None
        if columns:
            tables = copy_tables(columns, catalog)
            decoys = self._decoys() if self._decoys is not None else {}
            watch = Watch(columns, self.key, tables, catalog.schemas_with, decoys)
        self._cache[database] = (subjects, catalog, watch)
        return watch
