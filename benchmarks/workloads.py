"""The two measured workloads: pgbench select-only, and a full read of a 1M-row table.

Each function runs one sample against one target and returns its figures, or
raises SampleFailed with the reason, so the harness can record the failure
and go on with the other targets.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import pq
from psycopg.pq.abc import PGconn, PGresult

from benchmarks.services import BENCH_DB, BENCH_ROLE, BULK_ROWS, Target


class SampleFailed(Exception):
    pass


@dataclass(frozen=True)
class PgbenchCase:
    mode: str  # simple | extended | prepared
    clients: int

    @property
    def key(self) -> str:
        return f"pgbench -S -M {self.mode} -c {self.clients}"

    @property
    def threads(self) -> int:
        return 1 if self.clients == 1 else 2


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process from /proc/<pid>/stat (None once it is gone).

    CPU time, unlike tps, hardly depends on what else the shared machine
    runs, which makes it the steadier measure of a proxy's cost.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _p50_ms(logdir: Path) -> float | None:
    """Median latency from pgbench -l per-transaction logs (3rd column, microseconds)."""
    lat = []
    for log in logdir.glob("pgbench_log*"):
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                lat.append(int(parts[2]))
    return statistics.median(lat) / 1000 if lat else None


_TPS = re.compile(r"^tps = ([\d.]+) \(without initial connection time\)", re.M)
_LAT = re.compile(r"^latency average = ([\d.]+) ms", re.M)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.M)
_TXNS = re.compile(r"^number of transactions actually processed: (\d+)", re.M)


def pgbench(target: Target, case: PgbenchCase, seconds: int) -> dict[str, float]:
    """One timed select-only run: tps (without connection time), average and median latency,
    and the server process's CPU time per transaction when its pid is known.

    At 1 client the median comes from pgbench's per-transaction log; the
    average alone hides the proxy's added latency behind a few slow outliers.
    """
    with tempfile.TemporaryDirectory(prefix="oversight-bench-log-") as logdir:
        cmd = ["pgbench", "-n", "-S", "-M", case.mode, "-c", str(case.clients)]
        cmd += ["-j", str(case.threads), "-T", str(seconds)]
        if case.clients == 1:
            cmd += ["-l", f"--log-prefix={logdir}/pgbench_log"]
        cmd += ["-h", target.host, "-p", str(target.port), "-U", BENCH_ROLE, BENCH_DB]
        cpu0 = cpu_seconds(target.pid) if target.pid else None
        try:
            proc = subprocess.run(
                cmd, env=target.env(), capture_output=True, text=True, timeout=seconds + 60
            )
        except subprocess.TimeoutExpired:
            raise SampleFailed(f"pgbench did not finish within {seconds + 60}s") from None
        cpu1 = cpu_seconds(target.pid) if target.pid else None
        p50 = _p50_ms(Path(logdir)) if case.clients == 1 else None
    tps, lat = _TPS.search(proc.stdout), _LAT.search(proc.stdout)
    failed, txns = _FAILED.search(proc.stdout), _TXNS.search(proc.stdout)
    if proc.returncode or tps is None or lat is None:
        why = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
        raise SampleFailed(f"pgbench exit {proc.returncode}: {' | '.join(why)}")
    if failed and int(failed.group(1)):
        raise SampleFailed(f"pgbench: {failed.group(1)} failed transactions")
    out = {"tps": float(tps.group(1)), "latency_ms": float(lat.group(1))}
    if p50 is not None:
        out["p50_ms"] = p50
    if cpu0 is not None and cpu1 is not None and txns and int(txns.group(1)):
        # Includes the connection setup of the sample's clients: small next to 10 s of work.
        out["cpu_us_per_txn"] = (cpu1 - cpu0) / int(txns.group(1)) * 1e6
    return out


BULK_CASES = ("copy binary", "select text")


def _connect(target: Target) -> psycopg.Connection[tuple[object, ...]]:
    conn = psycopg.connect(target.dsn(), autocommit=True)
    # A bound on every read, so a stuck proxy cannot hang the run.
    conn.execute("SET statement_timeout = '300s'")
    return conn


def bulk_read(target: Target, case: str) -> dict[str, float]:
    """Read the whole bulk table once; `bytes` is the result data that crossed the wire.

    `copy binary` counts the CopyData payloads libpq hands back. `select text`
    is a plain client-side fetch: `execute` returns once libpq holds every row,
    so the time covers the transfer but not building a million Python tuples,
    which would only dilute the difference between targets.
    """
    try:
        with _connect(target) as conn, conn.cursor() as cur:
            if case == "copy binary":
                t0 = time.perf_counter()
                n = copy_out(conn.pgconn, b"COPY bulk TO STDOUT (FORMAT binary)")
                return {"seconds": time.perf_counter() - t0, "bytes": float(n)}
            t0 = time.perf_counter()
            cur.execute("SELECT * FROM bulk")
            elapsed = time.perf_counter() - t0
            if cur.rowcount != BULK_ROWS:
                raise SampleFailed(f"SELECT * returned {cur.rowcount} rows, not {BULK_ROWS}")
            return {"seconds": elapsed, "bytes": float(select_wire_bytes(conn))}
    except psycopg.Error as e:
        raise SampleFailed(f"{type(e).__name__}: {str(e).strip()}") from None


def copy_out(pgconn: PGconn, query: bytes) -> int:
    """COPY TO STDOUT through psycopg's libpq layer; returns the CopyData payload bytes.

    psycopg's `Copy` iterator costs about 2 us of Python per CopyData message (one
    per row), which on a million rows is three times the transfer itself; this loop
    is as fast as psql's \\copy, so the proxy's cost is what the figure shows.
    """
    pgconn.send_query(query)
    res = pgconn.get_result()
    if res is None or res.status != pq.ExecStatus.COPY_OUT:
        raise SampleFailed(f"COPY did not start: {_message(pgconn, res)}")
    n = 0
    while True:
        size, _ = pgconn.get_copy_data(0)
        if size <= 0:  # -1: done, -2: error (reported by the final result)
            break
        n += size
    final, status = None, None
    while (res := pgconn.get_result()) is not None:
        final, status = res, res.status
    if status != pq.ExecStatus.COMMAND_OK:
        raise SampleFailed(f"COPY failed: {_message(pgconn, final)}")
    return n


def _message(pgconn: PGconn, res: PGresult | None) -> str:
    raw = res.error_message if res is not None else pgconn.error_message
    return raw.decode(errors="replace").strip()


_SELECT_BYTES: dict[str, int] = {}


def select_wire_bytes(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    """DataRow bytes of `SELECT * FROM bulk` in text: 1+4+2 header, 4+len per column.

    Asked once (over the first target's connection) and cached: the result is the same
    through every target, and this query is not timed.
    """
    if "n" not in _SELECT_BYTES:
        row = conn.execute(
            "SELECT count(*) * (7 + 3 * 4) + sum(octet_length(id::text) + octet_length(a)"
            " + octet_length(t::text)) FROM bulk"
        ).fetchone()
        assert row is not None
        _SELECT_BYTES["n"] = int(str(row[0]))
    return _SELECT_BYTES["n"]
