"""Turning samples into medians and ratios: the printed table and results/latest.json.

Only medians and ratios to direct are quoted: the machine is small and shared,
so single samples and means swing with whatever else is running.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(samples: dict[str, dict[str, list[dict[str, float]]]], metric: str) -> dict[str, Any]:
    """{case: {target: samples}} -> {case: {target: {median_*, ratio, samples}}}."""
    out: dict[str, Any] = {}
    for case, by_target in samples.items():
        rows: dict[str, Any] = {}
        for target, runs in by_target.items():
            values = [r[metric] for r in runs if metric in r]
            row: dict[str, Any] = {"samples": runs, f"median_{metric}": median(values)}
            for extra in ("latency_ms", "p50_ms", "cpu_us_per_txn"):
                got = [r[extra] for r in runs if extra in r]
                if got:
                    row[f"median_{extra}"] = median(got)
            rows[target] = row
        base = rows.get("direct", {}).get(f"median_{metric}")
        for row in rows.values():
            m = row[f"median_{metric}"]
            row["ratio_to_direct"] = round(m / base, 3) if base and m is not None else None
        out[case] = rows
    return out


# Issue 14's goals: (what, case, target, measure, reference, comparison, bound).
GOALS: tuple[tuple[str, str, str, str, str | None, str, float], ...] = (
    (
        "prepared tps vs PgBouncer",
        "pgbench -S -M prepared -c 8",
        "oversight",
        "tps",
        "pgbouncer",
        ">=",
        0.8,
    ),
    (
        "extended tps vs PgBouncer",
        "pgbench -S -M extended -c 8",
        "oversight",
        "tps",
        "pgbouncer",
        ">=",
        0.8,
    ),
    (
        "simple tps vs PgBouncer",
        "pgbench -S -M simple -c 8",
        "oversight",
        "tps",
        "pgbouncer",
        ">=",
        0.6,
    ),
    (
        "proxy CPU/txn prepared, us",
        "pgbench -S -M prepared -c 8",
        "oversight",
        "cpu_us_per_txn",
        None,
        "<=",
        40,
    ),
    (
        "proxy CPU/txn simple, us",
        "pgbench -S -M simple -c 8",
        "oversight",
        "cpu_us_per_txn",
        None,
        "<=",
        60,
    ),
    (
        "added p50 latency prepared 1 client, us",
        "pgbench -S -M prepared -c 1",
        "oversight",
        "p50_ms",
        "direct-",
        "<=",
        60,
    ),
    ("COPY out MB/s vs direct", "copy binary", "oversight", "mb_per_s", "direct", ">=", 0.9),
    ("SELECT out MB/s vs direct", "select text", "oversight", "mb_per_s", "direct", ">=", 0.9),
)


def goals(
    pgbench: dict[str, Any], bulk: dict[str, Any], idle: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Each goal with the figure this run measured and whether it is met."""
    out = []
    for what, case, target, measure, ref, cmp, bound in GOALS:
        rows = (pgbench.get(case) or bulk.get(case)) or {}
        value = rows.get(target, {}).get(f"median_{measure}")
        if value is not None and ref == "direct-":  # added latency in microseconds
            base = rows.get("direct", {}).get(f"median_{measure}")
            value = (value - base) * 1000 if base is not None else None
        elif value is not None and ref is not None:
            base = rows.get(ref, {}).get(f"median_{measure}")
            value = value / base if base else None
        met = None if value is None else (value >= bound if cmp == ">=" else value <= bound)
        out.append({"goal": what, "value": value, "target": f"{cmp} {bound}", "met": met})
    if idle is not None:
        n = idle.get("sessions")
        rss = idle.get("oversight-idle", {}).get("rss_mib_with_sessions")
        met = None if rss is None else rss < 150
        out.append(
            {
                "goal": f"RSS with {n} idle sessions, MiB",
                "value": rss,
                "target": "< 150",
                "met": met,
            }
        )
    return out


def idle_table(idle: dict[str, Any]) -> str:
    lines = [f"RSS with {idle['sessions']} idle sessions (MiB)"]
    for name, row in idle.items():
        if isinstance(row, dict):
            lines.append(
                f"  {name:<16} before {_fmt(row['rss_mib_before'], '7.1f')}"
                f"  with sessions {_fmt(row['rss_mib_with_sessions'], '7.1f')}"
                f"  per session {_fmt(row['kib_per_session'], '6.1f')} KiB"
            )
    return "\n".join(lines)


def goals_table(rows: list[dict[str, Any]]) -> str:
    lines = ["issue 14 goals (this run)"]
    for r in rows:
        mark = {True: "met", False: "MISSED", None: "not measured"}[r["met"]]
        lines.append(f"  {r['goal']:<42} {_fmt(r['value'], '9.2f')} {r['target']:>8}  {mark}")
    return "\n".join(lines)


def bulk_samples_to_mbps(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {**r, "mb_per_s": r["bytes"] / r["seconds"] / 1e6} if "seconds" in r else r for r in runs
    ]


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(title: str, summary: dict[str, Any], metric: str, unit: str, latency: bool) -> str:
    lines = [title]
    head = f"  {'case':<30} {'target':<22} {unit:>11} {'x direct':>9}"
    more = f" {'lat ms':>8} {'p50 ms':>8} {'cpu us':>7}" if latency else ""
    lines.append(head + more + "  failed")
    for case, rows in summary.items():
        for target, row in rows.items():
            failed = sum(1 for s in row["samples"] if "error" in s)
            line = f"  {case:<30} {target:<22} {_fmt(row[f'median_{metric}'], '11.1f')}"
            line += f" {_fmt(row['ratio_to_direct'], '9.3f')}"
            if latency:
                line += f" {_fmt(row.get('median_latency_ms'), '8.3f')}"
                line += f" {_fmt(row.get('median_p50_ms'), '8.3f')}"
                line += f" {_fmt(row.get('median_cpu_us_per_txn'), '7.1f')}"
            lines.append(line + f"  {failed or ''}")
    return "\n".join(lines)


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine() -> dict[str, Any]:
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "loadavg_start": list(os.getloadavg()),
    }


def versions(direct_dsn: str) -> dict[str, str]:
    with psycopg.connect(direct_dsn) as conn:
        row = conn.execute("SELECT version()").fetchone()
    repo = Path(__file__).resolve().parent.parent
    pgbouncer = _run(["pgbouncer", "--version"])
    return {
        "python": platform.python_version(),
        "postgresql": str(row[0]) if row else "",
        "pgbench": _run(["pgbench", "--version"]),
        "pgbouncer": (pgbouncer.splitlines() or [""])[0],
        "psycopg": psycopg.__version__,
        "uvloop": metadata.version("uvloop"),
        "oversight_commit": _run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"]),
    }


def markdown(result: dict[str, Any]) -> str:
    """A recorded run for benchmarks/README.md: machine, versions, then the two tables."""
    m, v = result["machine"], result.get("versions", {})
    s = result["settings"]
    lines = [
        f"Run of {result['started'][:16].replace('T', ' ')} UTC, {result['wall_seconds']:.0f} s,"
        f" commit {v.get('oversight_commit', '?')}; {s.get('repeat')} samples per figure,"
        f" pgbench samples of {s.get('seconds')} s.",
        "",
        f"- machine: `nproc` {m['nproc']}, {m['cpu_model']}, {m['memory_gib']} GiB,"
        f" Linux {m['kernel']}; load average {m['loadavg_start'][0]:.2f} at start,"
        f" {m['loadavg_end'][0]:.2f} at end (the run's own load counts)",
        f"- {v.get('postgresql', '?').split(' on ')[0]} (pgserver), {v.get('pgbench', '?')},"
        f" {v.get('pgbouncer', '?')}, Python {v.get('python', '?')}, psycopg"
        f" {v.get('psycopg', '?')}, uvloop {v.get('uvloop', '?')}",
        "",
    ]
    targets = list(result.get("targets", {}))
    for title, key, metric, unit in (
        ("pgbench select-only: median tps (ratio to direct)", "pgbench", "tps", "tps"),
        ("bulk read of 1M rows: median MB/s (ratio to direct)", "bulk", "mb_per_s", "MB/s"),
    ):
        summary = result.get(key) or {}
        if not summary:
            continue
        lines += [f"{title}:", "", "| case | " + " | ".join(targets) + " |"]
        lines.append("|---|" + "---:|" * len(targets))
        for case, rows in summary.items():
            cells = []
            for t in targets:
                row = rows.get(t, {})
                med = row.get(f"median_{metric}")
                if med is None:
                    cells.append("failed")
                    continue
                ratio = row.get("ratio_to_direct")
                cell = f"{med:.0f}" if unit == "tps" else f"{med:.1f}"
                if t != "direct" and ratio is not None:
                    cell += f" ({ratio:.2f})"
                cells.append(cell)
            lines.append(f"| {case} | " + " | ".join(cells) + " |")
        lines.append("")
    if result.get("pgbench"):
        lines += ["pgbench median latency, ms:", "", "| case | " + " | ".join(targets) + " |"]
        lines.append("|---|" + "---:|" * len(targets))
        for case, rows in result["pgbench"].items():
            cells = [_fmt(rows.get(t, {}).get("median_latency_ms"), ".3f") for t in targets]
            lines.append(f"| {case} | " + " | ".join(cells) + " |")
        lines.append("")
    for title, key, spec in (
        ("pgbench median of per-transaction latency (1 client), ms", "median_p50_ms", ".3f"),
        ("server CPU per transaction (utime+stime from /proc), us", "median_cpu_us_per_txn", ".1f"),
    ):
        cases = {
            c: r
            for c, r in (result.get("pgbench") or {}).items()
            if any(key in row for row in r.values())
        }
        if not cases:
            continue
        lines += [f"{title}:", "", "| case | " + " | ".join(targets) + " |"]
        lines.append("|---|" + "---:|" * len(targets))
        for case, rows in cases.items():
            cells = [_fmt(rows.get(t, {}).get(key), spec) for t in targets]
            lines.append(f"| {case} | " + " | ".join(cells) + " |")
        lines.append("")
    if result.get("idle"):
        lines += ["```", idle_table(result["idle"]), "```", ""]
    if result.get("targets_vs_goals"):
        lines += ["Goals of issue 14 in this run:", "", "| goal | measured | goal | |"]
        lines.append("|---|---:|---:|---|")
        for r in result["targets_vs_goals"]:
            mark = {True: "met", False: "missed", None: "not measured"}[r["met"]]
            lines.append(f"| {r['goal']} | {_fmt(r['value'], '.2f')} | {r['target']} | {mark} |")
        lines.append("")
    failures = sorted(
        {
            f"- {t}, {case}: {sample['error']}"
            for key in ("pgbench", "bulk")
            for case, rows in (result.get(key) or {}).items()
            for t, row in rows.items()
            for sample in row["samples"]
            if "error" in sample
        }
    )
    if failures:
        lines += ["Failed samples:", "", *failures, ""]
    return "\n".join(lines)
