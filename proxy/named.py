"""Statements prepared and cursors declared in SQL, as the session tracks them.

PostgreSQL keeps one namespace of prepared statements and one of portals per
backend: PREPARE s makes a statement a protocol Bind may name, DECLARE c a
portal a protocol Execute may name, and EXECUTE and FETCH run protocol-made
ones too. The session keeps the protocol-made names itself (`statements`,
`portals`) and the SQL-made ones here, each with the admission its runs
start from, so that every run is admitted by the guard whoever made it.

Lifetimes follow PostgreSQL. A name is recorded when the upstream confirms
the statement that made it (CommandComplete). Until then it is pending: a
run that names it further down the same string or pipeline finds it there,
since by the time the run reaches the upstream the name exists or the run
fails. A cursor ends at CLOSE, CLOSE ALL, DISCARD ALL or, unless declared
WITH HOLD, at the end of its transaction (ReadyForQuery idle); a prepared
statement at DEALLOCATE [ALL] or DISCARD ALL.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TypeVar

from proxy.actions import Plan
from proxy.hooks import Admission, Effect, Unknown

T = TypeVar("T")
MAX_PENDING = 1000  # names sent upstream and not yet confirmed, per session


@dataclass(slots=True)
class Cursor:
    """A cursor's plan: its DECLARE's admission, then that of its first run."""

    plan: Plan
    hold: bool = False
    origin: Admission | None = None  # the DECLARE's admission, to match its confirmation


@dataclass(slots=True)
class Run:
    """A run of a named statement or cursor, held until the hooks have admitted it."""

    target: Plan  # what it is admitted as (asked of `Hooks.execute`)
    params: tuple[str, ...] = ()  # Bind or EXECUTE values, for the detectors
    name: str = ""
    cursor: Cursor | None = None  # the cursor it reads, whose count it continues
    store: bool = False  # a protocol portal's first Execute: its later pages continue it


@dataclass(slots=True)
class ExecuteCheck:
    """A protocol Execute held until the hooks have admitted its run."""

    portal: str
    run: Run
    raw: bytes
    effect: Effect | None = None  # the portal's statement defines a name (PREPARE, DECLARE)


@dataclass(slots=True)
class Held:
    """A Bind or Describe naming what the session never saw made, held for the hooks."""

    kind: bytes  # b"B" or b"D"
    raw: bytes
    portal: str  # Bind: the portal it makes
    name: str  # the statement (or Describe: portal) it names
    cursor: bool = False


@dataclass(slots=True)
class QueryRuns:
    """A simple Query admitted by policy whose EXECUTEs and FETCHes await admission."""

    plan: Plan  # the Query's own
    todo: list[int]  # indices of its statements that define or run a name, in order
    run: Run | None = None  # the one being asked about
    admitted: dict[int, Plan] = field(default_factory=dict)  # by statement index
    cursors: dict[int, str] = field(default_factory=dict)  # FETCH: the cursor it counts on
    delay: float = 0.0


def unknown(name: str, *, cursor: bool) -> Plan:
    """The plan of a name the session never saw made: the hooks decide on it."""
    what = "portal" if cursor else "statement"
    return Plan(f"<unknown {what} {name!r}>", Admission(token=Unknown(cursor, name)), True)


class Names:
    """SQL-made prepared statements and cursors of one session."""

    def __init__(self) -> None:
        self.prepared: dict[str, Plan] = {}
        self.cursors: dict[str, Cursor] = {}
        self._preparing: dict[str, Plan] = {}  # sent upstream, not yet confirmed
        self._declaring: dict[str, Cursor] = {}

    def statement(self, name: str) -> Plan | None:
        return self.prepared.get(name) or self._preparing.get(name)

    def cursor(self, name: str) -> Cursor | None:
        return self.cursors.get(name) or self._declaring.get(name)

    def sent(self, effect: Effect) -> None:
        """A statement that defines a name goes upstream: runs behind it may name it."""
        name, adm = effect.name, effect.admission
        if name is None or adm is None:
            return
        if effect.op == "prepare":
            _put(self._preparing, name, _plan(effect))
        elif effect.op == "declare":
            _put(self._declaring, name, Cursor(_plan(effect), effect.hold, adm))

    def confirm(
        self, effect: Effect, statements: dict[str, Plan], portals: dict[str, Plan]
    ) -> None:
        """The upstream completed a statement with this effect: record what it did."""
        op, name = effect.op, effect.name
        if op == "prepare" and name is not None and effect.admission is not None:
            plan = self._preparing.pop(name, None)
            self.prepared[name] = plan or _plan(effect)
            statements.pop(name, None)
        elif op == "declare" and name is not None and effect.admission is not None:
            cur = self._declaring.get(name)
            if cur is not None and cur.origin is effect.admission:
                del self._declaring[name]  # keeping what its runs were admitted as
            else:
                cur = Cursor(_plan(effect), effect.hold, effect.admission)
            self.cursors[name] = cur
            portals.pop(name, None)
        elif op in ("close", "discard"):
            self.drop_portal(name, portals)
        if op in ("deallocate", "discard"):
            self.drop_statement(name, statements)

    def drop_portal(self, name: str | None, portals: dict[str, Plan]) -> None:
        if name is None:
            self.cursors.clear()
            portals.clear()
        else:
            self.cursors.pop(name, None)
            portals.pop(name, None)

    def drop_statement(self, name: str | None, statements: dict[str, Plan]) -> None:
        if name is None:
            self.prepared.clear()
            statements.clear()
        else:
            self.prepared.pop(name, None)
            statements.pop(name, None)

    def transaction_ended(self) -> None:
        """ReadyForQuery idle: of the cursors confirmed so far, only WITH HOLD ones are left."""
        if self.cursors:
            self.cursors = {k: c for k, c in self.cursors.items() if c.hold}


def admitted(cur: Cursor, before: Plan, plan: Plan) -> None:
    """A run of `cur` was admitted as `plan`: its later runs go on from it."""
    if cur.plan is not before or plan is before:
        return
    old, new = before.limits, plan.limits
    if old is not None and new is not None and old is not new:
        # Admitted anew after a rules reload: what it already streamed still counts.
        new.used_rows, new.used_bytes = old.used_rows, old.used_bytes
    cur.plan = plan


def in_query(query: Plan, index: int, run: Plan) -> Plan:
    """A run's plan for statement `index` of a Query: audited as that statement."""
    adm, infos = run.admission, list(query.admission.statements)
    if index < len(infos) and adm.statements:
        inner = adm.statements[0]
        infos[index] = {**infos[index], "tables": inner.get("tables", [])}
        infos[index]["columns"] = inner.get("columns", [])
    shown = replace(adm, statements=infos, changes=query.admission.changes, sql=query.admission.sql)
    return Plan(query.sql, shown, False, decide_s=query.decide_s)


def _put(pending: dict[str, T], name: str, value: T) -> None:
    """Pending names whose statement failed are never confirmed: keep only the latest."""
    pending.pop(name, None)
    pending[name] = value
    while len(pending) > MAX_PENDING:
        del pending[next(iter(pending))]


def _plan(effect: Effect) -> Plan:
    assert effect.admission is not None
    return Plan(effect.text, effect.admission, True)
