"""Where the proxy's CPU goes under pgbench: a py-spy sampling profile of `oversight serve`.

    python -m benchmarks.profile                       # -M prepared -c 8, plain relay
    python -m benchmarks.profile --mode simple --governed --seconds 30
    python -m benchmarks.profile --cprofile            # CPU time of the event loop's thread

Starts a throwaway PostgreSQL (as benchmarks.run does), loads `pgbench -i`,
starts Oversight, runs pgbench against it and meanwhile samples the proxy
with py-spy (`record --nonblocking --format raw`: on-CPU samples only, the
process is never paused; `--native` pauses it to read C frames too). Prints
the functions with the most samples, by self time (the leaf of the stack)
and by inclusive time (anywhere in it), as percentages of all samples, plus
the transactions per second pgbench saw under the profiler. Needs py-spy
(the `bench` extra) and the right to ptrace the proxy (root, or
kernel.yama.ptrace_scope = 0).

py-spy counts a thread as busy while it is runnable, so a syscall that wakes
the peer (a write to PostgreSQL on loopback) shows the time the proxy then
waits for a CPU as well. `--cprofile` measures CPU time instead: the proxy
runs under cProfile with `time.thread_time` as its clock, switched on for the
sample only (SIGUSR1, SIGUSR2), and the functions are listed by own and
cumulative CPU seconds (pstats), with the total per transaction. cProfile's own cost per call
inflates the figures, more for code that makes many small calls.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
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
    ap.add_argument("--native", action="store_true", help="C frames too (py-spy --native)")
    ap.add_argument("--cprofile", action="store_true", help="CPU time by cProfile, not py-spy")
    args = ap.parse_args(argv)
    spy = shutil.which("py-spy")
    if args.cprofile:
        return _cprofile(args)
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
        record = [spy, "record", "--pid", str(server.proc.pid)]
        record += ["--rate", str(args.rate), "--format", "raw", "--output", str(raw)]
        record += ["--duration", str(args.seconds + 1)]
        # Native frames need the process paused at each sample (slower, but shows what
        # the time under a C call is); Python frames alone are read without pausing it.
        record.append("--native" if args.native else "--nonblocking")
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


# The proxy's entry point under cProfile, on the event loop's (main) thread, clocked by
# that thread's CPU time; SIGUSR1 starts it, SIGUSR2 stops it and writes the stats.
_LAUNCH = """
import cProfile, os, signal, sys, time
from proxy.cli import main
prof = cProfile.Profile(time.thread_time)
signal.signal(signal.SIGUSR1, lambda *_: prof.enable())
def stop(*_):
    prof.disable()
    prof.dump_stats(os.environ["BENCH_PROFILE_OUTPUT"])
signal.signal(signal.SIGUSR2, stop)
sys.exit(main())
"""


def _cprofile(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(services.cluster_context())
        password = services.new_password()
        services.make_bench_database(cluster, password)
        stack.callback(services.drop_bench_database, cluster)
        direct = Target("direct", cluster.host, cluster.port, password)
        services.load_data(direct, args.scale)
        out = Path(tempfile.mkdtemp(prefix="oversight-profile-"))
        stack.callback(shutil.rmtree, out, True)
        os.chmod(out, 0o777)  # the proxy may run as the unprivileged bench user
        stats = out / "proxy.prof"
        os.environ["BENCH_PROFILE_OUTPUT"] = str(stats)
        rules = services.GOVERNED_RULES if args.governed else None
        command = [sys.executable, "-c", _LAUNCH, "serve"]
        server = services.start_oversight(
            stack, direct, "profiled", rules, not args.no_audit, command=command
        )
        target = server.target
        case = workloads.PgbenchCase(args.mode, args.clients)
        workloads.pgbench(target, case, 2)  # warm: caches, prepared statements
        os.kill(server.proc.pid, signal.SIGUSR1)
        result = workloads.pgbench(target, case, args.seconds)
        os.kill(server.proc.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while not stats.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not stats.exists():
            print("the proxy wrote no profile", file=sys.stderr)
            return 1
        time.sleep(0.5)  # dump_stats writes in one go; let it finish
        txns = result["tps"] * args.seconds
        tps = result["tps"]
        print(f"pgbench -S -M {args.mode} -c {args.clients}: {tps:.0f} tps under cProfile")
        if args.raw is not None:
            shutil.copyfile(stats, args.raw)
        buf = io.StringIO()
        st = pstats.Stats(str(stats), stream=buf)
        total = sum(v[2] for v in st.stats.values())  # type: ignore[attr-defined]
        print(f"CPU seconds in the profile: {total:.2f}, {1e6 * total / txns:.0f} us/transaction")
        for key in ("tottime", "cumulative"):
            buf.seek(0)
            buf.truncate()
            st.sort_stats(key).print_stats(args.top)
            print(f"\nby {key}:")
            print(_table(buf.getvalue()))
    return 0


def _table(text: str) -> str:
    """pstats' listing without its header lines and with short paths."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    out = []
    for ln in lines[start:]:
        head, sep, where = ln.rpartition(" ")
        if sep and "/" in where:
            ln = f"{head} {where.rsplit('/', 1)[-1]}"
        out.append(ln)
    return "\n".join(out)


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
