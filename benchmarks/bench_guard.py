"""What the extraction guard costs on bulk reads: MB/s direct, plain relay, guard on.

    python -m benchmarks.bench_guard                  # 500k rows, 3 runs each
    python -m benchmarks.bench_guard --rows 2000000 --runs 5
    python -m benchmarks.bench_guard --redis redis://127.0.0.1:6379/0   # guard on Redis

A throwaway PostgreSQL (tests/pgcluster.py) and two `oversight serve`
processes in front of it, as in production (uvloop, own process):

- relay: no `extraction:` entries, so statements stream with no limits
  (the session still counts rows and bytes for the audit record);
- guard: a per-query cap and a byte cap far above the result, plus a
  blocking hourly row budget, so every DataRow/CopyData is checked against
  the caps and the guard's pace/flush runs between upstream reads.

Workloads, each read in full by one asyncpg client:
- select: `SELECT g, repeat('x', 100) FROM generate_series(1, N)` (DataRow);
- copy:   the same query as `COPY (...) TO STDOUT` (CopyData), into a sink.

Figures are wire MB/s (the proxy's own byte count of the result), median of
--runs interleaved runs, and the ratios guard/relay and guard/direct. The
counting path does only a 5-byte header read per message, so guard/relay
should stay close to 1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from proxy.run import run_async

GUARD_RULES = """\
version: 1
defaults: {unparsed: allow, statements: [all]}
extraction:
  - id: result-cap
    max_rows_per_query: 1000000000
    max_bytes_per_query: 100GB
  - id: hourly
    window: 1h
    max_rows: 1000000000000
    action: block
"""
RELAY_RULES = "version: 1\ndefaults: {unparsed: allow, statements: [all]}\n"


def start_proxy(pg: Any, rules: Path, audit: Path, redis_url: str | None) -> tuple[Any, int]:
    from serveproc import start_serve  # tests/ is on the path (see bench)

    settings = {
        "OVERSIGHT_LISTEN": "127.0.0.1:0",
        "OVERSIGHT_UPSTREAM": pg.dsn(),
        "OVERSIGHT_RULES": str(rules),
        "OVERSIGHT_AUDIT_LOG": str(audit),
        "OVERSIGHT_ADMIN_LISTEN": "",
    }
    if redis_url:
        settings["OVERSIGHT_REDIS_URL"] = redis_url
    served = start_serve(settings, timeout=30)
    return served.proc, served.port


async def read_all(dsn: str, workload: str, rows: int) -> float:
    """Seconds for one asyncpg client to read the whole result."""
    import asyncpg

    query = f"SELECT g, repeat('x', 100) FROM generate_series(1, {rows}) g"
    conn = await asyncpg.connect(dsn)
    try:
        t0 = time.perf_counter()
        if workload == "select":
            await conn.fetch(query)
        else:

            async def sink(chunk: bytes) -> None:
                return None

            await conn.copy_from_query(query, output=sink)
        return time.perf_counter() - t0
    finally:
        await conn.close()


async def bench(rows: int, runs: int, redis_url: str | None) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import pgcluster

    with pgcluster.running_cluster() as pg, tempfile.TemporaryDirectory() as tmp:
        procs = []
        dsns = {"direct": pg.dsn()}
        for arm, text in (("relay", RELAY_RULES), ("guard", GUARD_RULES)):
            rules = Path(tmp) / f"{arm}.yaml"
            rules.write_text(text)
            proc, port = start_proxy(pg, rules, Path(tmp) / f"{arm}.jsonl", redis_url)
            procs.append(proc)
            dsns[arm] = pg.dsn().replace(f"@{pg.host}:{pg.port}/", f"@127.0.0.1:{port}/")
        try:
            for workload in ("select", "copy"):
                await read_all(dsns["direct"], workload, 1000)  # warm up
                times: dict[str, list[float]] = {arm: [] for arm in dsns}
                for _ in range(runs):  # interleaved, so drift hits every arm alike
                    for arm, dsn in dsns.items():
                        times[arm].append(await read_all(dsn, workload, rows))
                wire = _wire_bytes(Path(tmp) / "guard.jsonl")
                report(workload, rows, wire, times)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)


def _wire_bytes(audit: Path) -> int:
    import orjson

    last = 0
    for line in audit.read_bytes().splitlines():
        rec = orjson.loads(line)
        if rec.get("event") == "statement" and rec.get("rows", 0) > 1000:
            last = int(rec["bytes"])
    return last


def report(workload: str, rows: int, wire: int, times: dict[str, list[float]]) -> None:
    med = {arm: statistics.median(t) for arm, t in times.items()}

    def mbs(arm: str) -> float:
        return wire / med[arm] / 1e6

    runs = len(times["direct"])
    print(f"{workload}: {rows} rows, {wire / 1e6:.1f} MB on the wire, median of {runs}")
    for arm in med:
        print(f"  {arm:7s} {med[arm]:7.3f} s  {mbs(arm):8.1f} MB/s")
    print(
        f"  guard/relay {mbs('guard') / mbs('relay'):.2f}   guard/direct "
        f"{mbs('guard') / mbs('direct'):.2f}   relay/direct {mbs('relay') / mbs('direct'):.2f}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", type=int, default=500_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--redis", default=None, help="OVERSIGHT_REDIS_URL for both proxies")
    args = p.parse_args()
    run_async(bench(args.rows, args.runs, args.redis))


if __name__ == "__main__":
    main()
