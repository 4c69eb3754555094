"""Where the proxy's CPU goes under pgbench: a py-spy sampling profile of `oversight serve`.

    python -m benchmarks.profile                       # -M prepared -c 8, plain relay
    python -m benchmarks.profile --mode simple --governed --seconds 30

Starts a throwaway PostgreSQL (as benchmarks.run does), loads `pgbench -i`,
starts Oversight, runs pgbench against it and meanwhile samples the proxy
with py-spy (`record --nonblocking --format raw`: on-CPU samples only, the
process is never paused). Prints the functions with the most samples, by
self time (the leaf of the stack) and by inclusive time (anywhere in it),
as percentages of all samples, plus the transactions per second pgbench saw
under the profiler. Needs py-spy (`pip install py-spy`) and the right to
ptrace the proxy (root, or kernel.yama.ptrace_scope = 0).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks import services, workloads
from benchmarks.services import Target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    ap.add_argument("--mode", default="prepared", choices=("simple", "extended", "prepared"))
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--governed", action="store_true", help="the benchmark's governed rules")
    ap.add_argument("--no-audit", action="store_true")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--raw", type=Path, help="also keep py-spy's collapsed stacks here")
    args = ap.parse_args(argv)
    spy = shutil.which("py-spy")
    if spy is None:
        print("py-spy not found (pip install py-spy)", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(services.cluster_context())
        password = services.new_password()
        services.make_bench_database(cluster, password)
        stack.callback(services.drop_bench_database, cluster)
        direct = Target("direct", cluster.host, cluster.port, password)
        services.load_data(direct, args.scale)
        rules = services.GOVERNED_RULES if args.governed else None
        server = services.start_oversight(stack, direct, "profiled", rules, not args.no_audit)
        target = server.target
        case = workloads.PgbenchCase(args.mode, args.clients)
        workloads.pgbench(target, case, 2)  # warm: caches, prepared statements
        out = Path(tempfile.mkdtemp(prefix="oversight-profile-"))
        stack.callback(shutil.rmtree, out, True)
        raw = out / "stacks.txt"
        record = [spy, "record", "--pid", str(server.proc.pid), "--nonblocking"]
        record += ["--rate", str(args.rate), "--format", "raw", "--output", str(raw)]
        record += ["--duration", str(args.seconds + 1)]
        with subprocess.Popen(record, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as prof:
            result = workloads.pgbench(target, case, args.seconds)
            _, err = prof.communicate(timeout=args.seconds + 60)
        if not raw.exists():
            print(f"py-spy wrote nothing: {err.decode(errors='replace')[-2000:]}", file=sys.stderr)
            return 1
        if args.raw is not None:
            shutil.copyfile(raw, args.raw)
        print(f"pgbench -S -M {args.mode} -c {args.clients}: {result['tps']:.0f} tps under py-spy")
        report(raw.read_text(), args.top)
    return 0


def report(collapsed: str, top: int) -> None:
    """Print the top functions of py-spy's collapsed stacks (`a;b;c count` lines)."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";")]
        own[frames[-1]] += n
        for f in set(frames):
            anywhere[f] += n
    if not total:
        print("no samples")
        return
    for title, table in (("self", own), ("inclusive", anywhere)):
        print(f"\ntop {top} by {title} samples (of {total}):")
        for name, n in table.most_common(top):
            print(f"  {100 * n / total:5.1f}%  {name}")


def _short(frame: str) -> str:
    """`func (path/to/module.py:123)` -> `func (module.py)`: lines apart, one entry."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({Path(path).name})" if path else name


if __name__ == "__main__":
    raise SystemExit(main())
