"""`oversight tail`: readable lines, filters, raw JSON, and following a file across rotation."""

from __future__ import annotations

import asyncio
import io
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from proxy.audit import AuditConfig, AuditLog, cmd_tail, format_record
from proxy.audit.record import format_ts
from proxy.audit.tail import parse_since

NOW = datetime.now(UTC)


def rec(user: str, decision: str, sql: str, *, age: timedelta = timedelta(0)) -> dict[str, object]:
    return {
        "ts": format_ts(NOW - age),
        "event": "statement",
        "session": "s1",
        "user": user,
        "sql": sql,
        "decision": decision,
        "rules": ["no-case-notes"] if decision == "block" else [],
        "rows": 0 if decision == "block" else 3,
    }


async def write_all(path: Path, items: list[dict[str, object]], **kw: object) -> None:
    log = AuditLog(AuditConfig(path=str(path), **kw))  # type: ignore[arg-type]
    await log.start()
    for item in items:
        await log.write(item)
    await log.close()


def run_tail(path: Path, **kw: object) -> tuple[int, str]:
    out = io.StringIO()
    args: dict[str, object] = {
        "blocked": False,
        "user": None,
        "since": None,
        "follow": False,
        "json_out": False,
        "color": False,
    }
    args.update(kw)
    code = cmd_tail(str(path), out=out, **args)  # type: ignore[arg-type]
    return code, out.getvalue()


def test_format_statement_line() -> None:
    line = format_record(
        {
            "ts": "2026-11-28T02:31:07.123456Z",
            "event": "statement",
            "user": "alice",
            "decision": "block",
            "rules": ["no-case-notes", "other"],
            "sql": "SELECT notes\n  FROM cases WHERE id = ?",
            "rows": 0,
        }
    )
    assert line.startswith("2026-11-28 02:31:07 alice ")
    assert "block" in line and "no-case-notes" in line and "other" not in line
    assert "SELECT notes FROM cases WHERE id = ?" in line
    assert line.endswith("rows=0")
    assert "\x1b[" not in line


def test_format_colour_and_long_sql() -> None:
    record = rec("bob", "block", "SELECT " + "c, " * 100 + "d FROM t")
    line = format_record(record, color=True)
    assert "\x1b[1;31mblock" in line
    assert "…" in line and len(line) < 200
    assert "\x1b[32mallow" in format_record(rec("bob", "allow", "SELECT 1"), color=True)


def test_format_session_events() -> None:
    line = format_record(
        {
            "ts": "2026-11-28T02:31:07.123456Z",
            "event": "disconnect",
            "user": "carol",
            "client": "10.0.0.5:51000",
            "application": "psql",
            "database": "wh",
            "statements": 12,
            "rows": 3400,
        }
    )
    assert "disconnect" in line and "10.0.0.5:51000" in line
    assert "app=psql" in line and "statements=12" in line and "rows=3400" in line


def test_format_canary_event_names_the_canary_and_how() -> None:
    line = format_record(
        {
            "ts": "2026-11-28T02:31:07.123456Z",
            "event": "canary",
            "user": "carol",
            "client": "10.0.0.5:51000",
            "canary": "decoy-people",
            "how": "looked_up",
        }
    )
    assert "canary" in line and "decoy-people" in line and "how=looked_up" in line


def test_parse_since() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert parse_since("10m", now) == now - timedelta(minutes=10)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("2026-11-28T01:00:00Z") == datetime(2026, 11, 28, 1, tzinfo=UTC)
    assert parse_since("2026-11-28T03:00:00+02:00") == datetime(2026, 11, 28, 1, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_since("yesterday")


async def test_filters_and_json(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    items = [
        rec("alice", "allow", "SELECT 1", age=timedelta(hours=3)),
        rec("alice", "block", "SELECT notes FROM cases", age=timedelta(hours=1)),
        rec("bob", "allow", "SELECT 2"),
        rec("bob", "cutoff", "SELECT * FROM big"),
    ]
    await write_all(path, items)
    code, out = run_tail(path)
    assert code == 0 and len(out.splitlines()) == 4
    _, out = run_tail(path, blocked=True)
    assert [ln.split()[3] for ln in out.splitlines()] == ["block", "cutoff"]
    _, out = run_tail(path, user="bob")
    assert all(" bob " in ln for ln in out.splitlines()) and len(out.splitlines()) == 2
    _, out = run_tail(path, since="2h")
    assert len(out.splitlines()) == 3
    _, out = run_tail(path, json_out=True, user="alice", blocked=True)
    assert out.encode() == path.read_bytes().splitlines(keepends=True)[1]
    assert orjson.loads(out)["decision"] == "block"


async def test_errors(tmp_path: Path) -> None:
    assert run_tail(tmp_path / "missing.jsonl")[0] == 1
    (tmp_path / "a.jsonl").write_bytes(b"")
    assert run_tail(tmp_path / "a.jsonl", since="soon")[0] == 2


async def test_follow_across_rotation_and_truncation(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    await write_all(path, [rec("old", "allow", f"SELECT {i}") for i in range(15)])
    out = io.StringIO()
    stop = threading.Event()
    kwargs = {"blocked": False, "user": None, "since": None, "json_out": True}
    thread = threading.Thread(
        target=cmd_tail,
        args=(str(path),),
        kwargs={**kwargs, "follow": True, "out": out, "poll": 0.01, "stop": stop.is_set},
    )
    thread.start()

    async def wait_for(n: int) -> list[dict[str, object]]:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            lines = out.getvalue().splitlines()
            if len(lines) >= n:
                return [orjson.loads(ln) for ln in lines]
            await asyncio.sleep(0.01)
        raise AssertionError(f"tail printed {len(out.getvalue().splitlines())} lines, not {n}")

    try:
        got = await wait_for(10)  # like tail -f: the last 10 existing records first
        assert [g["sql"] for g in got] == [f"SELECT {i}" for i in range(5, 15)]
        # Writes with a tiny rotate size: nearly every record lands in a new file.
        await write_all(
            path, [rec("new", "allow", f"SELECT {i}") for i in range(20)], rotate_bytes=800
        )
        got = await wait_for(30)
        assert [g["sql"] for g in got[10:]] == [f"SELECT {i}" for i in range(20)]
        # Truncated in place and written again: read from the start.
        path.write_bytes(b"")
        await asyncio.sleep(0.1)
        await write_all(path, [rec("again", "block", "SELECT x")])
        got = await wait_for(31)
        assert got[30]["user"] == "again"
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


async def test_oversight_commands_reach_tail_and_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from proxy.cli import main

    path = tmp_path / "a.jsonl"
    await write_all(
        path, [rec("alice", "block", "SELECT 1"), rec("bob", "allow", "SELECT 2")], key=b"k"
    )
    monkeypatch.setenv("OVERSIGHT_AUDIT_KEY", "k")
    capsys.readouterr()
    assert main(["audit", "verify", str(path)]) == 0
    assert "ok: 2 records in 1 files, chain intact" in capsys.readouterr().out
    assert main(["tail", str(path), "--blocked"]) == 0
    out = capsys.readouterr().out
    assert " alice " in out and " bob " not in out and "\x1b[" not in out  # not a tty
    monkeypatch.setenv("OVERSIGHT_AUDIT_KEY", "other")
    assert main(["audit", "verify", str(path)]) == 1


async def test_stdout_copy_goes_to_the_process_stdout(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    log = AuditLog(AuditConfig(path="", stdout=True))
    await log.start()
    await log.write(rec("carol", "allow", "SELECT 3"))
    await log.close()
    out = capsysbinary.readouterr().out
    assert orjson.loads(out)["user"] == "carol" and out.endswith(b"\n")


def test_follow_drops_a_batch_cut_back_without_rereading(tmp_path: Path) -> None:
    from proxy.audit.tail import follow_lines

    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"n":1}\n{"n":2}\n{"n":3')  # the writer is mid-batch
    whole = len(b'{"n":1}\n{"n":2}\n')
    polls = 0

    def writer_meanwhile() -> bool:
        nonlocal polls
        polls += 1
        if polls == 1:
            os.truncate(path, whole)  # the batch failed: cut back to the last whole line
        elif polls == 2:
            with open(path, "ab") as f:
                f.write(b'{"n":4}\n')
        return polls > 100

    got = [line for line in follow_lines(str(path), poll=0.001, stop=writer_meanwhile) if line]
    assert got == [b'{"n":1}', b'{"n":2}', b'{"n":4}']  # nothing read twice
