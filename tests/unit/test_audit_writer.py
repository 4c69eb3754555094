"""The single audit writer: ordering, group commit, rotation, recovery, and failing closed."""

from __future__ import annotations

import asyncio
import io
import os
import re
import resource
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from proxy.audit import AuditConfig, AuditLog, cmd_verify, discover, verify_files
from proxy.audit.record import GENESIS
from proxy.audit.rotate import rotated_name
from proxy.errors import AuditUnavailable

KEY = b"k"


class Clock:
    def __init__(self, when: datetime) -> None:
        self.now = when

    def __call__(self) -> datetime:
        return self.now


def stmt(i: int, session: str = "s") -> dict[str, object]:
    return {"event": "statement", "session": session, "user": "u", "sql": f"SELECT {i}", "n": i}


def records(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def test_100_concurrent_writers_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(AuditConfig(path=str(path), key=KEY))
    await log.start()
    sql = "SELECT " + "x" * 3000  # long lines make a torn or interleaved write visible

    async def session(s: int) -> None:
        for i in range(20):
            await log.write({"event": "statement", "session": f"s{s}", "seq": i, "sql": sql})
            await asyncio.sleep(0)

    await asyncio.gather(*(session(s) for s in range(100)))
    await log.close()
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.split(b"\n")[:-1]
    assert len(lines) == 2000
    seen: dict[str, list[int]] = {}
    for line in lines:
        rec = orjson.loads(line)
        assert rec["sql"] == sql
        seen.setdefault(rec["session"], []).append(rec["seq"])
    assert len(seen) == 100
    assert all(seqs == list(range(20)) for seqs in seen.values())
    assert verify_files([str(path)], KEY).ok
    assert log.batches < log.records == 2000  # group commit happened


async def test_ts_added_in_rfc3339_and_kept_when_given(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(AuditConfig(path=str(path)))
    await log.start()
    await log.write({"event": "connect", "user": "u"})
    await log.write({"event": "connect", "user": "u", "ts": "2026-01-01T00:00:00.000001Z"})
    await log.close()
    first, second = records(path)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", str(first["ts"]))
    assert second["ts"] == "2026-01-01T00:00:00.000001Z"
    assert list(first)[:3] == ["ts", "event", "user"]


async def test_close_drains_pending_records(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(AuditConfig(path=str(path)))
    await log.start()
    tasks = [asyncio.create_task(log.write(stmt(i))) for i in range(50)]
    await asyncio.sleep(0)
    await log.close()
    await asyncio.gather(*tasks)
    assert len(records(path)) == 50
    with pytest.raises(AuditUnavailable):
        await log.write(stmt(51))


async def test_rotation_by_size_carries_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(AuditConfig(path=str(path), key=KEY, rotate_bytes=1500))
    await log.start()
    for i in range(40):
        await log.write(stmt(i))
    await log.close()
    files = discover(str(path))
    assert len(files) > 3
    assert files[-1] == str(path)
    assert all(os.path.getsize(f) <= 1500 for f in files)
    assert all(re.search(r"\.jsonl\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{6}", f) for f in files[:-1])
    verdict = verify_files(files, KEY)
    assert verdict.ok and verdict.records == 40
    # A shell glob lists the live file first; verify puts it after its rotated files.
    assert cmd_verify(sorted(str(p) for p in tmp_path.glob("a.jsonl*")), KEY) == 0
    # The second file's first record continues from the first file's last.
    first_last = records(Path(files[0]))[-1]["hash"]
    assert records(Path(files[1]))[0]["prev"] == first_last
    # Dropping a middle file breaks the chain at the next one.
    broken = verify_files(files[:1] + files[2:], KEY)
    assert broken.problem is not None and broken.problem.file == files[2]
    assert broken.problem.line == 1


async def test_rotation_at_utc_midnight(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "a.jsonl"
    clock = Clock(datetime(2026, 11, 27, 23, 59, 58, tzinfo=UTC))
    log = AuditLog(AuditConfig(path=str(path), key=KEY), clock=clock)
    await log.start()
    for i in range(3):
        await log.write(stmt(i))
    clock.now += timedelta(seconds=3)
    for i in range(3, 5):
        await log.write(stmt(i))
    await log.close()
    files = discover(str(path))
    assert len(files) == 2
    assert os.path.basename(files[0]) == "a.jsonl.2026-11-28T00-00-01.000000"
    assert [r["ts"][:10] for r in records(Path(files[0]))] == ["2026-11-27"] * 3  # type: ignore[index]
    assert [r["ts"][:10] for r in records(path)] == ["2026-11-28"] * 2  # type: ignore[index]
    assert cmd_verify([str(path)], KEY, discover_rotated=True) == 0
    assert "ok: 5 records in 2 files" in capsys.readouterr().out


async def test_restart_next_day_rotates_yesterdays_file(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    clock = Clock(datetime(2026, 11, 27, 12, 0, tzinfo=UTC))
    log = AuditLog(AuditConfig(path=str(path)), clock=clock)
    await log.start()
    await log.write(stmt(0))
    await log.close()
    clock.now += timedelta(days=1)
    log = AuditLog(AuditConfig(path=str(path)), clock=clock)
    await log.start()
    await log.write(stmt(1))
    await log.close()
    files = discover(str(path))
    assert len(files) == 2
    assert verify_files(files, None).ok


async def test_restart_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    for round_ in range(3):
        log = AuditLog(AuditConfig(path=str(path), key=KEY))
        await log.start()
        await log.write(stmt(round_))
        await log.close()
    verdict = verify_files([str(path)], KEY)
    assert verdict.ok and verdict.records == 3


async def test_restart_after_rotation_takes_head_from_newest_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(AuditConfig(path=str(path), key=KEY))
    await log.start()
    await log.write(stmt(0))
    await log.close()
    rotated = rotated_name(str(path), datetime.now(UTC))
    os.rename(path, rotated)  # rotated, then stopped before anything new was written
    log = AuditLog(AuditConfig(path=str(path), key=KEY))
    await log.start()
    await log.write(stmt(1))
    await log.close()
    assert records(path)[0]["prev"] == records(Path(rotated))[-1]["hash"]
    assert verify_files(discover(str(path)), KEY).ok


async def test_outside_rotation_is_noticed_and_the_chain_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(AuditConfig(path=str(path), key=KEY))
    await log.start()
    await log.write(stmt(0))
    moved = tmp_path / "a.jsonl.1"
    os.rename(path, moved)  # logrotate without copytruncate
    await log.write(stmt(1))
    await log.write(stmt(2))
    await log.close()
    assert [r["n"] for r in records(moved)] == [0]
    assert [r["n"] for r in records(path)] == [1, 2]
    assert verify_files([str(moved), str(path)], KEY).ok


async def test_crash_mid_write_torn_tail_is_cut_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(AuditConfig(path=str(path), key=KEY))
    await log.start()
    for i in range(3):
        await log.write(stmt(i))
    await log.close()
    whole = path.read_bytes()
    with open(path, "ab") as f:
        f.write(b'{"ts":"2026-11-28T00:00:00.000000Z","event":"stat')  # the crash
    assert not verify_files([str(path)], KEY).ok
    log = AuditLog(AuditConfig(path=str(path), key=KEY))
    await log.start()
    await log.write(stmt(3))
    await log.close()
    assert path.read_bytes().startswith(whole)
    verdict = verify_files([str(path)], KEY)
    assert verdict.ok and verdict.records == 4
    torn = list(tmp_path.glob("a.torn-*.jsonl"))
    assert len(torn) == 1 and torn[0].read_bytes().endswith(b'"event":"stat')
    assert discover(str(path)) == [str(path)]  # the fragment is not part of the chain


async def test_garbage_last_line_is_moved_aside_and_flagged(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(AuditConfig(path=str(path), key=KEY))
    await log.start()
    await log.write(stmt(0))
    await log.close()
    with open(path, "ab") as f:
        f.write(b"not a record\n")
    log = AuditLog(AuditConfig(path=str(path), key=KEY))
    await log.start()
    await log.write(stmt(1))
    await log.close()
    files = discover(str(path))
    assert len(files) == 2
    assert records(path)[0]["prev"] == GENESIS
    verdict = verify_files(files, KEY)
    assert verdict.problem is not None and verdict.problem.file == files[0]
    assert verdict.problem.line == 2


async def test_batch_cut_short_is_truncated_back(tmp_path: Path) -> None:
    # A file size limit makes write(2) stop part way, like a disk filling up mid-batch.
    path = tmp_path / "a.jsonl"
    log = AuditLog(AuditConfig(path=str(path), key=KEY))
    await log.start()
    await log.write(stmt(0))
    size = path.stat().st_size
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, hard))
    try:
        with pytest.raises(AuditUnavailable, match="too large"):
            await log.write({**stmt(1), "sql": "SELECT " + "x" * 1000})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    assert path.stat().st_size == size  # no half line left behind
    await log.write(stmt(2))
    await log.close()
    assert [r["n"] for r in records(path)] == [0, 2]
    assert verify_files([str(path)], KEY).ok


async def test_disk_full_refuses_or_fails_open(caplog: pytest.LogCaptureFixture) -> None:
    log = AuditLog(AuditConfig(path="/dev/full"))
    await log.start()
    log.check_writable()  # nothing known wrong yet
    with pytest.raises(AuditUnavailable) as info:
        await log.write(stmt(0))
    assert info.value.sqlstate == "58030"
    assert "No space left" in info.value.message
    assert not log.healthy
    with pytest.raises(AuditUnavailable):
        log.check_writable()
    await log.close()

    open_log = AuditLog(AuditConfig(path="/dev/full", fail_open=True))
    await open_log.start()
    await open_log.write(stmt(0))  # does not raise
    open_log.check_writable()
    assert not open_log.healthy and open_log.dropped == 1
    assert "No space left" in caplog.text
    await open_log.close()


@pytest.mark.parametrize("where", ["directory", "missing-dir"])
async def test_unopenable_path_refuses_or_fails_open(tmp_path: Path, where: str) -> None:
    path = str(tmp_path) if where == "directory" else str(tmp_path / "nope" / "a.jsonl")
    log = AuditLog(AuditConfig(path=path))
    await log.start()  # the proxy still starts, and refuses statements
    assert not log.healthy
    with pytest.raises(AuditUnavailable, match="cannot open"):
        log.check_writable()
    with pytest.raises(AuditUnavailable):
        await log.write(stmt(0))
    await log.close()

    open_log = AuditLog(AuditConfig(path=path, fail_open=True))
    await open_log.start()
    open_log.check_writable()
    await open_log.write(stmt(0))
    await open_log.close()


async def test_log_recovers_when_the_path_becomes_writable(tmp_path: Path) -> None:
    path = tmp_path / "later" / "a.jsonl"
    log = AuditLog(AuditConfig(path=str(path), key=KEY))
    await log.start()
    with pytest.raises(AuditUnavailable):
        await log.write(stmt(0))
    path.parent.mkdir()
    await log.write(stmt(1))
    assert log.healthy
    log.check_writable()
    await log.close()
    # The failed record left no gap: the chain starts with the one that was written.
    assert [r["n"] for r in records(path)] == [1]
    assert verify_files([str(path)], KEY).ok


async def test_second_writer_on_the_same_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    first = AuditLog(AuditConfig(path=str(path), key=KEY))
    await first.start()
    await first.write(stmt(0))
    second = AuditLog(AuditConfig(path=str(path), key=KEY))
    await second.start()
    with pytest.raises(AuditUnavailable, match="in use by another Oversight process"):
        second.check_writable()
    with pytest.raises(AuditUnavailable):
        await second.write(stmt(99))
    await first.write(stmt(1))
    await first.close()
    await second.write(stmt(2))  # the file is free now: it takes over the chain
    await second.close()
    assert [r["n"] for r in records(path)] == [0, 1, 2]
    assert verify_files([str(path)], KEY).ok


async def test_stdout_copy_matches_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    out = io.BytesIO()
    log = AuditLog(AuditConfig(path=str(path), stdout=True), stdout=out)
    await log.start()
    for i in range(3):
        await log.write(stmt(i))
    await log.close()
    assert out.getvalue() == path.read_bytes()

    only = io.BytesIO()
    log = AuditLog(AuditConfig(path="", stdout=True), stdout=only)
    await log.start()
    await log.write(stmt(0))
    await log.close()
    assert orjson.loads(only.getvalue())["prev"] == GENESIS


async def test_disabled_log_accepts_and_drops(tmp_path: Path) -> None:
    log = AuditLog(AuditConfig(path=""))
    await log.start()
    await log.write(stmt(0))
    assert log.healthy
    log.check_writable()
    await log.close()


async def test_interval_fsync_runs(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(AuditConfig(path=str(path), fsync_interval=0.02))
    await log.start()
    await log.write(stmt(0))
    sink = log._sink
    assert sink is not None
    for _ in range(100):
        if not sink._dirty:
            break
        await asyncio.sleep(0.01)
    assert not sink._dirty
    await log.close()
