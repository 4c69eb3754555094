"""Runs of named statements and cursors: every one admitted by the hooks before it goes.

A protocol Execute, SQL EXECUTE and FETCH run something made earlier (a Parse,
PREPARE, DECLARE, or nothing the session saw): `Session` asks the hooks about
each run (`Decide` with the run's target and bound values) and these methods
send it once admitted, or refuse it. Methods of `Session`; the attributes are
the session's.
"""

from __future__ import annotations

from collections import deque

from proxy import messages as m
from proxy.actions import Action, Decide, Plan, Running, Throttle, ToServer
from proxy.errors import ProxyError
from proxy.hooks import Admission, Effect
from proxy.named import ExecuteCheck, Held, QueryRuns, Run, admitted, in_query, unknown
from proxy.replies import Entry, FunctionCall
from proxy.session_upstream import UpstreamSide
from proxy.transcode import kinds_of


class RunsSide(UpstreamSide):
    """Run-admission methods of `Session`; the attributes are the session's."""

    params: dict[str, tuple[str, ...]]
    _waiting: m.Parse | FunctionCall | ExecuteCheck | Held | QueryRuns | str | None

    def _refuse(self, stmt: Running, error: ProxyError, out: list[Action], *, ready: bool) -> None:
        raise NotImplementedError

    def _known(self, kind: bytes, name: str) -> bool:
        if kind == b"S":
            return name in self.statements or self.names.statement(name) is not None
        return name in self.portals or self.names.cursor(name) is not None

    def _resolve(self, effect: Effect) -> Run:
        """What an EXECUTE or FETCH runs: a statement or cursor by name, or an unknown."""
        name = effect.name or ""
        if effect.cursor:
            cur = self.names.cursor(name)
            if cur is not None:
                return Run(cur.plan, name=name, cursor=cur)
            portal = self.portals.get(name)  # FETCH reads protocol portals too
            return Run(portal or unknown(name, cursor=True), name=name)
        plan = self.statements.get(name) or self.names.statement(name)
        return Run(plan or unknown(name, cursor=False), effect.params, name=name)

    def _ask(self, run: Run, out: list[Action]) -> None:
        out.append(Decide(run.target.sql, True, params=run.params, token=run.target.admission))

    def _ask_unknown(self, held: Held, out: list[Action]) -> None:
        self._waiting = held
        self._ask(Run(unknown(held.name, cursor=held.cursor)), out)

    def _execute(self, portal: str, raw: bytes, out: list[Action]) -> None:
        """A protocol Execute: every run is admitted, except a portal's later pages."""
        plan = self.portals.get(portal)
        effect = plan.admission.effects.get(0) if plan is not None else None
        if plan is None:
            cur = self.names.cursor(portal)
            run = Run(cur.plan, name=portal, cursor=cur) if cur else None
            run = run or Run(unknown(portal, cursor=True), name=portal)
        elif effect is not None and effect.op == "run":
            run = self._resolve(effect)  # a Parse of EXECUTE or FETCH
            run.params = (*run.params, *self.params.get(portal, ()))
            effect = None
        elif plan.admission.per_execute:
            # Values bound to $n are what lookup and paging detectors need.
            run = Run(plan, self.params.get(portal, ()), name=portal, store=True)
        else:
            self._seen_undescribed(portal, out)
            out.append(ToServer(raw))
            self.text.forwarded(b"E", plan.sql, kinds_of(plan.admission))
            stmt = Running(plan, portal=portal)
            self._seen_execute(stmt, portal)
            self.queue.append(Entry(b"E", stmts=deque([stmt]), effect=effect))
            return
        self._waiting = ExecuteCheck(portal, run, raw, effect)
        self._ask(run, out)

    def _run_admitted(
        self, waiting: ExecuteCheck, adm: Admission, decide_s: float, out: list[Action]
    ) -> None:
        run, portal = waiting.run, waiting.portal
        plan = self._admitted(run, adm, decide_s)
        if run.store and adm.error is None and self.portals.get(portal) is run.target:
            # The portal's later Executes (a suspended portal) continue this run.
            self.portals[portal] = plan
        counted = portal if run.store or run.cursor is not None else None
        stmt = Running(plan, portal=counted)
        if adm.error is not None:
            self._refuse(stmt, adm.error, out, ready=False)
            self._discard = True
            return
        if adm.delay > 0 and adm is not run.target.admission:  # not a cursor's later run
            out.append(Throttle(adm.delay))
        self._seen_undescribed(portal, out)
        out.append(ToServer(waiting.raw))
        self.text.forwarded(b"E", plan.sql, kinds_of(plan.admission))
        if waiting.effect is not None:
            self.names.sent(waiting.effect)
        self._seen_execute(stmt, portal)
        self.queue.append(Entry(b"E", stmts=deque([stmt]), effect=waiting.effect))

    def _admitted(self, run: Run, adm: Admission, decide_s: float) -> Plan:
        """The plan a run goes on under; a cursor's later runs continue from it.

        A refused run leaves the cursor as it was: its next FETCH is decided
        afresh (a budget may have room again, the rules may change back).
        """
        target = run.target
        if adm is target.admission:
            return target
        plan = Plan(target.sql, adm, True, target.decide_s + decide_s, target.encoding)
        if run.cursor is not None and adm.error is None:
            admitted(run.cursor, target, plan)
        return plan

    def _held_admitted(self, held: Held, adm: Admission, out: list[Action]) -> None:
        """A Bind or Describe naming what the session never saw made, as the hooks said."""
        plan = Plan(unknown(held.name, cursor=held.cursor).sql, adm, extended=True)
        if adm.error is not None:
            self._refuse(Running(plan), adm.error, out, ready=False)
            self._discard = True
            return
        if held.kind == b"B":
            self.portals[held.portal] = plan
            self.portal_shapes.pop(held.portal, None)
        out.append(ToServer(held.raw))
        self.queue.append(Entry(held.kind))

    def _next_run(self, qr: QueryRuns, out: list[Action]) -> None:
        """Ask about the Query's next EXECUTE or FETCH; once all are admitted, send it."""
        effects = qr.plan.admission.effects
        while qr.todo:
            effect = effects[qr.todo[0]]
            if effect.op == "run":
                qr.run = self._resolve(effect)
                self._waiting = qr
                self._ask(qr.run, out)
                return
            self.names.sent(effect)  # a later statement of the string may name it
            qr.todo.pop(0)
        plan, adm = qr.plan, qr.plan.admission
        delay = max(adm.delay, qr.delay)
        if delay > 0:
            out.append(Throttle(delay))
        n = max(1, len(adm.statements))
        stmts = deque(
            Running(qr.admitted.get(i, plan), index=i, portal=qr.cursors.get(i)) for i in range(n)
        )
        sql = adm.sql if adm.sql is not None else plan.sql
        out.append(ToServer(m.query(self.text.codec.encode(sql))))  # writable: checked at decide
        self.text.forwarded(b"Q", sql, kinds_of(adm))
        self.queue.append(Entry(b"Q", stmts=stmts, plan=plan, count=n))

    def _query_run_admitted(
        self, qr: QueryRuns, adm: Admission, decide_s: float, out: list[Action]
    ) -> None:
        index, run = qr.todo.pop(0), qr.run
        assert run is not None
        plan = in_query(qr.plan, index, self._admitted(run, adm, decide_s))
        if adm.error is not None:
            self._refuse(Running(plan, index=index), adm.error, out, ready=True)
            return
        qr.admitted[index] = plan
        if adm is not run.target.admission:  # a cursor's later FETCH is not delayed again
            qr.delay = max(qr.delay, adm.delay)
        if run.cursor is not None:
            qr.cursors[index] = run.name
        self._next_run(qr, out)
