"""The demo's synthetic sensitive data set: people, cases, officers, internal notes.

Rows are generated inside PostgreSQL with `generate_series`, each column a
pure function of the row id (through the built-in `hashint8`), so the data
is the same on every run and loads in seconds without shipping a file.
`scale=1.0` is about 250,000 rows in all; tests load a small fraction.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

REGIONS = ("north", "south", "east", "west")
# Four cities per region, in REGIONS order, so a person's city fits their region.
CITIES = (
    ("Aberdeen", "Inverness", "Dundee", "Perth"),
    ("Brighton", "Exeter", "Plymouth", "Southampton"),
    ("Norwich", "Ipswich", "Cambridge", "Colchester"),
    ("Bristol", "Cardiff", "Swansea", "Gloucester"),
)
# Split from one string to keep the lists short on screen.
FIRST = (  # noqa: SIM905
    "Ada Alan Amara Ben Carla Chen Dara Dev Elena Emil Fatima Finn Grace Hugo Ines Ivan Jade "
    "Jonas Kai Kira Leo Lena Maya Milo Nadia Noah Olga Omar Priya Paul Quinn Rosa Ravi Sara "
    "Sven Tara Theo Uma Victor Wen Yara Zoe"
).split()
LAST = (  # noqa: SIM905
    "Adams Baker Chowdhury Davies Evans Fischer Garcia Hughes Ito Jensen Khan Lopez Murphy "
    "Novak Okafor Patel Quinn Rossi Smith Tanaka Usman Varga Walsh Xu Young Zielinski"
).split()
DOMAINS = ("example.com", "mail.example.org", "post.example.net")
STATUSES = ("open", "open", "pending", "closed", "closed", "closed", "escalated")
CATEGORIES = ("fraud", "theft", "assault", "cyber", "traffic", "welfare", "burglary")
# Free-text notes quote personal data, as real case notes do: that is why
# analysts must not read them (rules/30-cases.yaml).
NOTES = (
    "Subject called from {phone} to report the incident.",
    "Interviewed {name} at home; follow-up visit booked.",
    "Witness statement taken; subject's SSN {ssn} confirmed with registry.",
    "Case reviewed, no further action. Contact: {email}.",
    "Referred to welfare team; {name} requested a call back.",
    "Evidence logged under seal; awaiting lab results.",
)


# Canary people (rules/50-subjects.yaml, `canaries:`): decoy register entries with
# ids far past the generated ones, the SSA's advertising SSNs and no cases, so
# nobody has a reason to look them up. Their regions put one in each analyst's view.
CANARY_PEOPLE = (
    (900001, "Dana Whitlock", "987-65-4320", "1971-03-14", "dana.whitlock@mail.example.org",
     "+1-555-010-4320", "north", "Inverness", "IV2 4QL"),
    (900002, "Marcus Ellery", "987-65-4321", "1984-11-02", "marcus.ellery@post.example.net",
     "+1-555-010-4321", "south", "Exeter", "EX4 6PX"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Sizes:
    """Row counts for one scale; `people` counts the generated people, not the canaries."""

    people: int
    officers: int
    cases: int
    audit_notes: int
    canaries: int = len(CANARY_PEOPLE)

    @property
    def total(self) -> int:
        return self.people + self.canaries + self.officers + self.cases + self.audit_notes


def sizes(scale: float) -> Sizes:
    """Row counts for `scale` (1.0 = 100k people, 150k cases)."""
    if scale <= 0:
        raise ValueError("scale must be positive")
    people = max(200, round(100_000 * scale))
    return Sizes(
        people=people,
        officers=max(8, round(400 * scale) // 4 * 4),  # a multiple of 4: same count per region
        cases=max(300, round(150_000 * scale)),
        audit_notes=max(20, round(2_000 * scale)),
    )


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _arr(values: Sequence[str]) -> str:
    return "(ARRAY[" + ",".join(_lit(v) for v in values) + "]::text[])"


def _h(expr: str, salt: int) -> str:
    """A deterministic non-negative pseudo-random bigint from an integer expression."""
    return f"(hashint8(({expr})::bigint * 64 + {salt})::bigint + 2147483648)"


def _pick(values: Sequence[str], expr: str, salt: int) -> str:
    return f"{_arr(values)}[1 + {_h(expr, salt)} % {len(values)}]"


def _digits(expr: str, salt: int, width: int, low: int = 0) -> str:
    span = 10**width - low
    return f"lpad(({low} + {_h(expr, salt)} % {span})::text, {width}, '0')"


def _letter(expr: str, salt: int) -> str:
    letters = "ABDEFGHJLNPRSTUWXYZ"
    return f"substr('{letters}', 1 + ({_h(expr, salt)} % {len(letters)})::int, 1)"


def _region_idx(expr: str) -> str:
    """The 0-based region index of person `expr`; cases recompute it without a join."""
    return f"({_h(expr, 3)} % 4)"


SCHEMA = """
DROP SCHEMA IF EXISTS internal CASCADE;
DROP TABLE IF EXISTS public.cases, public.people, public.officers CASCADE;
DROP FUNCTION IF EXISTS public.age_band(date);
CREATE TABLE public.people (
    id        bigint NOT NULL,
    full_name text   NOT NULL,
    ssn       text   NOT NULL,
    dob       date   NOT NULL,
    email     text   NOT NULL,
    phone     text   NOT NULL,
    region    text   NOT NULL,
    city      text   NOT NULL,
    postcode  text   NOT NULL
);
CREATE TABLE public.officers (
    id     integer NOT NULL,
    name   text    NOT NULL,
    region text    NOT NULL,
    badge  text    NOT NULL
);
CREATE TABLE public.cases (
    id         bigint  NOT NULL,
    person_id  bigint  NOT NULL,
    officer_id integer NOT NULL,
    region     text    NOT NULL,
    opened     date    NOT NULL,
    status     text    NOT NULL,
    category   text    NOT NULL,
    notes      text    NOT NULL
);
CREATE SCHEMA internal;
CREATE TABLE internal.audit_notes (
    id      integer     NOT NULL,
    case_id bigint      NOT NULL,
    author  text        NOT NULL,
    note    text        NOT NULL,
    created timestamptz NOT NULL
);
-- A user-defined function, so the example rules can show a `functions:` entry.
CREATE FUNCTION public.age_band(d date) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE
        WHEN d > current_date - interval '30 years' THEN 'under 30'
        WHEN d > current_date - interval '50 years' THEN '30-49'
        ELSE '50+'
    END;
"""

FINISH = """
ALTER TABLE public.officers ADD PRIMARY KEY (id);
ALTER TABLE public.cases ADD PRIMARY KEY (id);
ALTER TABLE internal.audit_notes ADD PRIMARY KEY (id);
CREATE INDEX people_region ON public.people (region);
CREATE INDEX cases_region ON public.cases (region);
CREATE INDEX cases_person ON public.cases (person_id);
ANALYZE public.people, public.officers, public.cases, internal.audit_notes;
"""


def _people_sql() -> str:
    first = _pick(FIRST, "i", 1)
    last = _pick(LAST, "i", 2)
    cities = [c for group in CITIES for c in group]
    city = f"{_arr(cities)}[1 + {_region_idx('i')} * 4 + {_h('i', 5)} % 4]"
    return f"""
INSERT INTO public.people
SELECT i, n.first || ' ' || n.last,
       {_digits("i", 6, 3, 100)} || '-' || {_digits("i", 7, 2, 1)}
           || '-' || {_digits("i", 8, 4, 1)},
       date '1940-01-01' + ({_h("i", 9)} % 23000)::int,
       lower(n.first || '.' || n.last) || i || '@' || {_pick(DOMAINS, "i", 10)},
       '+1-555-' || {_digits("i", 11, 3)} || '-' || {_digits("i", 12, 4)},
       {_arr(REGIONS)}[1 + {_region_idx("i")}],
       {city},
       {_letter("i", 15)} || {_letter("i", 16)} || {_digits("i", 13, 1, 1)} || ' '
           || {_digits("i", 14, 1)} || {_letter("i", 17)} || {_letter("i", 18)}
FROM generate_series($1::bigint, $2::bigint) AS i,
     LATERAL (SELECT {first} AS first, {last} AS last) AS n
"""


def _officers_sql() -> str:
    return f"""
INSERT INTO public.officers
SELECT i, {_pick(FIRST, "i + 100000000", 1)} || ' ' || {_pick(LAST, "i + 100000000", 2)},
       {_arr(REGIONS)}[1 + (i - 1) % 4],
       'B-' || lpad(i::text, 5, '0')
FROM generate_series($1::int, $2::int) AS i
"""


def _cases_sql(s: Sizes) -> str:
    pid = f"(1 + {_h('i', 20)} % {s.people})"
    per_region = s.officers // 4
    notes = _pick(NOTES, "i", 21)
    fields = (("phone", "p.phone"), ("name", "p.full_name"), ("ssn", "p.ssn"), ("email", "p.email"))
    for key, col in fields:
        notes = f"replace({notes}, '{{{key}}}', {col})"
    return f"""
INSERT INTO public.cases
SELECT i, p.id,
       1 + {_region_idx("p.id")} + 4 * ({_h("i", 22)} % {per_region}),
       p.region,
       date '2018-01-01' + ({_h("i", 23)} % 2900)::int,
       {_pick(STATUSES, "i", 24)},
       {_pick(CATEGORIES, "i", 25)},
       {notes}
FROM generate_series($1::bigint, $2::bigint) AS i
JOIN public.people AS p ON p.id = {pid}
"""


def _audit_notes_sql(s: Sizes) -> str:
    return f"""
INSERT INTO internal.audit_notes
SELECT i, 1 + {_h("i", 30)} % {s.cases},
       'officer ' || 'B-' || lpad((1 + {_h("i", 31)} % {s.officers})::text, 5, '0'),
       {_pick(("Access reviewed.", "Disclosure logged.", "Record corrected on request."), "i", 32)},
       timestamptz '2024-01-01 00:00:00+00' + ({_h("i", 33)} % 31536000) * interval '1 second'
FROM generate_series($1::int, $2::int) AS i
"""


def schema_catalog() -> dict[str, Any]:
    """The demo schema in the catalog-file format (`oversight test --schema`), from SCHEMA.

    rules/demo-schema.json is this, written out, so the rule tests run in CI
    without a database; a unit test keeps the two equal.
    """
    relations = []
    for name, body in re.findall(r"CREATE TABLE (\S+) \((.*?)\n\);", SCHEMA, re.S):
        columns = [line.split()[0] for line in body.strip().splitlines()]
        relations.append({"name": name, "kind": "table", "columns": columns})
    functions = re.findall(r"CREATE FUNCTION (\S+)\(", SCHEMA)
    return {"relations": relations, "functions": functions}


Progress = Callable[[str, int, int], None]
"""Called as progress(table, rows_done, rows_total) after each chunk."""


async def load(conn: Any, scale: float, progress: Progress | None = None) -> Sizes:
    """(Re)create the demo schema on an asyncpg connection and fill it.

    Loads in chunks so a progress line can move; the whole load is one
    transaction, so an interrupted load leaves nothing half-made.
    """
    s = sizes(scale)
    plan = [
        ("public.people", _people_sql(), s.people),
        ("public.officers", _officers_sql(), s.officers),
        ("public.cases", _cases_sql(s), s.cases),
        ("internal.audit_notes", _audit_notes_sql(s), s.audit_notes),
    ]
    async with conn.transaction():
        await conn.execute(SCHEMA)
        for table, sql, total in plan:
            chunk = max(1000, total // 10)
            for start in range(1, total + 1, chunk):
                end = min(total, start + chunk - 1)
                await conn.execute(sql, start, end)
                if progress is not None:
                    progress(table, end, total)
            if table == "public.people":  # cases look people up by id, row by row
                await conn.executemany(_CANARIES_SQL, [_canary(p) for p in CANARY_PEOPLE])
                await conn.execute("ALTER TABLE public.people ADD PRIMARY KEY (id)")
        await conn.execute(FINISH)
        await conn.execute(f"COMMENT ON TABLE public.people IS {_lit(marker(scale))}")
    return s


_CANARIES_SQL = "INSERT INTO public.people VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"


def _canary(person: tuple[Any, ...]) -> tuple[Any, ...]:
    return (*person[:3], date.fromisoformat(person[3]), *person[4:])


def marker(scale: float) -> str:
    """The table comment that tells a kept data directory what it holds (v2: canaries)."""
    return f"oversight demo data v2, scale={scale:g}"


async def loaded_marker(conn: Any) -> str | None:
    """The marker of an already loaded data set, or None."""
    row = await conn.fetchval("SELECT obj_description(to_regclass('public.people'), 'pg_class')")
    return str(row) if row is not None else None
