"""Alert counters by destination and outcome, read when /metrics is scraped."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

OUTCOMES = ("sent", "suppressed", "failed", "dropped")


class AlertStats(Collector):
    """`oversight_alerts_total{destination,outcome}` and `oversight_alerts_queued{destination}`."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self.queued: Callable[[], dict[str, int]] = dict

    def add(self, destination: str, outcome: str, n: int = 1) -> None:
        self.counts[(destination, outcome)] += n

    def get(self, destination: str, outcome: str) -> int:
        return self.counts[(destination, outcome)]

    def collect(self) -> Iterator[Metric]:
        total = CounterMetricFamily(
            "oversight_alerts",
            "Alerts by destination and outcome",
            labels=["destination", "outcome"],
        )
        for (dest, outcome), n in sorted(self.counts.items()):
            total.add_metric([dest, outcome], n)
        yield total
        queued = GaugeMetricFamily(
            "oversight_alerts_queued", "Alerts waiting for delivery", labels=["destination"]
        )
        for dest, n in sorted(self.queued().items()):
            queued.add_metric([dest], n)
        yield queued
