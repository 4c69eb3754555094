"""SQLAlchemy 2 and pandas through a policy-active proxy (`compat_proxy`).

Each test runs once with the psycopg 3 dialect (postgresql+psycopg) and once
with pg8000 (postgresql+pg8000). On connect the dialects query version(),
current_schema(), SHOW settings and type catalogs; reflection reads
pg_catalog with its helper functions, as BI tools do. As the analyst, `ssn`
must come back masked through pandas and Core alike, a statement reading
`notes` raises a DBAPIError whose `orig` carries SQLSTATE 42501, and the
engine's next query works on the same pooled connection.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import COMPAT_PEOPLE, COMPAT_USER, MASKED
from sqlalchemy import exc

EXPECTED = [(i, name, MASKED) for i, name, _ssn, _notes in COMPAT_PEOPLE]
BLOCKED = "oversight: blocked by compat-people"
IDS = {"psycopg": range(5000, 5050), "pg8000": range(5050, 5100)}  # rows in compat.scratch
PEOPLE = "SELECT id, name, ssn FROM compat.people ORDER BY id"


def _dbapi_error(e: Exception) -> exc.DBAPIError:
    """pandas 3 wraps SQLAlchemy's error in its own DatabaseError (raised from it)."""
    if isinstance(e, pd.errors.DatabaseError):
        assert isinstance(e.__cause__, exc.DBAPIError), repr(e.__cause__)
        return e.__cause__
    assert isinstance(e, exc.DBAPIError), repr(e)
    return e


def _sqlstate(e: exc.DBAPIError) -> tuple[str | None, bool]:
    orig: Any = e.orig
    if hasattr(orig, "sqlstate"):  # psycopg
        return orig.sqlstate, (orig.diag.message_primary or "").startswith(BLOCKED)
    fields = orig.args[0]  # pg8000
    return fields["C"], fields["M"].startswith(BLOCKED)


@pytest.fixture(params=["psycopg", "pg8000"])
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def url(compat_proxy: Any, driver: str) -> str:
    dsn: str = compat_proxy.dsn(user=COMPAT_USER)
    return dsn.replace("postgresql://", f"postgresql+{driver}://", 1)


def _engine(url: str) -> sa.Engine:
    # One pooled connection: "the next query" runs on the connection that saw the refusal.
    return sa.create_engine(url, pool_size=1, max_overflow=0, pool_pre_ping=True)


def _with_engine(url: str, fn: Any, *args: Any) -> Any:
    engine = _engine(url)
    try:
        return fn(engine, *args)
    finally:
        engine.dispose()


def _pandas(engine: sa.Engine) -> dict[str, Any]:
    out: dict[str, Any] = {}
    df = pd.read_sql(PEOPLE, engine)  # a plain string query
    out["columns"] = list(df.columns)
    out["rows"] = list(df.itertuples(index=False, name=None))
    df = pd.read_sql(
        sa.text("SELECT id, ssn FROM compat.people WHERE id > :low ORDER BY id"),
        engine,
        params={"low": 5},
    )
    out["text"] = list(df.itertuples(index=False, name=None))
    df = pd.read_sql_table("people", engine, schema="compat", columns=["id", "name", "ssn"])
    out["table"] = sorted(df.itertuples(index=False, name=None))
    out["ssn_values"] = set(df["ssn"])
    out["probe"] = pd.read_sql(
        sa.text("SELECT count(*) AS n FROM compat.people WHERE ssn = :s"),
        engine,
        params={"s": COMPAT_PEOPLE[0][2]},
    )["n"].tolist()
    return out


async def test_pandas_read_sql(url: str, run_sync: Any) -> None:
    out = await run_sync(_with_engine, url, _pandas)
    assert out == {
        "columns": ["id", "name", "ssn"],
        "rows": EXPECTED,
        "text": [(i, MASKED) for i in range(6, 11)],
        "table": EXPECTED,
        "ssn_values": {MASKED},
        "probe": [0],
    }


def _denied(engine: sa.Engine) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with engine.connect() as conn:
        out["pid"] = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    refused = []
    for query in (
        sa.text("SELECT id, notes FROM compat.people"),
        sa.text("SELECT * FROM compat.people WHERE id = :id").bindparams(id=1),
        "SELECT notes FROM compat.people",
    ):
        try:
            pd.read_sql(query, engine)
            refused.append(None)
        except (exc.DBAPIError, pd.errors.DatabaseError) as e:
            err = _dbapi_error(e)
            refused.append((type(err).__name__, *_sqlstate(err)))
        # The engine's next query works, on the same (only) pooled connection.
        with engine.connect() as conn:
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
            ssn = conn.execute(sa.text("SELECT ssn FROM compat.people WHERE id = 1")).scalar()
        refused.append((pid == out["pid"], ssn))
    out["refused"] = refused
    # Inside a transaction (engine.begin): rolled back by SQLAlchemy, then the next one works.
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT count(*) FROM compat.people"))
            conn.execute(sa.text("SELECT max(notes) FROM compat.people"))
    except exc.DBAPIError as e:
        out["in_tx"] = _sqlstate(e)
    with engine.begin() as conn:
        out["after_tx"] = conn.execute(
            sa.text("SELECT name, ssn FROM compat.people WHERE id = :id"), {"id": 9}
        ).all()
    return out


async def test_denied_column_engine_goes_on(url: str, run_sync: Any) -> None:
    out = await run_sync(_with_engine, url, _denied)
    # psycopg's InsufficientPrivilege and pg8000's 42xxx errors are both DB-API ProgrammingErrors.
    assert out["refused"] == [("ProgrammingError", "42501", True), (True, MASKED)] * 3
    assert out["in_tx"] == ("42501", True)
    assert out["after_tx"] == [("person 9", MASKED)]


def _reflection(engine: sa.Engine) -> dict[str, Any]:
    out: dict[str, Any] = {}
    insp = sa.inspect(engine)
    out["schemas"] = "compat" in insp.get_schema_names()
    out["tables"] = sorted(insp.get_table_names(schema="compat"))
    out["columns"] = [
        (c["name"], str(c["type"]), c["nullable"])
        for c in insp.get_columns("people", schema="compat")
    ]
    out["pk"] = insp.get_pk_constraint("people", schema="compat")["constrained_columns"]
    out["has_table"] = insp.has_table("people", schema="compat")
    # A reflected Table used with Core: select the permitted columns.
    people = sa.Table("people", sa.MetaData(), schema="compat", autoload_with=engine)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(people.c.id, people.c.name, people.c.ssn).order_by(people.c.id)
        ).all()
        out["core"] = [tuple(r) for r in rows]
        try:
            conn.execute(sa.select(people)).all()  # every column, notes included
        except exc.DBAPIError as e:
            out["core_all"] = _sqlstate(e)
        conn.rollback()
        out["after"] = conn.execute(sa.select(sa.func.count()).select_from(people)).scalar()
    return out


async def test_reflection(url: str, run_sync: Any) -> None:
    out = await run_sync(_with_engine, url, _reflection)
    assert out == {
        "schemas": True,
        "tables": ["people", "scratch"],
        "columns": [
            ("id", "INTEGER", False),
            ("name", "TEXT", False),
            ("ssn", "TEXT", True),
            ("notes", "TEXT", True),
        ],
        "pk": ["id"],
        "has_table": True,
        "core": EXPECTED,
        "core_all": ("42501", True),
        "after": 10,
    }


def _writes(engine: sa.Engine, ids: range) -> dict[str, Any]:
    out: dict[str, Any] = {}
    scratch = sa.table("scratch", sa.column("id"), sa.column("label"), schema="compat")
    mine = scratch.c.id.between(ids[0], ids[-1])
    with engine.begin() as conn:
        conn.execute(sa.delete(scratch).where(mine))
        conn.execute(sa.insert(scratch), [{"id": i, "label": f"sa {i}"} for i in ids[:5]])
        conn.execute(sa.update(scratch).where(scratch.c.id == ids[0]).values(label="updated"))
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(scratch), [{"id": ids[10], "label": "rolled back"}])
            raise RuntimeError("abort")
    except RuntimeError:
        pass
    df = pd.DataFrame({"id": list(ids[20:23]), "label": ["df"] * 3})
    df.to_sql("scratch", engine, schema="compat", if_exists="append", index=False)
    with engine.connect() as conn:
        out["rows"] = [
            tuple(r) for r in conn.execute(sa.select(scratch).where(mine).order_by(scratch.c.id))
        ]
    with engine.begin() as conn:
        conn.execute(sa.delete(scratch).where(mine))
    return out


async def test_writes_to_scratch(url: str, driver: str, run_sync: Any) -> None:
    ids = IDS[driver]
    out = await run_sync(_with_engine, url, _writes, ids)
    assert out["rows"] == [(ids[0], "updated")] + [(i, f"sa {i}") for i in ids[1:5]] + [
        (i, "df") for i in ids[20:23]
    ]
