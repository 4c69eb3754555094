"""PolicyEngine.decide() per statement when every statement carries new literal values.

    python benchmarks/bench_decide.py [--n N] [--repeats R]

What the simple protocol sends: pgbench's select-only statement with a new
aid each time, decided under a pass-through rule set (`statements: [all]`, no
table rules: the benchmark harness's `oversight` target) and under the unit
test fixture rules, and a governed statement (row filter and three masks) with
a new id each time. Each figure is microseconds of CPU time per decide() (CPU
time, not wall time, so that other work on a shared machine counts less), the
best of R runs of N statements, after the first few statements of the shape.

`first sight` is a text of a shape never seen before (a new column alias, or
a new comment before bench_policy.py's 40-line report, each time): the cost
of a cache miss, for comparison. Run it from another checkout
(PYTHONPATH=/path/to/other) to compare engines; the script only uses
PolicyEngine.decide.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.bench_policy import REPORT
from proxy.catalog import Catalog
from proxy.identity import SessionFacts
from proxy.policy.engine import PolicyEngine
from proxy.rules import RuleSet, load_rules

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "unit" / "policy" / "fixtures"
PGBENCH = "SELECT abalance FROM pgbench_accounts WHERE aid = {n};"
GOVERNED = "SELECT id, name, ssn, email, dob FROM people WHERE id = {n} AND region <> 'x'"
FIRST_SIGHT = "SELECT name AS c{n} FROM people WHERE id = 1"
REPORT_FIRST_SIGHT = "/* {n} */" + REPORT


def relay_rules() -> RuleSet:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rules.yaml"
        path.write_text("version: 1\ndefaults: {statements: [all]}\n")
        return load_rules(path)


def best_us(run: Callable[[int], None], n: int, repeats: int) -> float:
    best = float("inf")
    for r in range(repeats):
        t0 = time.process_time()
        for i in range(n):
            run(r * n + i)
        best = min(best, (time.process_time() - t0) / n)
    return best * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    catalog = Catalog.from_file(FIXTURES / "schema.yaml")
    fixture_rules = load_rules(FIXTURES / "rules.yaml")
    alice = SessionFacts("alice", "db")
    rng = random.Random(7)
    rows: list[tuple[str, RuleSet, str, int]] = [
        ("pgbench -S, pass-through rules", relay_rules(), PGBENCH, args.n),
        ("pgbench -S, fixture rules", fixture_rules, PGBENCH, args.n),
        ("row filter + masks", fixture_rules, GOVERNED, args.n),
        ("first sight (cache miss)", fixture_rules, FIRST_SIGHT, max(args.n // 10, 50)),
        ("40-line report, first sight", fixture_rules, REPORT_FIRST_SIGHT, max(args.n // 50, 10)),
    ]
    print(f"{'statement':<34}{'us per decide':>14}")
    for label, rules, template, n in rows:
        engine = PolicyEngine(rules, catalog)
        for i in range(3):  # first and second sight of the shape
            engine.decide(template.format(n=i), alice)
        assert engine.decide(template.format(n=3), alice).action != "block"
        if template in (FIRST_SIGHT, REPORT_FIRST_SIGHT):

            def run(i: int, engine: PolicyEngine = engine, t: str = template) -> None:
                engine.decide(t.format(n=i + 10), alice)

        else:

            def run(i: int, engine: PolicyEngine = engine, t: str = template) -> None:
                engine.decide(t.format(n=rng.randrange(1, 1_000_000)), alice)

        print(f"{label:<34}{best_us(run, n, args.repeats):>11.1f} us")


if __name__ == "__main__":
    main()
