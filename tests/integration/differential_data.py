"""The differential check's world: rules, schema, generated data and each identity's truth.

The truth is computed here in Python from the generated rows (filter and
masks as the rules say), independently of the proxy's rewrite.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg

RULES = """\
version: 1
defaults:
  statements: [select, show, set, begin, commit, rollback]
users:
  scramuser: {groups: [analysts], attributes: {region: north}}
  md5user: {groups: [analysts], attributes: {region: south}}
rules:
  - id: people-by-region
    match: {groups: [analysts]}
    table: public.people
    row_filter: "region = :region"
    columns: {ssn: redact, email: hash, phone: partial, salary: "null"}
  - id: orders-of-region
    match: {groups: [analysts]}
    table: public.orders
    row_filter: "person_id IN (SELECT id FROM public.people WHERE region = :region)"
  - id: events-by-region
    match: {groups: [analysts]}
    table: public.events
    row_filter: "region = :region"
  - id: depts-open
    match: {groups: [analysts]}
    table: public.depts
  - id: no-secrets
    match: {groups: [analysts]}
    table: public.secrets
    access: deny
"""

SCHEMA = """
CREATE TABLE depts (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE people (
  id int PRIMARY KEY, name text NOT NULL, region text NOT NULL, dept_id int,
  ssn text, email text, phone text, salary numeric(10, 2), born date, active boolean
);
CREATE TABLE orders (
  id int PRIMARY KEY, person_id int, amount numeric(10, 2), status text,
  placed_at timestamp, note text
);
CREATE TABLE events (id int, region text, person_id int, kind text, at timestamp)
  PARTITION BY LIST (region);
CREATE TABLE events_north PARTITION OF events FOR VALUES IN ('north');
CREATE TABLE events_south PARTITION OF events FOR VALUES IN ('south');
CREATE TABLE events_east PARTITION OF events FOR VALUES IN ('east');
CREATE TABLE secrets (id int, value text);
CREATE VIEW people_view AS
  SELECT id, name, region, dept_id, ssn, email, salary FROM people;
CREATE VIEW active_people AS SELECT id, name, region, salary FROM people WHERE active;
CREATE VIEW order_totals AS
  SELECT p.region, p.id AS person_id, count(o.id) AS n, coalesce(sum(o.amount), 0) AS total
  FROM people p LEFT JOIN orders o ON o.person_id = p.id GROUP BY p.region, p.id;
CREATE VIEW big_spenders AS SELECT person_id, total FROM order_totals WHERE total > 500;
CREATE VIEW dept_people AS
  SELECT d.name AS dept, p.name, p.email FROM depts d JOIN people p ON p.dept_id = d.id;
CREATE VIEW safe_people WITH (security_barrier) AS
  SELECT id, name, region FROM people WHERE active;
CREATE VIEW dept_view AS SELECT id, name FROM depts;
-- Definitions with PostgreSQL syntax pg_get_viewdef prints in its own way
-- (ANY (ARRAY[...]), casts, COLLATE, FILTER, GROUPING SETS, LATERAL...).
CREATE VIEW rich_view AS
  SELECT p.id, CASE WHEN p.region IN ('north', 'east') THEN 'ne' ELSE 'other' END AS zone,
         p.born + interval '1 year' AS later, upper(p.name) AS uname,
         row_number() OVER (PARTITION BY p.dept_id ORDER BY p.id, o.id) AS rn,
         count(*) FILTER (WHERE o.status = 'paid') OVER (PARTITION BY p.id) AS paid
  FROM people p LEFT JOIN orders o ON o.person_id = p.id;
CREATE VIEW cte_view AS
  WITH t AS (SELECT person_id, sum(amount) AS s FROM orders GROUP BY person_id)
  SELECT p.id, p.email, t.s FROM people p JOIN t ON t.person_id = p.id WHERE t.s > 100;
CREATE VIEW union_view AS
  SELECT id, 'person' AS kind, name AS label FROM people
  UNION ALL SELECT id, 'dept', name FROM depts;
CREATE VIEW latest_order AS
  SELECT DISTINCT ON (person_id) person_id, id, amount FROM orders
  ORDER BY person_id, placed_at DESC, id;
CREATE VIEW lateral_view AS
  SELECT p.id, l.amount FROM people p,
    LATERAL (SELECT max(amount) AS amount FROM orders o WHERE o.person_id = p.id) l;
CREATE VIEW typed_view AS
  SELECT id, salary::text AS s, born::timestamp AS b, (id % 3)::numeric / 2 AS frac,
         name COLLATE "C" AS cname, ARRAY[id, dept_id] AS arr, ssn || '/' || phone AS combo
  FROM people WHERE id = ANY (ARRAY[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]) AND name IS DISTINCT FROM 'x';
CREATE VIEW grouped_view AS
  SELECT dept_id, region, count(*) AS n FROM people GROUP BY GROUPING SETS ((dept_id), (region));
CREATE MATERIALIZED VIEW people_mat AS SELECT id, region, ssn FROM people;
CREATE VIEW exists_view AS
  SELECT d.id, d.name FROM depts d
  WHERE EXISTS (SELECT 1 FROM people p WHERE p.dept_id = d.id AND p.active);
"""

REGIONS = ("north", "south", "east")


@dataclass
class Data:
    depts: list[tuple[Any, ...]] = field(default_factory=list)
    people: list[tuple[Any, ...]] = field(default_factory=list)
    orders: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    secrets: list[tuple[Any, ...]] = field(default_factory=list)


def generate() -> Data:
    rnd = random.Random(20261204)
    d = Data()
    d.depts = [(i, n) for i, n in enumerate(["sales", "ops", "legal", "research", "it"], 1)]
    start = dt.datetime(2026, 1, 1, 9, 0)
    for i in range(1, 61):
        region = REGIONS[i % 3]
        phone = None if i % 7 == 0 else f"555-{1000 + i * 37 % 9000:04d}"
        d.people.append(
            (
                i,
                f"{region}-person-{i:02d}",
                region,
                (i % 5) + 1 if i % 11 else None,
                f"SSN-{i:04d}-{rnd.randint(10, 99)}",
                f"person{i:02d}@corp.example",
                phone,
                Decimal(rnd.randint(30_000, 150_000)) / 1 + Decimal("0.50") * (i % 2),
                dt.date(1960 + i % 40, 1 + i % 12, 1 + i % 28),
                i % 4 != 0,
            )
        )
    for j in range(1, 241):
        pid = rnd.randint(1, 60)
        d.orders.append(
            (
                j,
                pid,
                Decimal(rnd.randint(100, 90_000)) / 100,
                rnd.choice(["open", "paid", "shipped", "cancelled"]),
                start + dt.timedelta(hours=rnd.randint(0, 24 * 200)),
                rnd.choice([None, "rush", "gift", "fragile"]),
            )
        )
    d.orders.append((241, None, Decimal("12.00"), "open", start, None))  # no person
    for k in range(1, 121):
        pid = rnd.randint(1, 60)
        region = d.people[pid - 1][2]
        kind = rnd.choice(["login", "view", "export"])
        d.events.append((k, region, pid, kind, start + dt.timedelta(minutes=rnd.randint(0, 9999))))
    d.secrets = [(1, "launch codes"), (2, "the recipe")]
    return d


def truth(d: Data, region: str) -> Data:
    """What the rules let a user of `region` see, computed here, not by the proxy."""
    visible = {p[0] for p in d.people if p[2] == region}
    people = []
    for p in d.people:
        if p[2] != region:
            continue
        email = hashlib.sha256(p[5].encode()).hexdigest()
        phone = None if p[6] is None else "***" + p[6][-4:]
        people.append((*p[:4], "****", email, phone, None, *p[8:]))
    return Data(
        depts=d.depts,
        people=people,
        orders=[o for o in d.orders if o[1] in visible],
        events=[e for e in d.events if e[1] == region],
        secrets=[],
    )


def secrets_for(d: Data, region: str) -> set[str]:
    """Values whose presence in an answer means the policy leaked."""
    out: set[str] = set()
    for p in d.people:
        out.update(x for x in (p[4], p[5], p[6]) if x)
        if p[2] != region:
            out.add(p[1])
    out.update(s[1] for s in d.secrets)
    return out


def fill(dsn: str, data: Data) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
        with conn.cursor() as cur:
            for table, rows in (
                ("depts", data.depts),
                ("people", data.people),
                ("orders", data.orders),
                ("events", data.events),
                ("secrets", data.secrets),
            ):
                if rows:
                    marks = ", ".join(["%s"] * len(rows[0]))
                    cur.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
        conn.execute("REFRESH MATERIALIZED VIEW people_mat")
        conn.execute("ANALYZE")
