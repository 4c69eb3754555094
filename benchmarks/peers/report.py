"""The comparison of direct and proxied outcomes: a table and every difference."""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

from benchmarks.peers.explained import EXPLAINED, OPEN_BUGS
from benchmarks.peers.phases import Phase
from benchmarks.peers.runners import Run


def fmt_counts(run: Run | None) -> str:
    if run is None:
        return "-"
    c = run.counts()
    return f"{c['passed']}/{c['failed']}/{c['error']}/{c['skipped']}"


def differences(direct: Run, proxy: Run) -> list[str]:
    ids = sorted(set(direct.outcomes) | set(proxy.outcomes))
    return [t for t in ids if direct.outcomes.get(t, "missing") != proxy.outcomes.get(t, "missing")]


def relay_differences(phases: list[Phase], runs: dict[tuple[str, str, str], Run]) -> list[str]:
    lines = []
    for phase in phases:
        direct = runs.get((phase.suite, phase.name, "direct"))
        relay = runs.get((phase.suite, phase.name, "relay"))
        if direct is None or relay is None:
            continue
        lines.append(f"{phase.suite} {phase.name}: relay {fmt_counts(relay)}")
        for tid in differences(direct, relay):
            lines.append(
                f"  {tid}: direct {direct.outcomes.get(tid, 'missing')}, "
                f"relay {relay.outcomes.get(tid, 'missing')}"
            )
    return lines


def report(
    phases: list[Phase],
    versions: dict[str, str],
    runs: dict[tuple[str, str, str], Run],
    targets: list[str],
    wall: float,
    results_dir: Path,
    args: argparse.Namespace,
) -> int:
    print()
    print("| suite | version | phase | direct p/f/e/s | proxy p/f/e/s | differences |")
    print("|---|---|---|---|---|---|")
    unexplained: list[str] = []
    explained: list[str] = []
    bugs: list[str] = []
    seen: set[str] = set()
    for phase in phases:
        direct = runs.get((phase.suite, phase.name, "direct"))
        proxy = runs.get((phase.suite, phase.name, "proxy"))
        diffs = differences(direct, proxy) if direct and proxy else []
        print(
            f"| {phase.suite} | {versions[phase.suite]} | {phase.name} | {fmt_counts(direct)} "
            f"| {fmt_counts(proxy)} | {len(diffs)} |"
        )
        for tid in diffs:
            key = f"{phase.suite}/{phase.name}::{tid}"
            seen.add(key)
            assert direct is not None and proxy is not None
            line = (
                f"{key}: direct {direct.outcomes.get(tid, 'missing')}, "
                f"proxy {proxy.outcomes.get(tid, 'missing')}"
            )
            relay = runs.get((phase.suite, phase.name, "relay"))
            if relay is not None:
                line += f", relay {relay.outcomes.get(tid, 'missing')}"
            if key in EXPLAINED:
                explained.append(f"{line}\n    explained: {EXPLAINED[key]}")
            elif key in OPEN_BUGS:
                bugs.append(f"{line}\n    open bug: {OPEN_BUGS[key]}")
            else:
                why = proxy.details.get(tid) or direct.details.get(tid) or ""
                unexplained.append(line + "\n" + textwrap.indent(why.strip()[-1500:], "    "))
    logged = [
        f"{s} {p}: " + ", ".join(f"{n} {what}" for what, n in r.log_lines.most_common())
        for (s, p, t), r in runs.items()
        if t == "proxy" and r.log_lines
    ]
    if logged:
        print("\nWarnings and errors in the proxy's log (see oversight.log):")
        print("\n".join(logged))
    relayed = relay_differences(phases, runs)
    if relayed:
        print("\nDifferences through a plain TCP relay (what any proxy hop changes):")
        print("\n".join(relayed))
    if explained:
        print("\nExplained differences:")
        print("\n".join(explained))
    if bugs:
        print("\nDifferences from open proxy bugs:")
        print("\n".join(bugs))
    if unexplained:
        print("\nUNEXPLAINED differences:")
        print("\n".join(unexplained))
    full = set(targets) == {"direct", "proxy"} and not args.k
    stale = sorted(
        k
        for k in [*EXPLAINED, *OPEN_BUGS]
        if full and k not in seen and any(k.startswith(f"{p.suite}/{p.name}::") for p in phases)
    )
    if stale:
        print("\nExplained entries that did not differ this run (racy ones may not; else remove):")
        print("\n".join(stale))
    print(f"\nwall time {wall / 60:.1f} min; logs and junit files under {results_dir}")
    if args.json:
        data = {
            f"{s} {p} {t}": {"counts": dict(r.counts()), "outcomes": r.outcomes, "note": r.note}
            for (s, p, t), r in runs.items()
        }
        args.json.write_text(json.dumps({"versions": versions, "runs": data}, indent=1))
    return 1 if unexplained else 0
