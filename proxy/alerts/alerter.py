"""The alerter: finished statements in, alerts out, without ever making a statement wait.

`observe` runs on the statement's path and does only in-memory work: match
each destination's `when`, count into its suppression window, put the alert
on the destination's bounded queue or, when the queue is full, drop it and
count the drop. One worker task per destination does the network part with
a timeout per attempt and retries with backoff. Every outcome that matters
to an auditor (sent, failed after retries, dropped) is written to the audit
log as an `alert` event through `audit_event`, off the statement's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from proxy.alerts.alert import Alert, alerts_for
from proxy.alerts.sinks import DeliveryError, Sink, make_sink
from proxy.alerts.stats import AlertStats
from proxy.alerts.suppress import Suppressor
from proxy.rules import AlertRoute
from proxy.statement import StatementRecord

log = logging.getLogger("oversight.alerts")

AuditEvent = Callable[[dict[str, Any]], Awaitable[None]]
BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
CLOSE_S = 2.0  # closing a sink at shutdown
TICK_S = 0.25  # how often closed suppression windows are flushed


async def _no_audit(_: dict[str, Any]) -> None:
    return None


class Destination:
    """One `alerts:` entry: its window, its queue and its worker."""

    def __init__(self, route: AlertRoute, alerter: Alerter, sink: Sink | None = None) -> None:
        self.route = route
        self.alerter = alerter
        self.sink = sink or make_sink(route)
        self.suppressor = Suppressor(route.suppress, alerter.clock)
        self.queue: asyncio.Queue[Alert] = asyncio.Queue(route.queue)
        self.task: asyncio.Task[None] | None = None

    def offer(self, alert: Alert) -> None:
        sent = self.suppressor.offer(alert)
        if sent is None:
            self.alerter.stats.add(self.route.id, "suppressed")
            return
        self.enqueue(sent)

    def enqueue(self, alert: Alert) -> None:
        try:
            self.queue.put_nowait(alert)
        except asyncio.QueueFull:
            self.drop(alert, f"queue full ({self.route.queue} waiting)")

    def drop(self, alert: Alert, reason: str) -> None:
        self.alerter.stats.add(self.route.id, "dropped", alert.count)
        self.alerter.report(self.route.id, alert, "dropped", reason)

    async def run(self) -> None:
        while True:
            alert = await self.queue.get()
            await self.deliver(alert)

    async def deliver(self, alert: Alert) -> None:
        reason = ""
        for attempt in range(self.route.retries + 1):
            if attempt:
                await asyncio.sleep(BACKOFF_S[min(attempt - 1, len(BACKOFF_S) - 1)])
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel
                # that lands as the send completes, and then `stop` waits forever.
                async with asyncio.timeout(self.route.timeout):
                    answer = await self.sink.send(alert)
            except TimeoutError:
                reason = f"no answer within {self.route.timeout:g}s"
                await self.sink.reset()
                continue
            except DeliveryError as e:
                reason = str(e)
                continue
            except Exception as e:  # a sink bug must not kill the worker
                log.exception("alert destination %s failed", self.route.id)
                reason = type(e).__name__
                continue
            self.alerter.stats.add(self.route.id, "sent")
            self.alerter.report(self.route.id, alert, "sent", answer)
            return
        self.alerter.stats.add(self.route.id, "failed", alert.count)
        tries = self.route.retries + 1
        self.alerter.report(self.route.id, alert, "failed", f"{reason} ({tries} attempts)")


class Alerter:
    """All destinations of the current rule set; `reload` swaps them."""

    def __init__(
        self,
        routes: Sequence[AlertRoute] = (),
        *,
        audit_event: AuditEvent = _no_audit,
        stats: AlertStats | None = None,
        clock: Callable[[], float] | None = None,
        sinks: Callable[[AlertRoute], Sink] = make_sink,
    ) -> None:
        self.audit_event = audit_event
        self.stats = stats or AlertStats()
        self.stats.queued = lambda: {d.route.id: d.queue.qsize() for d in self.destinations}
        self.clock = clock or time.monotonic
        self.make_sink = sinks
        self.destinations: list[Destination] = []
        self._routes = list(routes)
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._started = False

    async def start(self) -> None:
        self._started = True
        self._install(self._routes)
        self._ticker = asyncio.create_task(self._tick(), name="alerts-suppression")

    def observe(self, record: StatementRecord) -> None:
        """Called for every finished statement; never blocks, never raises."""
        for d in self.destinations:
            try:
                alert = alerts_for(record, d.route)
                if alert is not None:
                    d.offer(alert)
            except Exception:
                log.exception("alert routing failed for %s", d.route.id)

    def reload(self, routes: Sequence[AlertRoute]) -> None:
        """Swap to a new rule set's routes; unchanged ones keep their queue and window."""
        self._routes = list(routes)
        if self._started:
            self._install(self._routes)

    def _install(self, routes: list[AlertRoute]) -> None:
        old = {d.route.id: d for d in self.destinations}
        new: list[Destination] = []
        for route in routes:
            d = old.pop(route.id, None)
            if d is None or d.route != route:
                if d is not None:
                    self._retire(d)
                d = Destination(route, self, self.make_sink(route))
                d.task = asyncio.create_task(d.run(), name=f"alerts-{route.id}")
            new.append(d)
        for d in old.values():
            self._retire(d)
        self.destinations = new

    def _retire(self, d: Destination) -> None:
        if d.task is not None:
            d.task.cancel()
        while not d.queue.empty():
            d.drop(d.queue.get_nowait(), "destination changed by a rules reload")
        self._spawn(d.sink.close())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            for d in self.destinations:
                for alert in d.suppressor.due():
                    d.enqueue(alert)

    def report(self, destination: str, alert: Alert, status: str, detail: str) -> None:
        """Write an `alert` event to the audit log, off the caller's path."""
        event = {
            "event": "alert",
            "destination": destination,
            "status": status,
            "detail": detail,
            "alert": alert.uid,
            "user": alert.user,
            "rule": alert.rule,
            "fingerprint": alert.fingerprint,
            "count": alert.count,
        }
        self._spawn(self.audit_event(event))

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await coro
            except Exception as e:
                log.error("alert event not written to the audit log: %s", e)

        task = asyncio.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Stop the workers; what is still queued is lost (the process is going away).

        Bounded: a receiver that never answers, or an audit log already
        closed, cannot hold up shutdown.
        """
        tasks = [d.task for d in self.destinations if d.task is not None]
        if self._ticker is not None:
            tasks.append(self._ticker)
        for t in tasks:
            t.cancel()
        _, stuck = await asyncio.wait(tasks, timeout=CLOSE_S) if tasks else (set(), set())
        for t in stuck:  # still running after its cancel: left behind, never waited on
            log.error("alert worker %s did not stop", t.get_name())
        if self._tasks:  # audit events and retired sinks' closing: a moment, not forever
            _, late = await asyncio.wait(set(self._tasks), timeout=CLOSE_S)
            for t in late:
                t.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        for d in self.destinations:
            with contextlib.suppress(Exception, TimeoutError):
                await asyncio.wait_for(d.sink.close(), CLOSE_S)
