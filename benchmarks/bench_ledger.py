"""What the subject ledger's `seen` costs on bulk reads: without vs with a `subjects:` section.

    python -m benchmarks.bench_ledger                 # 500k rows, 3 runs each
    python -m benchmarks.bench_ledger --rows 1000000 --runs 5

A throwaway PostgreSQL (tests/pgcluster.py) with two tables of --rows rows,
`bench_people (id int primary key, name text)` and `bench_other` (the same
shape), and three `oversight serve` processes in front of it:

- plain: no `subjects:` section;
- ledger: `bench_people.id` is subject `person`'s key;
- canaries: the same plus two canary keys (decoys are looked for in every row).

Workloads, each read in full by one asyncpg client (binary results):
- other:  `SELECT id, name FROM bench_other`, no watched column: must cost
  the same in both arms (the row loop does nothing more for it);
- people: `SELECT id, name FROM bench_people`, the key in every row: the
  decoding and hashing cost (one HMAC per distinct key up to the 1,000 the
  record lists, a dictionary look-up per row past that).

Figures: wall MB/s (median of --runs interleaved runs, wire bytes from the
audit record) and the proxy process's CPU seconds per run (utime + stime
from /proc, median), which moves much less with the machine's load.
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

PLAIN = "version: 1\ndefaults: {unparsed: allow, statements: [all]}\n"
LEDGER = (
    PLAIN
    + """\
subjects:
  - id: person
    table: public.bench_people
    key: id
"""
)
# The ledger plus decoys: every key read is also compared with the canaries'.
CANARIES = (
    LEDGER
    + """canaries:
  - {id: decoys, subject: person, keys: [900001, 900002]}
"""
)


def cpu_seconds(pid: int) -> float:
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def read_all(dsn: str, table: str, pid: int | None) -> tuple[float, float]:
    """Wall seconds for one asyncpg client to read the table, and the proxy's CPU seconds."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        cpu0 = cpu_seconds(pid) if pid else 0.0
        t0 = time.perf_counter()
        await conn.fetch(f"SELECT id, name FROM {table}")
        wall = time.perf_counter() - t0
        return wall, (cpu_seconds(pid) - cpu0) if pid else 0.0
    finally:
        await conn.close()


def start_proxy(pg: Any, rules: Path, audit: Path) -> tuple[Any, int]:
    from serveproc import start_serve  # tests/ is on the path (see bench)

    settings = {
        "OVERSIGHT_LISTEN": "127.0.0.1:0",
        "OVERSIGHT_UPSTREAM": pg.dsn(),
        "OVERSIGHT_RULES": str(rules),
        "OVERSIGHT_AUDIT_LOG": str(audit),
        "OVERSIGHT_ADMIN_LISTEN": "",
    }
    served = start_serve(settings, timeout=30)
    return served.proc, served.port


def load(pg: Any, rows: int) -> None:
    import psycopg

    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        for t in ("bench_people", "bench_other"):
            conn.execute(f"DROP TABLE IF EXISTS {t}")
            conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, name text)")
            conn.execute(
                f"INSERT INTO {t} SELECT g, md5(g::text) FROM generate_series(1, %s) g", (rows,)
            )
            conn.execute(f"VACUUM ANALYZE {t}")


async def bench(rows: int, runs: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import pgcluster

    with pgcluster.running_cluster() as pg, tempfile.TemporaryDirectory() as tmp:
        load(pg, rows)
        procs = {}
        dsns = {}
        for arm, text in (("plain", PLAIN), ("ledger", LEDGER), ("canaries", CANARIES)):
            rules = Path(tmp) / f"{arm}.yaml"
            rules.write_text(text)
            proc, port = start_proxy(pg, rules, Path(tmp) / f"{arm}.jsonl")
            procs[arm] = proc
            dsns[arm] = pg.dsn().replace(f"@{pg.host}:{pg.port}/", f"@127.0.0.1:{port}/")
        try:
            for table in ("bench_other", "bench_people"):
                for arm in dsns:  # warm up: catalogs, caches
                    await read_all(dsns[arm], table, None)
                wall: dict[str, list[float]] = {arm: [] for arm in dsns}
                cpu: dict[str, list[float]] = {arm: [] for arm in dsns}
                for _ in range(runs):  # interleaved, so drift hits both arms alike
                    for arm, dsn in dsns.items():
                        w, c = await read_all(dsn, table, procs[arm].pid)
                        wall[arm].append(w)
                        cpu[arm].append(c)
                report(table, rows, _wire_bytes(Path(tmp) / "ledger.jsonl", rows), wall, cpu)
            seen = _seen_count(Path(tmp) / "ledger.jsonl", rows)
            print(f"ledger arm, bench_people: seen_count {seen} (expected {rows})")
        finally:
            for proc in procs.values():
                proc.terminate()
                proc.wait(10)


def _records(audit: Path, rows: int) -> list[dict[str, Any]]:
    import orjson

    recs = [orjson.loads(line) for line in audit.read_bytes().splitlines()]
    return [r for r in recs if r.get("event") == "statement" and r.get("rows") == rows]


def _wire_bytes(audit: Path, rows: int) -> int:
    return int(_records(audit, rows)[-1]["bytes"])


def _seen_count(audit: Path, rows: int) -> int:
    people = [r for r in _records(audit, rows) if "bench_people" in r["sql"]]
    return int(people[-1].get("subjects", {}).get("person", {}).get("seen_count", 0))


def report(
    table: str, rows: int, wire: int, wall: dict[str, list[float]], cpu: dict[str, list[float]]
) -> None:
    med = {arm: statistics.median(t) for arm, t in wall.items()}
    mcpu = {arm: statistics.median(t) for arm, t in cpu.items()}
    runs = len(wall["plain"])
    print(f"{table}: {rows} rows, {wire / 1e6:.1f} MB on the wire, median of {runs}")
    for arm in med:
        print(
            f"  {arm:7s} {med[arm]:7.3f} s  {wire / med[arm] / 1e6:8.1f} MB/s  "
            f"proxy CPU {mcpu[arm]:6.3f} s"
        )
    for arm, base in (("ledger", "plain"), ("canaries", "plain"), ("canaries", "ledger")):
        print(
            f"  {arm}/{base}: throughput {med[base] / med[arm]:.2f}, "
            f"proxy CPU {mcpu[arm] / mcpu[base]:.2f}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", type=int, default=500_000)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    run_async(bench(args.rows, args.runs))


if __name__ == "__main__":
    main()
