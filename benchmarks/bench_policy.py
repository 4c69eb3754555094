"""Policy engine decision time per statement, cached and uncached (medians).

    python benchmarks/bench_policy.py [--rounds N]

Uses the unit-test fixture rules and catalog. Uncached runs start each text
with a fresh comment so that every decision parses, analyzes and rewrites (a
fresh literal alone would be served by the shape cache: see bench_decide.py).
Aims (issue 3): cached < 20 us, uncached typical < 2 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from proxy.catalog import Catalog
from proxy.identity import SessionFacts
from proxy.policy.engine import PolicyEngine
from proxy.rules import load_rules

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "unit" / "policy" / "fixtures"

SHORT = "SELECT id, name, region FROM people WHERE id = {n}"

REPORT = """
WITH open_cases AS (
    SELECT c.id, c.person_id, c.officer_id, c.status, c.opened
    FROM cases c
    WHERE c.status = 'open'
      AND c.opened >= DATE '2024-01-01' + {n}
),
per_person AS (
    SELECT p.id, p.name, p.region, count(oc.id) AS n_open,
           min(oc.opened) AS first_opened, max(oc.opened) AS last_opened
    FROM people p
    JOIN open_cases oc ON oc.person_id = p.id
    GROUP BY p.id, p.name, p.region
),
per_officer AS (
    SELECT o.id, o.name, o.region, count(*) AS load
    FROM officers o
    JOIN open_cases oc ON oc.officer_id = o.id
    GROUP BY o.id, o.name, o.region
)
SELECT pp.region,
       r.label,
       count(DISTINCT pp.id) AS people_with_open_cases,
       sum(pp.n_open) AS open_cases,
       avg(pp.n_open)::numeric(10, 2) AS avg_per_person,
       max(po.load) AS busiest_officer_load,
       min(pp.first_opened) AS oldest,
       max(pp.last_opened) AS newest,
       CASE WHEN sum(pp.n_open) > 100 THEN 'high'
            WHEN sum(pp.n_open) > 10 THEN 'medium'
            ELSE 'low' END AS band
FROM per_person pp
LEFT JOIN regions r ON r.code = pp.region
LEFT JOIN per_officer po ON po.region = pp.region
WHERE pp.region IS NOT NULL
GROUP BY pp.region, r.label
HAVING count(DISTINCT pp.id) > 0
ORDER BY open_cases DESC, pp.region
LIMIT 50
"""


def median_us(engine: PolicyEngine, texts: list[str], facts: SessionFacts) -> float:
    samples = []
    for text in texts:
        t0 = time.perf_counter()
        engine.decide(text, facts)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2000)
    args = ap.parse_args()
    engine = PolicyEngine(
        load_rules(FIXTURES / "rules.yaml"), Catalog.from_file(FIXTURES / "schema.yaml")
    )
    facts = SessionFacts("alice", "db")
    print(f"{'statement':<24}{'uncached':>14}{'cached':>12}")
    for label, template in (("short lookup", SHORT), ("40-line report", REPORT)):
        assert engine.decide(template.format(n=0), facts).action == "rewrite"
        fresh = [f"/* {i} */ " + template.format(n=i + 1) for i in range(args.rounds)]
        uncached = median_us(engine, fresh, facts)
        cached = median_us(engine, [template.format(n=0)] * args.rounds * 5, facts)
        print(f"{label:<24}{uncached:>11.0f} us{cached:>9.1f} us")


if __name__ == "__main__":
    main()
