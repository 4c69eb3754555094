"""Run pg8000's, psycopg2's and asyncpg's own test suites directly and through Oversight.

    python -m benchmarks.peers                 # every suite, every phase
    python -m benchmarks.peers --suite pg8000 --phase main -k test_copy

The suites come from the drivers' source distributions on PyPI (`pip download
--no-deps --no-binary :all:`), at the versions of the installed `pg8000`,
`psycopg2` (psycopg2-binary is fine) and `asyncpg`, and run against those
installed drivers. Each phase reproduces one job of the suite's own CI on a
throwaway PostgreSQL (tests/pgcluster.py's LocalCluster, with a system
PostgreSQL's binaries when there are any: pgserver's lack hstore, TLS and
GSSAPI): its pg_hba method, password encryption and TLS. Every phase runs
twice on a freshly reset cluster, directly and then through `oversight serve`
with an open rule set (`statements: [all]`, unknown tables and unparsed
statements allowed, audit log on), with TLS to clients when the server has it,
and sslmode=require upstream then. Per-test outcomes are compared; a test
whose outcome differs must be listed in explained.EXPLAINED with a reason, or
the run exits 1. Results: benchmarks/peer_suites.md.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.peers.cluster import Server, pg_bindir
from benchmarks.peers.phases import PHASES, SUITES, driver_version, fetch_source, suite_root
from benchmarks.peers.report import fmt_counts, report
from benchmarks.peers.runners import Run, run_phase


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--suite", action="append", choices=SUITES)
    ap.add_argument("--phase", action="append", help="phase name(s), e.g. main, auth-md5")
    ap.add_argument(
        "--target",
        action="append",
        choices=["direct", "proxy", "relay"],
        help="direct and proxy by default; relay: through a plain TCP forwarder",
    )
    ap.add_argument(
        "-k", help="pytest -k expression (pg8000) / test id substring (psycopg2, asyncpg)"
    )
    ap.add_argument("--timeout", type=float, default=300, help="seconds per test")
    ap.add_argument("--suite-timeout", type=float, default=1800, help="seconds per suite run")
    ap.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "oversight-peer-suites"
    )
    ap.add_argument("--json", type=Path, help="write every outcome to this file")
    args = ap.parse_args(argv)
    suites = args.suite or list(SUITES)
    targets = args.target or ["direct", "proxy"]
    phases = [p for p in PHASES if p.suite in suites and (not args.phase or p.name in args.phase)]
    args.cache.mkdir(parents=True, exist_ok=True)
    versions = {s: driver_version(s) for s in suites}
    roots = {s: suite_root(s, fetch_source(s, versions[s], args.cache)) for s in suites}
    results_dir = args.cache / "results" / time.strftime("%Y%m%d-%H%M%S")
    t0 = time.monotonic()

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    server = Server(pg_bindir())
    runs: dict[tuple[str, str, str], Run] = {}
    try:
        server.start()
        for phase in phases:
            for target in targets:
                out = results_dir / phase.suite / phase.name / target
                run = run_phase(server, phase, roots[phase.suite], target, out, args)
                runs[phase.suite, phase.name, target] = run
                print(
                    f"{phase.suite} {phase.name} {target}: {fmt_counts(run)} "
                    f"(passed/failed/errors/skipped) in {run.seconds:.0f}s, {run.note}",
                    flush=True,
                )
    finally:
        server.destroy()
    wall = time.monotonic() - t0
    return report(phases, versions, runs, targets, wall, results_dir, args)


if __name__ == "__main__":
    sys.exit(main())
