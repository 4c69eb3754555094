"""What the audit trail costs: writer throughput and latency, sealing, redaction, end to end.

    python -m benchmarks.bench_audit            # the writer on its own (seconds)
    python -m benchmarks.bench_audit --proxy    # pgbench through `oversight serve`, log on vs off

Writer: `AuditLog.write` on a temp file, with 1 and 100 concurrent writers,
plain SHA-256 or HMAC, fsync on the 1 s interval or after every batch. Each
figure is the median over --runs runs; latency is the time one `write()`
call waits (queue, seal, write(2), future resolved), median and p99 over
all calls of the median run.

Proxy: two `oversight serve` processes (tests/pgcluster.py's PostgreSQL
behind them, benchmarks/services.py starts them), one with the audit log
and one with OVERSIGHT_AUDIT_LOG="", measured with `pgbench -S -M simple`
in interleaved samples: the difference is what the audit log costs a
statement (`benchmarks.run` measures the same pair as oversight vs
oversight-noaudit next to direct and PgBouncer).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.audit import AuditConfig, AuditLog, redact_sql, seal
from proxy.audit.record import GENESIS
from proxy.run import run_async

RECORD: dict[str, Any] = {
    "event": "statement",
    "session": "3f2a1c-17",
    "user": "alice",
    "groups": ["analysts"],
    "client": "10.1.2.3:51234",
    "application": "DBeaver 24.1",
    "database": "warehouse",
    "sql": "SELECT p.id, p.name, p.ssn FROM public.people p WHERE p.region = ? LIMIT ?",
    "fingerprint": "9b0c4f1e2d3a4b5c",
    "kind": "select",
    "tables": ["public.people"],
    "columns": ["public.people.id", "public.people.name", "public.people.ssn"],
    "decision": "rewrite",
    "rules": ["people-by-region"],
    "reason": "",
    "rewritten": "SELECT p.id, p.name, '****' AS ssn FROM (SELECT * FROM public.people "
    "WHERE region = ?) p WHERE p.region = ? LIMIT ?",
    "rows": 100,
    "bytes": 5400,
    "duration_ms": 3.25,
    "error": None,
}


@dataclass
class Sample:
    rate: float  # records per second
    p50_us: float
    p99_us: float
    per_batch: float


async def writer_run(config: AuditConfig, writers: int, per_writer: int) -> Sample:
    log = AuditLog(config)
    await log.start()
    latencies: list[float] = []

    async def one() -> None:
        for _ in range(per_writer):
            t0 = time.perf_counter()
            await log.write(RECORD)
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(writers)))
    elapsed = time.perf_counter() - t0
    per_batch = log.records / max(log.batches, 1)
    await log.close()
    latencies.sort()
    return Sample(
        rate=len(latencies) / elapsed,
        p50_us=latencies[len(latencies) // 2] * 1e6,
        p99_us=latencies[int(len(latencies) * 0.99)] * 1e6,
        per_batch=per_batch,
    )


def median_sample(samples: list[Sample]) -> Sample:
    return sorted(samples, key=lambda s: s.rate)[len(samples) // 2]


async def bench_writer(runs: int, total: int) -> None:
    print(f"writer: {total} records a run, median of {runs} runs")
    print(f"{'scenario':44} {'records/s':>10} {'p50 us':>8} {'p99 us':>8} {'rec/batch':>9}")
    scenarios = [
        ("1 writer, sha256, fsync 1s", 1, None, 1.0),
        ("1 writer, hmac, fsync 1s", 1, b"key", 1.0),
        ("100 writers, hmac, fsync 1s", 100, b"key", 1.0),
        ("100 writers, hmac, fsync every batch", 100, b"key", 0.0),
        ("1 writer, hmac, fsync every batch", 1, b"key", 0.0),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, writers, key, interval) in enumerate(scenarios):
            samples = []
            n = total if interval > 0 or writers > 1 else max(total // 10, 100)
            for r in range(runs):
                path = Path(tmp) / f"s{i}-{r}.jsonl"
                config = AuditConfig(path=str(path), key=key, fsync_interval=interval)
                samples.append(await writer_run(config, writers, n // writers))
            s = median_sample(samples)
            print(f"{name:44} {s.rate:10.0f} {s.p50_us:8.1f} {s.p99_us:8.1f} {s.per_batch:9.1f}")


def bench_cpu(runs: int) -> None:
    def per_call(fn: Callable[[int], object], n: int) -> float:
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            for i in range(n):
                fn(i)
            times.append((time.perf_counter() - t0) / n * 1e6)
        return statistics.median(times)

    sealing = per_call(lambda i: seal(RECORD, GENESIS, b"k"), 20000)
    print(f"seal (ordered line + canonical + HMAC):   {sealing:.1f} us/record")
    sql = "SELECT id, name FROM people WHERE region = 'north' AND age > {} LIMIT 100"
    uncached = per_call(lambda i: redact_sql.__wrapped__(sql.format(i)), 5000)
    print(f"redact_sql (sqlglot tokenizer, uncached):   {uncached:.1f} us/statement")


def bench_proxy(runs: int, clients: int, seconds: int) -> None:
    import contextlib
    import subprocess

    from benchmarks import services
    from benchmarks.workloads import PgbenchCase, SampleFailed, pgbench

    case = PgbenchCase("simple", clients)
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(services.cluster_context())
        password = services.new_password()
        services.make_bench_database(pg, password)
        stack.callback(services.drop_bench_database, pg)
        direct = services.Target("direct", pg.host, pg.port, password)
        init = ["pgbench", "-i", "-q", "-s", "1", "-h", pg.host, "-p", str(pg.port)]
        init += ["-U", services.BENCH_ROLE, services.BENCH_DB]
        subprocess.run(init, env=direct.env(), check=True, capture_output=True, timeout=300)
        servers = {
            "off": services.start_oversight(stack, direct, "audit-off", None, audit=False),
            "on": services.start_oversight(stack, direct, "audit-on", None, audit=True),
        }
        print(f"proxy: {case.key} -T {seconds}, oversight serve audit on vs off, median of {runs}")
        tps: dict[str, list[float]] = {"off": [], "on": []}
        lat: dict[str, list[float]] = {"off": [], "on": []}
        for _ in range(runs):  # interleaved so drift hits both alike
            for name, server in servers.items():
                try:
                    figures = pgbench(server.target, case, seconds)
                except SampleFailed as e:
                    print(f"  {name}: sample failed: {e}")
                    continue
                tps[name].append(figures["tps"])
                lat[name].append(figures["latency_ms"])
        if not tps["off"] or not tps["on"]:
            print("not enough samples")
            return
        off, on = statistics.median(tps["off"]), statistics.median(tps["on"])
        lat_off, lat_on = statistics.median(lat["off"]), statistics.median(lat["on"])
        print(f"audit off: {off:8.0f} statements/s  latency {lat_off:.3f} ms")
        print(f"audit on:  {on:8.0f} statements/s  latency {lat_on:.3f} ms")
        extra = (1 / on - 1 / off) * 1e6
        print(f"cost: {(1 - on / off) * 100:.1f}% throughput; {extra:.0f} us more per statement")
        log = servers["on"].audit_log
        if log is not None and log.exists():
            print(f"audit records written: {len(log.read_bytes().splitlines())}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--records", type=int, default=20000, help="records per writer run")
    p.add_argument("--proxy", action="store_true", help="statements/s through the proxy")
    p.add_argument("--clients", type=int, default=8, help="pgbench clients (--proxy)")
    p.add_argument("--seconds", type=int, default=5, help="per pgbench sample (--proxy)")
    args = p.parse_args()
    if args.proxy:
        bench_proxy(args.runs, args.clients, args.seconds)
        return
    bench_cpu(args.runs)
    run_async(bench_writer(args.runs, args.records))


if __name__ == "__main__":
    main()
