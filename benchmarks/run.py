"""Benchmark harness: direct PostgreSQL vs PgBouncer vs Oversight, in one run on loopback.

Issue 2 asks how much the proxy costs: pgbench select-only (simple, extended,
prepared; 1 and 8 clients) and a 1M-row bulk read, each quoted as a ratio
to direct. Measuring every target in the same run, interleaved sample by
sample, is what makes the ratios mean something on a small shared machine.

    python -m benchmarks.run            # full run (~16 min), writes benchmarks/results/latest.json
    python -m benchmarks.run --quick    # 3 s samples
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import idle, report, services, workloads
from benchmarks.services import Target
from benchmarks.workloads import BULK_CASES, PgbenchCase, SampleFailed

TARGETS = (
    "direct",
    "pgbouncer",
    "oversight",
    "oversight-noaudit",
    "oversight+governed",
    "oversight+policy",
)
DEFAULT_TARGETS = TARGETS[:5]
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"

Samples = dict[str, dict[str, list[dict[str, Any]]]]


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=int, default=10, help="length of each pgbench sample")
    p.add_argument("--quick", action="store_true", help="3-second pgbench samples")
    p.add_argument("--repeat", type=int, default=3, help="samples per case and target")
    p.add_argument("--scale", type=int, default=10, help="pgbench -i scale factor")
    p.add_argument("--clients", type=_csv, default=["1", "8"], help="e.g. 1,8")
    p.add_argument("--modes", type=_csv, default=["simple", "extended", "prepared"])
    p.add_argument("--targets", type=_csv, default=list(DEFAULT_TARGETS), help=",".join(TARGETS))
    p.add_argument("--no-pgbench", action="store_true")
    p.add_argument("--no-bulk", action="store_true")
    p.add_argument(
        "--baseline",
        metavar="DIR",
        help="also measure `oversight-baseline`: the proxy package of another checkout "
        "(e.g. a `git worktree` of an older commit), same settings as `oversight`",
    )
    p.add_argument(
        "--idle-sessions", type=int, default=1000, help="idle sessions for the RSS figure (0: skip)"
    )
    p.add_argument("--output", type=Path, default=RESULTS)
    p.add_argument(
        "--markdown", type=Path, metavar="JSON", help="print a result as Markdown, run nothing"
    )
    args = p.parse_args(argv)
    if args.markdown:
        return args
    if args.quick:
        args.seconds = 3
    unknown = set(args.targets) - set(TARGETS)
    if unknown or "direct" not in args.targets:
        p.error(f"--targets must include direct and name only {', '.join(TARGETS)}")
    if args.seconds < 1 or args.repeat < 1:
        p.error("--seconds and --repeat must be at least 1")
    if not set(args.modes) <= {"simple", "extended", "prepared"}:
        p.error("--modes takes simple, extended, prepared")
    if not all(c.isdigit() and int(c) > 0 for c in args.clients):
        p.error("--clients takes positive integers, e.g. 1,16")
    if shutil.which("pgbench") is None:
        p.error("pgbench is not on PATH (Debian: apt-get install -y postgresql-15)")
    return args


def start_targets(
    stack: contextlib.ExitStack,
    direct: Target,
    wanted: list[str],
    notes: list[str],
    baseline: str | None = None,
) -> list[Target]:
    """Start what `wanted` names; a target that fails to start is reported, not fatal."""
    targets = [direct]
    starters: dict[str, Callable[[], Target]] = {
        "pgbouncer": lambda: services.start_pgbouncer(stack, direct),
        "oversight": lambda: (
            services.start_oversight(stack, direct, "oversight", None, audit=True).target
        ),
        "oversight-noaudit": lambda: (
            services.start_oversight(stack, direct, "oversight-noaudit", None, audit=False).target
        ),
        "oversight+policy": lambda: _policy_target(stack, direct, notes),
        "oversight-baseline": lambda: (
            services.start_oversight(
                stack, direct, "oversight-baseline", None, audit=True, pythonpath=baseline
            ).target
        ),
        "oversight+governed": lambda: (
            services.start_oversight(
                stack, direct, "oversight+governed", services.GOVERNED_RULES, audit=True
            ).target
        ),
        "oversight+governed-baseline": lambda: (
            services.start_oversight(
                stack,
                direct,
                "oversight+governed-baseline",
                services.GOVERNED_RULES,
                audit=True,
                pythonpath=baseline,
            ).target
        ),
    }
    for name in wanted:
        if name == "direct":
            continue
        print(f"starting {name} ...", flush=True)
        try:
            targets.append(starters[name]())
        except RuntimeError as e:
            notes.append(f"{name} not measured: {e}")
            print(f"  FAILED: {e}", file=sys.stderr, flush=True)
    return targets


def _policy_target(stack: contextlib.ExitStack, direct: Target, notes: list[str]) -> Target:
    """Oversight with the example rules: the policy engine decides on every statement."""
    rules = services.REPO / "rules"
    if not any(rules.glob("*.yaml")):
        raise RuntimeError(f"no example rules in {rules}")
    server = services.start_oversight(stack, direct, "oversight+policy", rules, audit=True)
    ok, why = services.ungoverned(server)
    if not ok:
        raise RuntimeError(f"the example rules govern the bench tables ({why})")
    notes.append("oversight+policy: example rules/ loaded; bench statements decided `allow`")
    return server.target


def sample_loop(
    label: str,
    cases: list[Any],
    targets: list[Target],
    repeat: int,
    run_one: Callable[[Target, Any], dict[str, float]],
    show: Callable[[dict[str, float]], str],
    samples: Samples,
) -> None:
    """Repeat-major, target-minor: each target's samples are spread over the whole run."""
    for r in range(1, repeat + 1):
        for case in cases:
            key = case.key if isinstance(case, PgbenchCase) else str(case)
            for t in targets:
                try:
                    result: dict[str, Any] = run_one(t, case)
                    text = show(result)
                except SampleFailed as e:
                    result, text = {"error": str(e)}, f"FAILED: {e}"
                samples.setdefault(key, {}).setdefault(t.name, []).append(result)
                print(f"  [{label} {r}/{repeat}] {key:<30} {t.name:<18} {text}", flush=True)


def show_pgbench(r: dict[str, float]) -> str:
    text = f"{r['tps']:10.1f} tps {r['latency_ms']:8.3f} ms"
    if "p50_ms" in r:
        text += f" p50 {r['p50_ms']:.3f} ms"
    if "cpu_us_per_txn" in r:
        text += f" cpu {r['cpu_us_per_txn']:6.1f} us/txn"
    return text


def warm_up(targets: list[Target]) -> None:
    """One short pgbench per target and one table scan, so the first samples are not cold."""
    case = PgbenchCase("simple", 1)
    for t in targets:
        with contextlib.suppress(SampleFailed):
            workloads.pgbench(t, case, 1)
    with contextlib.suppress(SampleFailed):
        workloads.bulk_read(targets[0], "copy binary")


def failure_logs(targets: list[Target], *runs: Samples) -> list[str]:
    """Each failing case's first error, and the end of its server's log, for the report."""
    out = []
    for t in targets:
        errors: dict[str, str] = {}
        for r in runs:
            for case, by_target in r.items():
                failed = [s["error"] for s in by_target.get(t.name, []) if "error" in s]
                if failed:
                    errors[case] = failed[0]
        if not errors:
            continue
        text = "; ".join(f"{case}: {err}" for case, err in errors.items())
        if t.log is not None and t.log.exists():
            text += "\nend of its log:\n" + t.log.read_text(errors="replace")[-1500:]
        out.append(f"{t.name} had failed samples: {text}")
    return out


def write_results(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)


def run(args: argparse.Namespace) -> int:
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    notes = [
        f"{os.cpu_count()} CPUs shared by the client, the proxy, PostgreSQL and any other work "
        "on the machine: quote medians and ratios to direct, not absolute figures.",
    ]
    result: dict[str, Any] = {
        "started": started.isoformat(),
        "complete": False,
        "machine": report.machine(),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "notes": notes,
    }
    pg_samples: Samples = {}
    bulk_samples: Samples = {}
    try:
        with contextlib.ExitStack() as stack:
            print("starting PostgreSQL ...", flush=True)
            cluster = stack.enter_context(services.cluster_context())
            password = services.new_password()
            services.make_bench_database(cluster, password)
            stack.callback(services.drop_bench_database, cluster)
            direct = Target("direct", cluster.host, cluster.port, password)
            result["versions"] = report.versions(direct.dsn())
            print(f"loading pgbench -s {args.scale} and {services.BULK_ROWS} bulk rows ...")
            services.load_data(direct, args.scale)
            wanted = list(args.targets)
            if args.baseline:
                at = wanted.index("oversight") + 1 if "oversight" in wanted else len(wanted)
                wanted.insert(at, "oversight-baseline")
                notes.append(f"oversight-baseline: the proxy package of {args.baseline}")
                if "oversight+governed" in wanted:
                    at = wanted.index("oversight+governed") + 1
                    wanted.insert(at, "oversight+governed-baseline")
            targets = start_targets(stack, direct, wanted, notes, args.baseline)
            result["targets"] = {t.name: {"port": t.port, "note": t.note} for t in targets}
            warm_up(targets)
            if not args.no_pgbench:
                cases = [PgbenchCase(m, int(c)) for m in args.modes for c in args.clients]
                sample_loop(
                    "pgbench",
                    cases,
                    targets,
                    args.repeat,
                    lambda t, c: workloads.pgbench(t, c, args.seconds),
                    show_pgbench,
                    pg_samples,
                )
            if not args.no_bulk:
                sample_loop(
                    "bulk",
                    list(BULK_CASES),
                    targets,
                    args.repeat,
                    workloads.bulk_read,
                    lambda r: f"{r['bytes'] / r['seconds'] / 1e6:8.1f} MB/s {r['seconds']:6.2f} s",
                    bulk_samples,
                )
            if args.idle_sessions > 0:
                print(f"opening {args.idle_sessions} idle sessions ...", flush=True)
                try:
                    result["idle"] = idle.idle_sessions(direct, args.idle_sessions)
                except (RuntimeError, OSError, psycopg.Error) as e:
                    notes.append(f"idle sessions not measured: {e}")
            result["complete"] = True
            # Read before the ExitStack removes the servers' temp dirs.
            notes.extend(failure_logs(targets, pg_samples, bulk_samples))
    finally:
        result["finished"] = dt.datetime.now(dt.UTC).isoformat()
        result["wall_seconds"] = round(time.monotonic() - t0, 1)
        result["machine"]["loadavg_end"] = list(os.getloadavg())
        for by_target in bulk_samples.values():
            for name, runs in by_target.items():
                by_target[name] = report.bulk_samples_to_mbps(runs)
        result["pgbench"] = report.summarize(pg_samples, "tps")
        result["bulk"] = report.summarize(bulk_samples, "mb_per_s")
        result["targets_vs_goals"] = report.goals(
            result["pgbench"], result["bulk"], result.get("idle")
        )
        # An interrupted run must not replace the last complete one.
        out = args.output if result["complete"] else args.output.with_suffix(".partial.json")
        written = out if (pg_samples or bulk_samples) else None
        if written:
            write_results(written, result)
        print_summary(result, written)
    return 0 if result["complete"] else 1


def print_summary(result: dict[str, Any], written: Path | None) -> None:
    print()
    m = result["machine"]
    print(
        f"machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB; load average "
        f"{m['loadavg_start'][0]:.2f} at start, {m['loadavg_end'][0]:.2f} at end"
    )
    for k, v in result.get("versions", {}).items():
        print(f"  {k}: {v}")
    if result["pgbench"]:
        print(
            report.table(
                "pgbench select-only, median of samples",
                result["pgbench"],
                "tps",
                "tps",
                latency=True,
            )
        )
    if result["bulk"]:
        print(
            report.table(
                "bulk read of 1M rows, median of samples",
                result["bulk"],
                "mb_per_s",
                "MB/s",
                latency=False,
            )
        )
    if result.get("idle"):
        print(report.idle_table(result["idle"]))
    if result.get("targets_vs_goals"):
        print(report.goals_table(result["targets_vs_goals"]))
    for note in result["notes"]:
        print(f"note: {note}")
    if not result["complete"]:
        print("note: the run did not complete; figures are partial")
    if written:
        print(f"written: {written}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.markdown:
        print(report.markdown(json.loads(args.markdown.read_text())))
        return 0
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop every server started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
