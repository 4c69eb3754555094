"""Entries of the session's expected-reply queue, and small helpers over statements.

Each client message forwarded upstream that expects replies becomes an
`Entry`; a refusal is an `Entry` of kind `!` in the same queue, awaiting the
error of the stand-in message sent upstream in place of the refused one, so
it reaches the client exactly where PostgreSQL would have put it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from proxy.actions import Plan, Running
from proxy.gucs import Change
from proxy.hooks import Effect
from proxy.ledger.watch import Shape


@dataclass(frozen=True, slots=True)
class FunctionCall:
    oid: int
    raw: bytes


@dataclass(slots=True)
class Entry:
    """Replies the upstream owes for one forwarded client message, or a synthetic reply."""

    kind: bytes  # client message type; b"!" for a refusal
    stmts: deque[Running] = field(default_factory=deque)
    synthetic: bytes = b""  # refusal: the ErrorResponse to send in place of the upstream's
    ready: bool = False  # refusal: of a simple Query or FunctionCall (upstream sends Z)
    plan: Plan | None = None  # Parse: the statement prepared; Query: the string
    count: int = 0  # Query: statements started so far
    aborted: bool = False  # simple query cut off: drop the rest until ReadyForQuery
    name: str = ""  # Parse: the statement name it (re)defines
    prev: Plan | None = None  # Parse: what that name meant before, restored if it fails
    effect: Effect | None = None  # Execute: what its statement does to SQL-made names
    shape: Shape | None = None  # Describe: where its RowDescription is kept (ledger)
    hidden: bool = False  # a Describe the proxy sent itself: its reply is not the client's


def next_stmt(head: Entry) -> Running:
    assert head.plan is not None
    s = Running(head.plan, index=head.count)
    head.count += 1
    head.stmts.append(s)
    return s


def for_portal(plan: Plan) -> Plan:
    """A portal's own copy of its statement's plan: its limits count across Executes."""
    lim = plan.limits
    if lim is None:
        return plan
    return replace(plan, admission=replace(plan.admission, limits=replace(lim)))


def undo_parse(statements: dict[str, Plan], e: Entry) -> None:
    """A Parse the upstream did not carry out leaves the name as it was."""
    if e.kind != b"P" or e.plan is None or statements.get(e.name) is not e.plan:
        return
    if e.prev is None:
        del statements[e.name]
    else:
        statements[e.name] = e.prev


NO_LIMIT = 1 << 62


def room(stmt: Running | None) -> tuple[int, int]:
    """Rows and bytes `stmt` may still stream before its cap (huge when uncapped)."""
    lim = stmt.plan.limits if stmt is not None else None
    if lim is None or stmt is None:
        return NO_LIMIT, NO_LIMIT
    rows = NO_LIMIT if lim.max_rows is None else lim.max_rows - lim.used_rows - stmt.rows
    nbytes = NO_LIMIT if lim.max_bytes is None else lim.max_bytes - lim.used_bytes - stmt.bytes
    return rows, nbytes


_NO_INFO: Mapping[str, object] = MappingProxyType({})


def statement_change(s: Running) -> Change | None:
    """What `s` does to a tracked setting or the savepoints, as the engine decided it."""
    return s.plan.admission.changes.get(s.index)


def statement_info(s: Running) -> Mapping[str, object]:
    """The engine's facts about `s`, read in place (read on every completion: no copy)."""
    sts = s.plan.admission.statements
    return sts[s.index] if s.index < len(sts) else _NO_INFO
