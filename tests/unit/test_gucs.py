"""SessionSettings follows PostgreSQL's SET semantics, transactions included (issue #12).

Each case is a script of events as the session sees them: a statement's SQL
with the CommandComplete tag it got ("sql -> TAG"), an error ("!error"), and
ReadyForQuery ("Z:I", "Z:T", "Z:E"). The statement's Change is read from its
SQL by the engine's own parser (proxy/policy/changes.py). The case gives the
search_path the server has at the end, None when the proxy cannot know it.
The session started with search_path `public` (the role's setting), so RESET
goes back there, not to PostgreSQL's built-in default.
"""

from __future__ import annotations

import pytest

from proxy.gucs import Change, SessionSettings, parse_search_path, set_config_change
from proxy.policy.changes import statement_change
from proxy.policy.kinds import head
from proxy.policy.split import split

START = ("public",)
X = ("x",)
Y = ("y",)


def change_of(sql: str) -> Change | None:
    (piece,) = split(sql)
    h = head(piece)
    if h.parse:  # set_config() in a SELECT: read as the engine does
        return _select_change(sql)
    return statement_change(h, piece)


def _select_change(sql: str) -> Change | None:
    """set_config's arguments as the analyzer hands them over: literal text, or None."""
    inner = sql[sql.index("(") + 1 : sql.rindex(")")]
    args = [a.strip() for a in inner.split(",", 2)]
    return set_config_change([_arg(a) for a in args])


def _arg(a: str) -> str | None:
    return a[1:-1] if a.startswith("'") else a if a in ("true", "false") else None


def run(script: list[str]) -> tuple[str, ...] | None:
    s = SessionSettings.start({"search_path": START})
    for step in script:
        if step == "!error":
            s.failed()
        elif step == "!unseen":
            s.unseen()
        elif step.startswith("Z:"):
            s.ready(step[2:].encode())
        else:
            sql, tag = step.split(" -> ")
            s.completed(tag, change_of(sql))
    return s.value("search_path")


CASES: dict[str, tuple[list[str], tuple[str, ...] | None]] = {
    "set outside a transaction": (["set search_path = x -> SET", "Z:I"], X),
    "set in a committed block": (
        ["begin -> BEGIN", "Z:T", "set search_path = x -> SET", "Z:T", "commit -> COMMIT", "Z:I"],
        X,
    ),
    "set in a rolled-back block": (
        ["begin -> BEGIN", "set search_path = x -> SET", "rollback -> ROLLBACK", "Z:I"],
        START,
    ),
    "set in a block, value while still open": (
        ["begin -> BEGIN", "Z:T", "set search_path = x -> SET", "Z:T"],
        X,
    ),
    "abort is rollback": (
        ["begin -> BEGIN", "set search_path = x -> SET", "abort -> ROLLBACK", "Z:I"],
        START,
    ),
    "set local ends with its transaction": (
        ["begin -> BEGIN", "set local search_path = x -> SET", "commit -> COMMIT", "Z:I"],
        START,
    ),
    "set local in force inside the block": (
        ["begin -> BEGIN", "Z:T", "set local search_path = x -> SET", "Z:T"],
        X,
    ),
    "set local outside a block has no effect": (
        ["set local search_path = x -> SET", "Z:I"],
        START,
    ),
    "set then set local: commit keeps the set": (
        [
            "begin -> BEGIN",
            "set search_path = x -> SET",
            "set local search_path = y -> SET",
            "commit -> COMMIT",
            "Z:I",
        ],
        X,
    ),
    "set local then set: commit keeps the later set": (
        [
            "begin -> BEGIN",
            "set local search_path = y -> SET",
            "set search_path = x -> SET",
            "commit -> COMMIT",
            "Z:I",
        ],
        X,
    ),
    "rollback to savepoint undoes a set after it": (
        [
            "begin -> BEGIN",
            "savepoint a -> SAVEPOINT",
            "set search_path = x -> SET",
            "rollback to savepoint a -> ROLLBACK",
            "Z:T",
        ],
        START,
    ),
    "rollback to keeps a set before the savepoint": (
        [
            "begin -> BEGIN",
            "set search_path = y -> SET",
            "savepoint a -> SAVEPOINT",
            "set search_path = x -> SET",
            "rollback to a -> ROLLBACK",
            "commit -> COMMIT",
            "Z:I",
        ],
        Y,
    ),
    "rollback to an outer savepoint drops inner ones": (
        [
            "begin -> BEGIN",
            "savepoint a -> SAVEPOINT",
            "set search_path = y -> SET",
            "savepoint b -> SAVEPOINT",
            "set search_path = x -> SET",
            "rollback to savepoint a -> ROLLBACK",
            "commit -> COMMIT",
            "Z:I",
        ],
        START,
    ),
    "rollback to a savepoint named savepoint": (
        [
            "begin -> BEGIN",
            "savepoint savepoint -> SAVEPOINT",
            "set search_path = x -> SET",
            "rollback to savepoint -> ROLLBACK",
            "Z:T",
        ],
        START,
    ),
    "release keeps the set, the final rollback undoes it": (
        [
            "begin -> BEGIN",
            "savepoint a -> SAVEPOINT",
            "set search_path = x -> SET",
            "release savepoint a -> RELEASE",
            "Z:T",
        ],
        X,
    ),
    "release then rollback": (
        [
            "begin -> BEGIN",
            "savepoint a -> SAVEPOINT",
            "set search_path = x -> SET",
            "release a -> RELEASE",
            "rollback -> ROLLBACK",
            "Z:I",
        ],
        START,
    ),
    "rollback to recovers a failed block": (
        [
            "begin -> BEGIN",
            "savepoint a -> SAVEPOINT",
            "set search_path = x -> SET",
            "!error",
            "Z:E",
            "rollback to a -> ROLLBACK",
            "Z:T",
            "set search_path = y -> SET",
            "commit -> COMMIT",
            "Z:I",
        ],
        Y,
    ),
    "commit of a failed block is a rollback": (
        [
            "begin -> BEGIN",
            "set search_path = x -> SET",
            "Z:T",
            "!error",
            "Z:E",
            "commit -> ROLLBACK",
            "Z:I",
        ],
        START,
    ),
    "implicit transaction: a later error undoes the set": (
        ["set search_path = x -> SET", "!error", "Z:I"],
        START,
    ),
    "implicit transaction: begin inside the string takes the set along": (
        ["set search_path = x -> SET", "begin -> BEGIN", "!error", "Z:E", "rollback -> ROLLBACK"],
        START,
    ),
    "implicit transaction: commit in the string keeps what came before": (
        [
            "set search_path = x -> SET",
            "commit -> COMMIT",
            "set search_path = y -> SET",
            "!error",
            "Z:I",
        ],
        X,
    ),
    "extended batch: error before Sync undoes the set": (
        ["set search_path = x -> SET", "!error", "Z:I"],
        START,
    ),
    "reset goes back to the startup value": (
        ["set search_path = x -> SET", "Z:I", "reset search_path -> RESET", "Z:I"],
        START,
    ),
    "set to default is reset": (
        ["set search_path = x -> SET", "Z:I", "set search_path to default -> SET", "Z:I"],
        START,
    ),
    "reset in a rolled-back block": (
        [
            "set search_path = x -> SET",
            "Z:I",
            "begin -> BEGIN",
            "reset search_path -> RESET",
            "rollback -> ROLLBACK",
            "Z:I",
        ],
        X,
    ),
    "reset all": (["set search_path = x -> SET", "Z:I", "reset all -> RESET", "Z:I"], START),
    "discard all": (
        ["set search_path = x -> SET", "Z:I", "discard all -> DISCARD ALL", "Z:I"],
        START,
    ),
    "set of another setting changes nothing": (
        ["set search_path = x -> SET", "Z:I", "set work_mem = '4MB' -> SET", "Z:I"],
        X,
    ),
    "set_config session": (["select set_config('search_path', 'x', false) -> SELECT 1", "Z:I"], X),
    "set_config local": (
        [
            "begin -> BEGIN",
            "select set_config('search_path', 'x', true) -> SELECT 1",
            "commit -> COMMIT",
            "Z:I",
        ],
        START,
    ),
    "set_config rolled back": (
        [
            "begin -> BEGIN",
            "select set_config('search_path', 'x', false) -> SELECT 1",
            "rollback -> ROLLBACK",
            "Z:I",
        ],
        START,
    ),
    "set_config with a computed value is unknown": (
        ["select set_config('search_path', v, false) -> SELECT 1", "Z:I"],
        None,
    ),
    "unknown is cleared by a set": (
        [
            "select set_config('search_path', v, false) -> SELECT 1",
            "Z:I",
            "set search_path = y -> SET",
            "Z:I",
        ],
        Y,
    ),
    "rollback to a savepoint the proxy never saw is unknown": (
        ["begin -> BEGIN", "set search_path = x -> SET", "rollback to nowhere -> ROLLBACK"],
        None,
    ),
    "unseen statements: unknown while the transaction is open": (
        ["begin -> BEGIN", "Z:T", "!unseen", "Z:T"],
        None,
    ),
    "unseen statements, committed: unknown": (
        ["begin -> BEGIN", "!unseen", "commit -> COMMIT", "Z:I"],
        None,
    ),
    "unseen statements, rolled back: known again": (
        ["set search_path = x -> SET", "Z:I", "!unseen", "!error", "Z:I"],
        X,
    ),
}


@pytest.mark.parametrize("script,expected", list(CASES.values()), ids=list(CASES))
def test_transition(script: list[str], expected: tuple[str, ...] | None) -> None:
    assert run(script) == expected


@pytest.mark.parametrize(
    "sql,change",
    [
        ('set search_path = a, "B"', Change("set", "search_path", ("a", "B"))),
        ("set session search_path to a", Change("set", "search_path", ("a",))),
        ("set local search_path = a", Change("local", "search_path", ("a",))),
        ("set local search_path to default", Change("local", "search_path", None)),
        ("reset search_path", Change("set", "search_path", None)),
        ("reset all", Change("reset_all")),
        ("discard all", Change("reset_all")),
        ("discard plans", None),
        ("set work_mem = 1", None),
        ('savepoint "Sp"', Change("savepoint", "Sp")),
        ("release savepoint SP", Change("release", "sp")),
        ("rollback work to savepoint sp", Change("rollback_to", "sp")),
        ("rollback", None),
        ("commit", None),
    ],
)
def test_change_read_from_the_statement(sql: str, change: Change | None) -> None:
    assert change_of(sql) == change


def test_set_config_of_a_computed_setting_name_is_unknown_for_every_setting() -> None:
    s = SessionSettings.start({"search_path": START})
    s.completed("SELECT 1", set_config_change([None, "x", "false"]))
    assert s.value("search_path") is None
    assert set_config_change(["work_mem", "1", "false"]) is None
    assert set_config_change(["search_path", "x", None]) == Change("unknown", "search_path")


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('"$user", public', ["$user", "public"]),
        ("Sandbox ,pg_catalog", ["sandbox", "pg_catalog"]),
        ('a, "Odd, Name", "q""x"', ["a", "Odd, Name", 'q"x']),  # commas inside quotes stay
        ('"Mixed Case"', ["Mixed Case"]),
        ('"$user" , public ,  "x y" ', ["$user", "public", "x y"]),
        ("", []),
    ],
)
def test_search_path_is_split_as_the_server_splits_it(text: str, names: list[str]) -> None:
    assert parse_search_path(text) == names
    assert set_config_change(("search_path", text, "false")) == Change(
        "set", "search_path", tuple(names)
    )
