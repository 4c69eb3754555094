"""How fast the reports answer over a lot of audit log: N GB of records, both reports timed.

    python -m benchmarks.report_scale --gb 1            # write 1 GB once, time both reports
    python -m benchmarks.report_scale --gb 1 --dir D    # keep the files in D (reused next time)

The generator writes what a busy fleet writes: records sealed into the real
hash chain (proxy/audit/record.py `seal`, HMAC keyed), rotated every 100 MB
under the writer's rotated names, 200 users in sessions with connect and
disconnect events, most statements without subjects, a quarter with a few
subject hashes, a few bulk reads with hundreds (capped lists), some refusals,
detector hits and canary events. Person 42 is planted in three users'
statements, and the subject report must find exactly those (a check, not a
timing).

Each report runs --runs times, each on a new DuckDB connection; the median
run's wall time is printed with its CPU time (this process and the verify
processes), which says more than wall time on a shared machine. The user
report's DuckDB part and its chain verification (every file's hash chain
walked in Python: one process, then one per core as `oversight report user`
does) are timed apart, because the two scale differently.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from proxy.audit.record import GENESIS, format_ts, seal
from proxy.audit.rotate import rotated_name
from proxy.ledger.hashing import subject_hash
from proxy.reports.api import ReportConfig, run_subject
from proxy.reports.chain import verify_all
from proxy.reports.files import resolve
from proxy.reports.source import Source
from proxy.reports.user import user_report
from proxy.rules import load_rules

AUDIT_KEY = b"bench-audit-key"
LEDGER_KEY = b"bench-ledger-key"
ROTATE = 100 * 2**20
USERS = [f"analyst{i:03d}" for i in range(200)]
PLANTED = {"analyst007", "analyst042", "analyst150"}
TABLES = ["public.people", "public.cases", "public.payments", "public.accounts", "public.notes"]
SQL = [
    "SELECT id, full_name, region FROM people WHERE region = ? ORDER BY id LIMIT ?",
    "SELECT c.id, c.status, p.full_name FROM cases c JOIN people p ON p.id = c.person_id "
    "WHERE c.opened > ?",
    "SELECT count(*) FROM payments WHERE amount > ? GROUP BY account_id",
    "SELECT * FROM people WHERE ssn = ?",
    "UPDATE cases SET status = ? WHERE id = ?",
]


# Hashing is the generator's slowest step: real hashes of 50,000 people, drawn from
# (made on first use: the verify processes import this module and must not pay for it).
POOL: list[str] = []


def _subjects(rng: random.Random, n: int, planted: bool) -> dict[str, Any]:
    if not POOL:
        POOL.extend(subject_hash(LEDGER_KEY, "person", str(i)) for i in range(100, 50_100))
    seen = rng.sample(POOL, min(n, 1000))
    if planted:
        seen[0] = subject_hash(LEDGER_KEY, "person", "42")
    looked = []
    if rng.random() < 0.3:
        h = subject_hash(LEDGER_KEY, "person", f"{rng.randrange(10**9):09d}", "ssn")
        looked.append({"column": "ssn", "hash": h})
    return {
        "person": {
            "seen": seen,
            "seen_count": n,
            "looked_up": looked,
            "looked_up_count": len(looked),
        }
    }


def _statement(rng: random.Random, ts: str, user: str, session: str) -> dict[str, Any]:
    i = rng.randrange(len(SQL))
    decision = rng.choices(["allow", "rewrite", "block", "cutoff", "throttle"], [50, 40, 5, 2, 3])[
        0
    ]
    rows = 0 if decision == "block" else rng.choice([1, 1, 5, 20, 100, 1000, 5000])
    record: dict[str, Any] = {
        "event": "statement",
        "session": session,
        "user": user,
        "groups": ["analysts"],
        "client": f"10.1.{rng.randrange(256)}.{rng.randrange(256)}:5{rng.randrange(1000, 9999)}",
        "application": rng.choice(["psql", "DBeaver 24.1", "Metabase", "pandas"]),
        "database": "warehouse",
        "purpose": rng.choice([None, "CASE-2291 fraud review", "CASE-3107 audit", "reporting"]),
        "sql": SQL[i],
        "fingerprint": f"{i:016x}",
        "kind": "select" if i < 4 else "update",
        "tables": rng.sample(TABLES, rng.randrange(1, 3)),
        "columns": ["public.people.id", "public.people.full_name"],
        "decision": decision,
        "rules": ["people-by-region"] if decision != "allow" else [],
        "reason": "reads denied column public.people.ssn" if decision == "block" else "",
        "rewritten": None,
        "rows": rows,
        "bytes": rows * 120,
        "duration_ms": round(rng.random() * 50, 3),
        "error": None,
        "client_encoding": "UTF8",
    }
    r = rng.random()
    if r < 0.05:
        record["subjects"] = _subjects(rng, rng.randrange(200, 3000), False)
    elif r < 0.30:
        record["subjects"] = _subjects(rng, rng.randrange(1, 20), False)
    if rng.random() < 0.01:
        record["detectors"] = [
            {"rule": "scrape", "detector": "enumeration", "action": "alert", "pages": 12}
        ]
    return record


def generate(directory: Path, gigabytes: float, seed: int = 7) -> list[str]:
    """Write about `gigabytes` of audit records to directory/oversight-audit.jsonl (+ rotated)."""
    rng = random.Random(seed)
    live = directory / "oversight-audit.jsonl"
    target = int(gigabytes * 2**30)
    when = datetime(2026, 10, 1, tzinfo=UTC)
    prev, written, file_bytes = GENESIS, 0, 0
    sessions: dict[str, tuple[str, int]] = {}
    planted: set[str] = set()
    out = open(live, "wb")  # noqa: SIM115 - rotated below, as the writer does
    n = 0
    while written < target:
        when += timedelta(milliseconds=rng.randrange(1, 40))
        ts = format_ts(when)
        user = rng.choice(USERS)
        session, left = sessions.get(user, ("", 0))
        batch: list[dict[str, Any]] = []
        if left <= 0:
            if session:
                batch.append({"ts": ts, "event": "disconnect", "session": session, "user": user})
            n += 1
            session = f"{n:08x}-{rng.randrange(1 << 16):04x}"
            batch.append({"ts": ts, "event": "connect", "session": session, "user": user})
            left = rng.randrange(5, 200)
        record = _statement(rng, ts, user, session)
        record["ts"] = ts
        if user in PLANTED and user not in planted and written > target * len(planted) / 4:
            record["subjects"] = _subjects(rng, 3, True)
            planted.add(user)
        batch.append(record)
        if rng.random() < 0.0005:
            canary = {"canary": "decoy-people", "subject": "person", "action": "alert"}
            batch.append({"ts": ts, "event": "canary", "session": session, "user": user, **canary})
        sessions[user] = (session, left - 1)
        for rec in batch:
            line, prev = seal(rec, prev, AUDIT_KEY)
            if file_bytes + len(line) > ROTATE:
                out.close()
                os.rename(live, rotated_name(str(live), when))
                out = open(live, "wb")  # noqa: SIM115
                file_bytes = 0
            out.write(line)
            file_bytes += len(line)
            written += len(line)
    out.close()
    return resolve([str(live)])


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the verify processes)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


CPU: list[float] = []  # the CPU seconds of the last _median's median run


def _median(fn: Any, runs: int) -> tuple[float, Any]:
    """Median wall time of `runs` calls; its CPU time goes to CPU (wall time depends on load)."""
    times, result = [], None
    for _ in range(runs):
        start, cpu = time.perf_counter(), _cpu()
        result = fn()
        times.append((time.perf_counter() - start, _cpu() - cpu))
    times.sort()
    wall, cpu = times[len(times) // 2]
    CPU[:] = [cpu]
    return wall, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--dir", default=None, help="keep the generated files here (reused)")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    tmp = None
    if args.dir:
        directory = Path(args.dir)
        directory.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="oversight-report-scale-")
        directory = Path(tmp.name)
    files = resolve([str(directory / "oversight-audit.jsonl")]) if any(directory.iterdir()) else []
    if not files:
        start = time.perf_counter()
        files = generate(directory, args.gb)
        print(f"generated in {time.perf_counter() - start:.1f} s")
    size = sum(os.path.getsize(f) for f in files)
    load = os.getloadavg()[0]
    print(f"{len(files)} files, {size / 2**30:.2f} GB; {os.cpu_count()} cores, load {load:.1f}")
    rules = load_rules(Path(__file__).resolve().parents[1] / "rules")
    config = ReportConfig([str(directory / "oversight-audit.jsonl")], AUDIT_KEY, [LEDGER_KEY],
                          lambda: rules)  # fmt: skip

    t, lines = _median(lambda: run_subject(config, "person", "42", None, None), args.runs)
    found = {line["user"] for line in lines}
    assert found == PLANTED, f"the subject report found {found}, planted {PLANTED}"
    print(
        f"report subject person 42:           {t:6.2f} s, {CPU[0]:6.2f} s CPU ({len(lines)} lines)"
    )

    def user_only() -> dict[str, Any]:
        with Source(files) as source:
            return user_report(source, "analyst042", None)

    t, report = _median(user_only, args.runs)
    n = report["statements"]
    print(f"report user (without chain verify): {t:6.2f} s, {CPU[0]:6.2f} s CPU ({n} statements)")
    cores = os.cpu_count() or 1
    for workers in dict.fromkeys((1, cores)):
        t, verdicts = _median(lambda w=workers: verify_all(files, AUDIT_KEY, workers=w), 1)
        assert all(v["ok"] for v in verdicts)
        print(f"chain verify, {workers} process(es):       {t:6.2f} s, {CPU[0]:6.2f} s CPU (once)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
