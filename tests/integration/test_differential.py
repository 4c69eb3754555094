"""The differential check: through the proxy, a user sees what a database holding only
their permitted rows, with masked values, would show.

For each test identity the harness builds a "truth" database with the same
schema (tables, partitions, views) holding only the rows that identity may
see, masked as the rules say; the masking here is computed in Python from the
generated data, independently of the proxy's rewrite. Every statement of the
corpus (differential_corpus.sql) then runs twice: through the proxy as the
identity, against the source database; and directly against the truth
database. Outcomes:

- same rows (or the same error)                     -> agree
- the proxy refused it (42501) and the truth did not -> refusal
- the proxy's answer holds a secret (a raw ssn, email or phone, or a
  name of a person in another region)              -> leak
- any other difference                              -> wrong

Thresholds (the issue's "Done when"): 0 leaks, 0 wrong answers, at most 1
refusal per 100 ordinary statements. Adversarial statements may be refused
(that is their point); if answered, they too must agree. The counts are
printed (`pytest -s` shows them).

Row order is compared only for statements with an ORDER BY at their end;
otherwise the rows are compared as multisets. A whole-row value is compared
as its text (see _canon).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pgcluster import PgCluster
from psycopg import sql

from proxy.catalog import load_catalog
from proxy.catalogs import CatalogSet
from proxy.enforce import Enforcer
from proxy.rules import load_rules

CORPUS = Path(__file__).with_name("differential_corpus.sql")
SOURCE_DB = "diff_source"
IDENTITIES = {"scramuser": "north", "md5user": "south"}  # user -> region attribute

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
        conn.execute("ANALYZE")


@dataclass(frozen=True)
class Case:
    kind: str  # ordinary | adversarial
    title: str
    sql: str


def load_corpus() -> list[Case]:
    cases: list[Case] = []
    kind = title = ""
    lines: list[str] = []

    def flush() -> None:
        text = "\n".join(lines).strip().rstrip(";").strip()
        if text:
            cases.append(Case(kind, title, text))

    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        m = re.match(r"--\s*(ordinary|adversarial):\s*(.*)", line)
        if m:
            flush()
            kind, title, lines = m.group(1), m.group(2).strip(), []
        elif not line.startswith("--"):
            lines.append(line)
    flush()
    return cases


DATABASES = [SOURCE_DB, *(f"diff_truth_{r}" for r in IDENTITIES.values())]


def _drop(conn: psycopg.Connection[Any], db: str) -> None:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))


@pytest.fixture(scope="module")
def diff_dbs(pg: PgCluster) -> Iterator[Data]:
    data = generate()
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        for db in DATABASES:
            _drop(conn, db)
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    fill(pg.dsn(dbname=SOURCE_DB), data)
    with psycopg.connect(pg.dsn(dbname=SOURCE_DB), autocommit=True) as conn:
        for role in IDENTITIES:
            conn.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"')
    for region in IDENTITIES.values():
        fill(pg.dsn(dbname=f"diff_truth_{region}"), truth(data, region))
    yield data
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        for db in DATABASES:
            _drop(conn, db)


Outcome = tuple[str, Any]  # ("rows", [...]) | ("error", sqlstate)


def run(conn: psycopg.Connection[Any], text: str) -> Outcome:
    try:
        if text.lstrip().upper().startswith("COPY"):
            with conn.cursor() as cur, cur.copy(text) as copy:
                return ("rows", [(bytes(chunk).decode(),) for chunk in copy])
        cur = conn.execute(text)
        return ("rows", [tuple(r) for r in cur.fetchall()] if cur.description else [])
    except psycopg.Error as e:
        return ("error", e.sqlstate or "?")


def _ordered(text: str) -> bool:
    tail = re.sub(r"\s+", " ", text.lower())
    tail = re.sub(r"\b(limit|offset|fetch)\b.*$", "", tail)
    return " order by " in tail[-200:] and tail.rfind(" order by ") > tail.rfind(")")


def _record_text(value: tuple[Any, ...]) -> str:
    """A record as PostgreSQL writes it in text: (1,abc,,"x y")."""

    def field(v: Any) -> str:
        if v is None:
            return ""
        text = str(v)
        if text == "" or any(c in text for c in ',()" \\'):
            return '"' + text.replace("\\", "\\\\").replace('"', '""') + '"'
        return text

    return "(" + ",".join(field(v) for v in value) + ")"


def _canon(rows: list[tuple[Any, ...]], ordered: bool) -> list[str]:
    # A whole-row reference to a table reads its masking subquery through the proxy,
    # so it comes back as an anonymous record (which psycopg parses into a tuple of
    # strings) where the truth database returns the table's composite type (which
    # psycopg leaves as text): the same value, compared as text.
    out = [repr(tuple(_record_text(v) if isinstance(v, tuple) else v for v in r)) for r in rows]
    return out if ordered else sorted(out)


def _leaks(rows: list[tuple[Any, ...]], secrets: set[str]) -> list[str]:
    found = []
    for r in rows:
        for v in r:
            text = str(v)
            found += [s for s in secrets if s in text]
    return found


@dataclass
class Tally:
    ordinary: int = 0
    adversarial: int = 0
    agree: int = 0
    refusals: int = 0
    expected_refusals: int = 0
    leaks: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)  # ordinary statements the truth refused


def compare(case: Case, got: Outcome, want: Outcome, secrets: set[str], t: Tally, who: str) -> None:
    label = f"[{who}] {case.title}: {case.sql}"
    if case.kind == "ordinary" and want[0] == "error":
        t.broken.append(f"{label} -> truth error {want[1]}")  # the corpus is wrong, not the proxy
    if got[0] == "rows":
        leaked = _leaks(got[1], secrets)
        if leaked:
            t.leaks.append(f"{label} -> {sorted(set(leaked))[:3]}")
            return
    if got[0] == "error" and got[1] == "42501" and want[0] != "error":
        if case.kind == "ordinary":
            t.refusals += 1
            t.refused.append(label)
        else:
            t.expected_refusals += 1
        return
    if got[0] == want[0] == "error":
        if got[1] == want[1] or case.kind == "adversarial":
            t.agree += 1
            return
        t.wrong.append(f"{label} -> error {got[1]}, truth error {want[1]}")
        return
    if got[0] != want[0]:
        t.wrong.append(f"{label} -> {got[0]} {str(got[1])[:200]}, truth {want[0]} {want[1]}")
        return
    ordered = _ordered(case.sql)
    if _canon(got[1], ordered) == _canon(want[1], ordered):
        t.agree += 1
    else:
        t.wrong.append(f"{label} -> {str(got[1])[:300]} != truth {str(want[1])[:300]}")


@pytest.fixture
async def diff_proxy(pg: PgCluster, diff_dbs: Data, proxy_factory: Any, tmp_path: Path) -> Any:
    rules_file = tmp_path / "differential.yaml"
    rules_file.write_text(RULES)
    rules = load_rules(rules_file)
    catalogs = CatalogSet(lambda db: load_catalog(pg.dsn(), database=db), pg.dbname)
    catalog = await catalogs.ensure(pg.dbname)
    assert catalog is not None
    return await proxy_factory(hooks=Enforcer(rules, catalog, None, catalogs=catalogs))


def _check(pg: PgCluster, proxy: Any, data: Data, cases: list[Case]) -> Tally:
    t = Tally()
    for user, region in IDENTITIES.items():
        secrets = secrets_for(data, region)
        with (
            psycopg.connect(proxy.dsn(user, dbname=SOURCE_DB), autocommit=True) as through,
            psycopg.connect(pg.dsn(dbname=f"diff_truth_{region}"), autocommit=True) as direct,
        ):
            for case in cases:
                if case.kind == "ordinary":
                    t.ordinary += 1
                else:
                    t.adversarial += 1
                compare(case, run(through, case.sql), run(direct, case.sql), secrets, t, user)
    return t


async def test_differential(pg: PgCluster, diff_proxy: Any, diff_dbs: Data, run_sync: Any) -> None:
    cases = load_corpus()
    ordinary = [c for c in cases if c.kind == "ordinary"]
    assert len(ordinary) >= 100 and len(cases) > len(ordinary)
    t = await run_sync(_check, pg, diff_proxy, diff_dbs, cases)
    print(
        f"\ndifferential: {t.ordinary} ordinary and {t.adversarial} adversarial runs "
        f"({len(IDENTITIES)} identities); agree {t.agree}, leaks {len(t.leaks)}, "
        f"wrong {len(t.wrong)}, false refusals {t.refusals}, "
        f"adversarial refused {t.expected_refusals}"
    )
    for line in t.broken + t.leaks + t.wrong + t.refused:
        print("  ", line)
    assert t.broken == []
    assert t.leaks == []
    assert t.wrong == []
    assert t.refusals * 100 <= t.ordinary, t.refused
