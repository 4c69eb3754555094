"""What a session watches for: the columns holding subjects' keys, and what its statements return.

`Watch` is one database's map from a result column's origin, (table OID,
attnum), to the subject whose key that column holds, with the ledger key;
proxy/watching.py builds it from the rule files' `subjects` and the
database's catalog, anew after a rules reload or a catalog refresh.

`Shape` is what a prepared statement's or a portal's rows look like, kept
from the RowDescription that answered its Describe: a statement prepared
once and run many times with Bind and Execute alone (asyncpg, JDBC do
this) is described once. The description is kept as the message body and
read against the watch in force when a run starts, so a reload applies to
statements prepared before it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from proxy.ledger.copyout import CopyReader, CopyTable, copy_plan
from proxy.ledger.rows import Column, Decoys, Owner, Read, RowReader, described, with_formats


def _nowhere(name: str) -> Sequence[str]:
    return ()


@dataclass(frozen=True, slots=True, eq=False)
class Watch:
    """One database's watched columns: (table OID, attnum) -> subject id.

    For COPY, which names no origins: the watched tables by name, and which
    schemas hold a relation of a given name (to resolve an unqualified one).
    """

    columns: Mapping[tuple[int, int], str]
    key: bytes
    tables: Mapping[str, CopyTable] = field(default_factory=dict)
    schemas_with: Callable[[str], Sequence[str]] = _nowhere
    decoys: Decoys = field(default_factory=dict)  # canary keys, looked for past the cap

    def copy_reader(
        self,
        sql: str,
        binary: bool,
        search_path: Sequence[str],
        read: Read,
        owner: Owner,
    ) -> CopyReader | None:
        """A reader of a COPY TO STDOUT's rows, if it copies watched columns of a table."""

        def resolve(name: str) -> list[str]:
            have = self.schemas_with(name)
            return [f"{s}.{name}" for s in search_path if s in have]

        plan = copy_plan(sql, self.tables, resolve, binary)
        if plan is None:
            return None
        reader = CopyReader(plan, binary, self.key, read, owner, self.decoys)
        return reader if reader else None

    def reader(self, cols: tuple[Column, ...], read: Read, owner: Owner) -> RowReader | None:
        """A reader of the rows of a statement with these columns; None if nothing to read."""
        if not cols:
            return None
        reader = RowReader(cols, self.key, read, owner, self.decoys)
        return reader if reader else None


@dataclass(slots=True, eq=False)
class Shape:
    """A prepared statement's or portal's result description, once the upstream gave it."""

    body: bytes | None = None  # the RowDescription's body; None: not described (yet)
    asked: bool = False  # a Describe of it is on its way
    statement: Shape | None = None  # a portal: the statement it was bound from
    formats: tuple[int, ...] = ()  # a portal: its Bind's result-format codes
    _cache: tuple[Mapping[tuple[int, int], str], tuple[Column, ...]] | None = field(
        default=None, repr=False
    )

    @property
    def known(self) -> bool:
        """Is (or will) its description be at hand when its rows come?"""
        st = self.statement
        return self.asked or self.body is not None or (st is not None and st.known)

    def describe(self, body: bytes) -> None:
        """The upstream's RowDescription for it arrived."""
        self.body = body
        self._cache = None

    def columns(self, watch: Watch) -> tuple[Column, ...]:
        """The watched columns its rows carry, as they come (formats applied)."""
        cache = self._cache
        if cache is not None and cache[0] is watch.columns:
            return cache[1]
        if self.body is not None:  # a portal's own Describe gives the formats too
            cols = described(self.body, watch.columns)
        elif self.statement is not None and self.statement.body is not None:
            cols = with_formats(self.statement.columns(watch), self.formats)
        else:
            return ()  # never described: its rows are not read (docs/ledger.md)
        self._cache = (watch.columns, cols)
        return cols
