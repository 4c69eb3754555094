"""The extraction guard: decides caps, budgets, throttling and detector outcomes per statement.

Theory of operation. For every statement the session asks `admit` first.
The guard takes the `extraction:` entries matching the session's identity and

- caps: the tightest `max_rows_per_query` / `max_bytes_per_query` become the
  statement's StreamLimits, which the session enforces per message header;
- budgets: each entry with a `window` is checked and counted atomically in
  the Store. `block` refuses (53400) once exhausted and also caps the
  statement at what is left, so neither one statement nor two instances
  racing can overshoot by more than one statement's rows; `throttle` delays
  the statement and, once a stream runs past the budget, paces it (`pace`)
  at the budget spread over its window; `log` only reports;
- detectors: each `detect:` entry looks at the statement and history;
- ledger detectors (coverage, restricted_lookup; ledger.py) judge what a
  statement received or searched for, in `finished`; here, before a
  statement, only whether an earlier hit of theirs still stands, which
  refuses it (`block`) or delays it (`throttle`).

`finished` accounts the real rows and bytes into the budgets, runs the
ledger detectors on the statement's subject tally and returns their hits
for its audit record. `pace` also flushes running totals every
FLUSH_INTERVAL seconds, so other instances see a long stream's rows while
it is still going.

A token is per execution: a simple Query is admitted once, and each run of
a prepared statement or cursor (protocol Execute, EXECUTE, FETCH) is
admitted on its own (proxy/enforce.py), with its bound values among the
literals the detectors see. Only a suspended portal or an open cursor runs
on under one token; its later Executes and FETCHes add rows, not queries,
and the session counts them against the same caps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from proxy.catalog import Catalog
from proxy.errors import Blocked, ProxyError, VolumeLimit
from proxy.guard import ledger
from proxy.guard.detectors import Hit, SizeEstimator, StatementFacts, detect, reason
from proxy.guard.limits import ExtractionSpec, spec_from_entry
from proxy.guard.shaping import Caps, Pacer, budget_figures, throttle_delay
from proxy.guard.store import BudgetLimits, Store, StoreUnavailable, state_key
from proxy.hooks import StatementResult, StreamLimits
from proxy.identity import SessionFacts
from proxy.ledger.hashing import DEFAULT_KEY
from proxy.ledger.tally import Tally
from proxy.rules import RuleSet

log = logging.getLogger("oversight.guard")

FLUSH_INTERVAL = 0.5  # seconds between pushing a stream's running totals to the store
GuardDecision = Literal["allow", "throttle", "block"]


@dataclass(slots=True)
class GuardAdmission:
    """What the guard decided for one statement (or one multi-statement text)."""

    error: ProxyError | None = None
    delay: float = 0.0
    limits: StreamLimits | None = None
    hits: list[dict[str, Any]] = field(default_factory=list)
    rules: tuple[str, ...] = ()
    token: Any = None
    action: GuardDecision = "allow"
    # True when the session should call `pace` while the result streams
    # (limits is then set, possibly without caps, as hooks.throttle requires).
    paced: bool = False


@dataclass(slots=True)
class _Budget:
    spec: ExtractionSpec
    key: str
    window: float
    pacer: Pacer | None = None


@dataclass(slots=True)
class GuardToken:
    """Per-statement state handed back to `pace` and `finished`."""

    user: str
    budgets: list[_Budget]
    pacers: list[Pacer]
    max_pause: float
    flushed_rows: int = 0
    flushed_bytes: int = 0
    last_flush: float = 0.0
    dry_caps: list[ExtractionSpec] = field(default_factory=list)
    ledger: list[ExtractionSpec] = field(default_factory=list)  # judged in `finished`


class Guard:
    """Caps, per-user windows, throttling and detectors for the `extraction:` entries."""

    def __init__(
        self,
        rules: RuleSet,
        store: Store,
        catalog: Catalog | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        ledger_key: bytes = DEFAULT_KEY,
    ) -> None:
        """`ledger_key`: the subject ledger's HMAC key (Settings.ledger_secret), which
        restricted_lookup entries hash their keys with."""
        self.store = store
        self.clock = clock
        self.ledger_key = ledger_key
        self._rules = rules
        self._sizes = SizeEstimator(catalog)
        self._specs: dict[int, ExtractionSpec] = {}

    def update(self, rules: RuleSet, catalog: Catalog | None) -> None:
        """Swap in reloaded rules; budgets live in the store keyed by rule id, so they survive."""
        self._rules = rules
        if catalog is not self._sizes.catalog:
            self._sizes = SizeEstimator(catalog)
        self._specs = {}

    def specs_for(self, facts: SessionFacts) -> list[ExtractionSpec]:
        out = []
        for entry in self._rules.matching_extraction(facts):
            spec = self._specs.get(id(entry))
            if spec is None:
                spec = spec_from_entry(entry, self._rules.defaults.mode, self.ledger_key)
                self._specs[id(entry)] = spec
            out.append(spec)
        return out

    async def admit(
        self, facts: SessionFacts, statements: Sequence[StatementFacts]
    ) -> GuardAdmission:
        specs = self.specs_for(facts)
        if not specs:
            return GuardAdmission()
        try:
            return await self._admit(facts, statements, specs)
        except StoreUnavailable as exc:
            return GuardAdmission(
                error=exc,
                action="block",
                rules=tuple(s.id for s in specs),
                hits=[{"store": "unavailable", "action": "block"}],
            )

    async def _admit(
        self,
        facts: SessionFacts,
        statements: Sequence[StatementFacts],
        specs: list[ExtractionSpec],
    ) -> GuardAdmission:
        now = self.clock()
        adm = GuardAdmission(rules=tuple(s.id for s in specs))
        hits: list[Hit] = []
        caps = Caps()
        budgets: list[_Budget] = []
        pacers: list[Pacer] = []
        dry_caps: list[ExtractionSpec] = []
        cap_specs: list[ExtractionSpec] = []
        for spec in specs:
            if spec.max_rows_per_query is None and spec.max_bytes_per_query is None:
                continue
            # A dry-run cap cuts nothing; `finished` logs what it would have cut.
            (dry_caps if spec.dry_run else cap_specs).append(spec)
        for spec in cap_specs:
            caps.offer(spec.id, spec.max_rows_per_query, spec.max_bytes_per_query)
        ledger_specs = [s for s in specs if s.ledger]
        # A standing ledger hit refuses before any budget is charged.
        for spec in ledger_specs:
            if spec.action == "log":
                continue
            hit = await ledger.standing(
                spec, facts.user, self.store, self._sizes, self._table(spec), now
            )
            if hit is None:
                continue
            hits.append(hit)
            if hit.dry_run:
                continue
            if hit.action == "block":
                return self._finish(adm, hits, "block", Blocked(spec.id, ledger.reason(hit)))
            adm.delay = max(adm.delay, min(spec.delay, spec.max_delay))
        # Enforcing budgets first: if one refuses, the others are not charged.
        for spec in sorted(specs, key=lambda s: not _enforces(s)):
            if not spec.has_budget:
                continue
            budget = _Budget(spec, state_key(spec.id, facts.user), spec.window or 0.0)
            refused = await self._budget(budget, statements, now, adm, hits, caps, pacers)
            if refused:
                return self._finish(adm, hits, "block", refused)
            budgets.append(budget)
        for spec in specs:
            if spec.detect is None or spec.ledger:
                continue
            for stmt in statements:
                hit = await detect(
                    spec, stmt, facts.user, self.store, self._sizes, now, self.ledger_key
                )
                if hit is None:
                    continue
                hits.append(hit)
                if hit.dry_run:
                    continue
                if hit.action == "block":
                    return self._finish(adm, hits, "block", Blocked(spec.id, reason(hit)))
                if hit.action == "throttle":
                    adm.delay = max(adm.delay, min(spec.delay, spec.max_delay))
                    if spec.rows_per_second or spec.bytes_per_second:
                        pacers.append(
                            Pacer(spec.id, spec.rows_per_second, spec.bytes_per_second, 0, 0)
                        )
                break  # one hit per entry and statement text is enough
        adm.limits = caps.limits()
        if budgets or pacers:
            adm.paced = True
            if adm.limits is None:
                adm.limits = StreamLimits()
        if budgets or pacers or dry_caps or ledger_specs:
            adm.token = GuardToken(
                facts.user,
                budgets,
                pacers,
                max(s.max_delay for s in specs),
                last_flush=now,
                dry_caps=dry_caps,
                ledger=ledger_specs,
            )
        throttled = adm.delay > 0 or bool(pacers)
        return self._finish(adm, hits, "throttle" if throttled else "allow", None)

    async def _budget(
        self,
        budget: _Budget,
        statements: Sequence[StatementFacts],
        now: float,
        adm: GuardAdmission,
        hits: list[Hit],
        caps: Caps,
        pacers: list[Pacer],
    ) -> ProxyError | None:
        spec = budget.spec
        limits = BudgetLimits(spec.max_queries, spec.max_rows, spec.max_bytes)
        enforce = _enforces(spec)
        queries = max(len(statements), 1)
        counted, used = await self.store.admit(
            budget.key, budget.window, now, limits, enforce=enforce, queries=queries
        )
        what = limits.exhausted(used, queries)
        if what is not None:
            hits.append(
                Hit(spec.id, "budget", spec.action, budget_figures(spec, used), spec.dry_run)
            )
        if not counted:
            return VolumeLimit(spec.id, f"{what} in {spec.window:g}s")
        if enforce:
            # What is left of the budget caps this statement mid-stream.
            left_rows = None if spec.max_rows is None else max(spec.max_rows - used.rows, 0)
            left_bytes = None if spec.max_bytes is None else max(spec.max_bytes - used.bytes, 0)
            caps.offer(spec.id, left_rows, left_bytes)
        elif spec.action == "throttle" and not spec.dry_run:
            if what is not None:
                adm.delay = max(adm.delay, throttle_delay(spec, used, queries))
            row_rate, byte_rate = spec.row_rate(), spec.byte_rate()
            if row_rate or byte_rate:
                rows_free = float("inf") if spec.max_rows is None else spec.max_rows - used.rows
                bytes_free = float("inf") if spec.max_bytes is None else spec.max_bytes - used.bytes
                budget.pacer = Pacer(
                    spec.id, row_rate, byte_rate, max(rows_free, 0), max(bytes_free, 0)
                )
                pacers.append(budget.pacer)
        return None

    def _finish(
        self,
        adm: GuardAdmission,
        hits: list[Hit],
        action: GuardDecision,
        error: ProxyError | None,
    ) -> GuardAdmission:
        adm.hits = [h.record() for h in hits]
        if self.store.degraded:
            adm.hits.append({"store": "degraded"})
        adm.action = action
        adm.error = error
        if error is not None:
            adm.limits, adm.token, adm.paced, adm.delay = None, None, False, 0.0
        return adm

    async def pace(self, facts: SessionFacts, token: Any, rows: int, nbytes: int) -> float:
        """Seconds to pause reading upstream, given the statement's running totals."""
        if not isinstance(token, GuardToken):
            return 0.0
        now = self.clock()
        if rows < token.flushed_rows or nbytes < token.flushed_bytes:
            token.flushed_rows = token.flushed_bytes = 0  # a new execution under the same token
        if token.budgets and now - token.last_flush >= FLUSH_INTERVAL:
            await self._flush(token, rows, nbytes, now)
        wait = 0.0
        for pacer in token.pacers:
            wait = max(wait, pacer.wait(now, rows, nbytes))
        return min(wait, token.max_pause)

    def _table(self, spec: ExtractionSpec) -> str | None:
        """The subject table a coverage share is of (None: the subject is gone)."""
        subject = self._rules.subject(spec.subject) if spec.subject else None
        return subject.table if subject is not None else None

    async def finished(
        self, facts: SessionFacts, token: Any, result: StatementResult
    ) -> list[dict[str, Any]]:
        """Account what the statement really produced; return the ledger detectors' hits."""
        if not isinstance(token, GuardToken):
            return []
        rows, nbytes = int(result.rows), int(result.bytes)
        now = self.clock()
        await self._flush(token, rows, nbytes, now)
        token.flushed_rows = token.flushed_bytes = 0  # a suspended portal's next Execute
        for spec in token.dry_caps:
            rows_cap, bytes_cap = spec.max_rows_per_query, spec.max_bytes_per_query
            if (rows_cap is not None and rows > rows_cap) or (
                bytes_cap is not None and nbytes > bytes_cap
            ):
                log.warning(
                    "guard dry run: %s would have cut off a statement of %s (%d rows, %d bytes)",
                    spec.id,
                    facts.user,
                    rows,
                    nbytes,
                )
        for pacer in token.pacers:
            pacer.crossed_at = None  # a suspended portal's next Execute starts its own pace
        if not token.ledger or not result.subjects:
            return []
        return await self._ledger(token, result.subjects, now)

    async def _ledger(self, token: GuardToken, tally: Tally, now: float) -> list[dict[str, Any]]:
        hits: list[dict[str, Any]] = []
        for spec in token.ledger:
            try:
                hit = await ledger.after(
                    spec, token.user, tally, self.store, self._sizes, self._table(spec), now
                )
            except StoreUnavailable as exc:
                # The statement has run; the next one is refused by the fail-closed store.
                log.error("guard: could not record subjects for %s: %s", spec.id, exc)
                hits.append({"rule": spec.id, "store": "unavailable"})
                continue
            if hit is not None:
                hits.append(hit.record())
        if hits and self.store.degraded:
            hits.append({"store": "degraded"})
        return hits

    async def _flush(self, token: GuardToken, rows: int, nbytes: int, now: float) -> None:
        """Push what streamed since the last flush into every budget."""
        d_rows, d_bytes = max(rows - token.flushed_rows, 0), max(nbytes - token.flushed_bytes, 0)
        token.last_flush = now
        if not d_rows and not d_bytes:
            return
        token.flushed_rows, token.flushed_bytes = rows, nbytes
        for budget in token.budgets:
            try:
                await self.store.add(budget.key, budget.window, now, d_rows, d_bytes)
            except StoreUnavailable as exc:
                # Fail-closed stores refuse new statements; rows already sent cannot be undone.
                log.error("guard: could not account %s rows for %s: %s", d_rows, budget.key, exc)


def _enforces(spec: ExtractionSpec) -> bool:
    return spec.action == "block" and not spec.dry_run
