"""What the operator sees: Prometheus metrics plus a short in-memory memory for the dashboard.

The recorder calls `statement` with each finished statement's record, the
server the small functions at the bottom (`session_opened`, `blocked`, ...);
they update prometheus-client metrics in a private registry (so importing
Oversight never pollutes the global one) and keep what the dashboard draws:
a bounded ring of recent events, rows read per user in one-minute buckets
over the last hours, and how often each rule fired.
Everything here is bounded, so a long-running proxy cannot grow without limit.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter as TallyCounter
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from proxy.statement import StatementRecord
from proxy.statement_metrics import StatementMetrics

# The *_created series double the output and no dashboard uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

RING_SIZE = 500  # recent events kept per kind
BUCKET_S = 60  # rows-per-user resolution
HISTORY_S = 6 * 3600  # rows-per-user history
MAX_USERS = 500  # distinct users tracked for the chart (least recent dropped)
MAX_RULES = 1000  # distinct rule ids tallied for "top rules"
SQL_CHARS = 2000  # an event keeps at most this much of its SQL

# Fields of an audit record worth showing on the dashboard (DESIGN.md, Audit log).
EVENT_FIELDS = (
    "ts",
    "user",
    "client",
    "application",
    "database",
    "purpose",
    "sql",
    "kind",
    "tables",
    "decision",
    "rules",
    "reason",
    "error",
    "rows",
    "bytes",
    "duration_ms",
)
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0)


# A recent event: sequence number, clock() when pushed, and the event.
_Entry = tuple[int, float, "dict[str, Any] | StatementRecord"]


def _feed_fields(record: dict[str, Any]) -> dict[str, Any]:
    """The dashboard's fields of an audit record, the SQL cut to SQL_CHARS."""
    event = {k: record[k] for k in EVENT_FIELDS if k in record}
    sql = event.get("sql")
    if isinstance(sql, str) and len(sql) > SQL_CHARS:
        event["sql"] = sql[:SQL_CHARS] + "…"
    return event


def _shape(
    kind: str, seq: int, when: float, event: dict[str, Any] | StatementRecord
) -> dict[str, Any]:
    if isinstance(event, StatementRecord):
        if kind == "blocked":
            out = _feed_fields(event.audit_fields())
        else:
            out = {
                "user": event.user,
                "purpose": event.purpose,
                "decision": event.decision,
                "rules": list(event.rules),
                "rows": event.rows,
                "bytes": event.bytes,
                "duration_ms": event.duration_ms,
            }
    else:
        out = dict(event)
    out["seq"] = seq
    out.setdefault("ts", when)
    return out


class Metrics:
    """All metrics and dashboard state of one process (tests make their own)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.started = clock()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sessions_active = Gauge(
            "oversight_sessions_active", "Client sessions open now", registry=r
        )
        self.sessions = Counter("oversight_sessions", "Client sessions opened", registry=r)
        # Updated once per statement: plain numbers, read when /metrics is scraped.
        self.statements = StatementMetrics(LATENCY_BUCKETS, DURATION_BUCKETS)
        r.register(self.statements)
        self.upstream_seconds = Histogram(
            "oversight_upstream_latency_seconds",
            "Upstream round trip (connect, health check)",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.reloads = Counter(
            "oversight_rule_reloads", "Rule set reloads, by result", ["result"], registry=r
        )
        self.canaries = Counter(
            "oversight_canary_hits",
            "Statements that touched a canary record, by canary id and how (seen, looked_up)",
            ["canary", "how"],
            registry=r,
        )
        self._seq = itertools.count(1)
        self._events: dict[str, deque[_Entry]] = {}
        # user -> bucket start (epoch s) -> rows; OrderedDict for least-recent eviction.
        self._rows: OrderedDict[str, dict[int, int]] = OrderedDict()
        self._tally: TallyCounter[str] = TallyCounter()
        self._active = 0

    # -- feeding ---------------------------------------------------------------------

    def session_opened(self) -> None:
        self.sessions.inc()
        self.sessions_active.inc()
        self._active += 1

    def session_closed(self) -> None:
        self.sessions_active.dec()
        self._active -= 1

    def statement(self, rec: StatementRecord, duration_s: float, decision_s: float) -> None:
        """A finished statement: counters, the rows chart, the recent feeds."""
        self.statements.add(
            rec.user, rec.decision, rec.rules, rec.rows, rec.bytes, duration_s, decision_s
        )
        for rule in rec.rules:
            if rule in self._tally or len(self._tally) < MAX_RULES:
                self._tally[rule] += 1
        if rec.rows:
            self._add_rows(rec.user, rec.rows)
        # The ring keeps the record itself; `recent` shapes it when the dashboard asks.
        self._push("statement", rec)
        if rec.decision in ("block", "cutoff"):
            self._push("blocked", rec)

    def blocked(self, record: dict[str, Any]) -> None:
        """An audit record of a refused, cut-off or throttled statement, for the live feed."""
        self._push("blocked", _feed_fields(record))

    def upstream_latency(self, seconds: float) -> None:
        self.upstream_seconds.observe(max(0.0, seconds))

    def rules_reloaded(self, ok: bool) -> None:
        self.reloads.labels("ok" if ok else "failed").inc()

    def _push(self, kind: str, event: dict[str, Any] | StatementRecord) -> None:
        ring = self._events.get(kind)
        if ring is None:
            ring = self._events[kind] = deque(maxlen=RING_SIZE)
        ring.append((next(self._seq), self.clock(), event))

    def _add_rows(self, user: str, rows: int) -> None:
        now = self.clock()
        bucket = int(now // BUCKET_S) * BUCKET_S
        series = self._rows.pop(user, None)
        if series is None:
            series = {}
            if len(self._rows) >= MAX_USERS:
                self._rows.popitem(last=False)
        self._rows[user] = series
        series[bucket] = series.get(bucket, 0) + rows
        horizon = now - HISTORY_S
        if len(series) > HISTORY_S // BUCKET_S:
            for old in [b for b in series if b < horizon]:
                del series[old]

    # -- reading -----------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        data: bytes = generate_latest(self.registry)
        return data

    def recent(self, kind: str, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Events of `kind` ("blocked" or "statement") newer than seq `after`, oldest first."""
        ring = self._events.get(kind, ())
        newer = [e for e in ring if e[0] > after][-limit:]
        return [_shape(kind, seq, when, event) for seq, when, event in newer]

    def rows_by_user(self, hours: float = 6.0, max_points: int = 90) -> dict[str, Any]:
        """Rows read per user over the last `hours`, zero-filled, in at most `max_points` steps.

        Steps are whole multiples of the one-minute bucket: 1 h gives 60 one-minute
        points, 6 h gives 72 five-minute points.
        """
        hours = min(max(hours, 1 / 60), HISTORY_S / 3600)
        minutes = max(1, int(hours * 3600 // BUCKET_S))
        # Round steps up to a clock-friendly size: 1, 2, 5, 10, 15, 30 or 60 minutes.
        per_step = next((k for k in (1, 2, 5, 10, 15, 30) if minutes / k <= max_points), 60)
        step = per_step * BUCKET_S
        n = -(-minutes // per_step)
        now = self.clock()
        end = int(now // step) * step  # start of the step now falls in
        start = end - (n - 1) * step
        users = {}
        for user, series in self._rows.items():
            points = [0] * n
            for bucket, rows in series.items():
                i = (bucket - start) // step
                if 0 <= i < n:
                    points[int(i)] += rows
            if any(points):
                users[user] = points
        return {"start": start, "bucket_s": step, "users": users}

    def top_rules(self, n: int = 10) -> list[tuple[str, int]]:
        return self._tally.most_common(n)

    def summary(self) -> dict[str, Any]:
        by_decision = dict(self.statements.by_decision)
        return {
            "uptime_s": round(self.clock() - self.started, 1),
            "sessions_active": self._active,
            "statements": by_decision,
        }


METRICS = Metrics()
"""The process-wide instance the server feeds and the admin server shows."""


def session_opened() -> None:
    METRICS.session_opened()


def session_closed() -> None:
    METRICS.session_closed()


def blocked(record: dict[str, Any]) -> None:
    METRICS.blocked(record)


def canary(canary_id: str, how: str) -> None:
    """A statement touched a canary (ids come from the rule files: bounded)."""
    METRICS.canaries.labels(canary_id, how).inc()


def upstream_latency(seconds: float) -> None:
    METRICS.upstream_latency(seconds)


def rules_reloaded(ok: bool) -> None:
    METRICS.rules_reloaded(ok)


def recent(kind: str, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
    return METRICS.recent(kind, after, limit)


def statement(rec: StatementRecord, duration_s: float, decision_s: float) -> None:
    METRICS.statement(rec, duration_s, decision_s)
