"""Per-statement metrics kept as plain numbers expose what prometheus-client's own would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from records import done

from proxy.metrics import DURATION_BUCKETS, LATENCY_BUCKETS, Metrics
from proxy.statement_metrics import StatementMetrics

STATEMENTS = [
    # user, decision, rules, rows, bytes, duration, decision time
    ("alice", "rewrite", ["r1"], 10, 400, 0.001, 0.0001),  # values equal to bucket bounds
    ("alice", "block", ["r1", "r2"], 0, 0, 0.0, 0.00025),
    ("bob", "allow", [], 3, 12, 200.0, 0.5),  # past the last bound: +Inf only
    ("bob", "cutoff", ["r3"], 1000, 9000, -1.0, 0.0),  # a clock step back counts as 0
]


def reference() -> bytes:
    """The same observations through prometheus-client's labelled metrics."""
    r = CollectorRegistry()
    stmts = Counter("oversight_statements", "Statements by decision", ["decision"], registry=r)
    blocks = Counter(
        "oversight_blocks", "Statements refused or cut off, by rule", ["rule"], registry=r
    )
    hits = Counter("oversight_rule_hits", "Statements each rule applied to", ["rule"], registry=r)
    rows = Counter("oversight_rows", "Result rows streamed, by user", ["user"], registry=r)
    nbytes = Counter("oversight_bytes", "Result bytes streamed, by user", ["user"], registry=r)
    decision = Histogram(
        "oversight_decision_seconds",
        "Time to decide on a statement (parse, policy, rewrite)",
        buckets=LATENCY_BUCKETS,
        registry=r,
    )
    duration = Histogram(
        "oversight_statement_seconds",
        "Statement duration as the client saw it",
        buckets=DURATION_BUCKETS,
        registry=r,
    )
    for user, dec, rules, n, b, dur, dec_s in STATEMENTS:
        stmts.labels(dec).inc()
        for rule in rules:
            hits.labels(rule).inc()
            if dec in ("block", "cutoff"):
                blocks.labels(rule).inc()
        if n:
            rows.labels(user).inc(n)
        if b:
            nbytes.labels(user).inc(b)
        duration.observe(max(0.0, dur))
        decision.observe(max(0.0, dec_s))
    return generate_latest(r)


def samples(text: bytes) -> set[bytes]:
    return {line for line in text.splitlines() if line and not line.startswith(b"#")}


def test_same_samples_as_prometheus_client() -> None:
    r = CollectorRegistry()
    mine = StatementMetrics(LATENCY_BUCKETS, DURATION_BUCKETS)
    r.register(mine)
    for stmt in STATEMENTS:
        mine.add(*stmt)
    assert samples(generate_latest(r)) == samples(reference())


def test_process_metrics_and_summary_read_the_counters() -> None:
    m = Metrics(clock=lambda: 1000.0)
    done(m, "alice", "allow", ["r1"], 5, 50, 0.01, 0.001)
    done(m, "alice", "block", ["r1"], 0, 0, 0.01, 0.001)
    text = m.exposition()
    assert b'oversight_statements_total{decision="allow"} 1.0' in text
    assert b'oversight_blocks_total{rule="r1"} 1.0' in text
    assert b'oversight_rows_total{user="alice"} 5.0' in text
    assert m.summary()["statements"] == {"allow": 1, "block": 1}
    assert m.top_rules() == [("r1", 2)]
