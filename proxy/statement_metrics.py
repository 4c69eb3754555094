"""Per-statement Prometheus metrics kept as plain numbers, turned into metrics at scrape time.

prometheus-client's labelled children cost a label lookup, a lock and a few
calls per update; with several updates per statement that was a visible
share of the proxy's CPU. Here a statement adds to dicts and bucket lists on
the event loop, and `collect` (called by the registry when /metrics is
scraped, on the same loop) reports them under the same names and labels.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class Buckets:
    """A histogram: counts per upper bound (the last is +Inf), and the sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound falls in that bound's bucket (le).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        running, cumulative = 0, []
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            cumulative.append((floatToGoString(bound), running))  # type: ignore[no-untyped-call]
        return HistogramMetricFamily(name, doc, buckets=cumulative, sum_value=self.total)


class StatementMetrics(Collector):
    """Counters by decision, rule and user, and the two per-statement histograms."""

    def __init__(self, latency_buckets: Sequence[float], duration_buckets: Sequence[float]) -> None:
        self.by_decision: dict[str, int] = {}
        self.rule_hits: dict[str, int] = {}
        self.blocks: dict[str, int] = {}
        self.rows: dict[str, int] = {}
        self.bytes: dict[str, int] = {}
        self.decision_seconds = Buckets(latency_buckets)
        self.statement_seconds = Buckets(duration_buckets)

    def add(
        self,
        user: str,
        decision: str,
        rules: Sequence[str],
        rows: int,
        nbytes: int,
        duration_s: float,
        decision_s: float,
    ) -> None:
        self.by_decision[decision] = self.by_decision.get(decision, 0) + 1
        if rules:
            blocked = decision in ("block", "cutoff")
            for rule in rules:
                self.rule_hits[rule] = self.rule_hits.get(rule, 0) + 1
                if blocked:
                    self.blocks[rule] = self.blocks.get(rule, 0) + 1
        if rows:
            self.rows[user] = self.rows.get(user, 0) + rows
        if nbytes:
            self.bytes[user] = self.bytes.get(user, 0) + nbytes
        self.statement_seconds.observe(max(0.0, duration_s))
        self.decision_seconds.observe(max(0.0, decision_s))

    def collect(self) -> Iterator[Metric]:
        for name, doc, label, values in (
            ("oversight_statements", "Statements by decision", "decision", self.by_decision),
            ("oversight_blocks", "Statements refused or cut off, by rule", "rule", self.blocks),
            ("oversight_rule_hits", "Statements each rule applied to", "rule", self.rule_hits),
            ("oversight_rows", "Result rows streamed, by user", "user", self.rows),
            ("oversight_bytes", "Result bytes streamed, by user", "user", self.bytes),
        ):
            family = CounterMetricFamily(name, doc, labels=[label])
            for key, n in list(values.items()):
                family.add_metric([key], n)
            yield family
        yield self.decision_seconds.family(
            "oversight_decision_seconds", "Time to decide on a statement (parse, policy, rewrite)"
        )
        yield self.statement_seconds.family(
            "oversight_statement_seconds", "Statement duration as the client saw it"
        )
