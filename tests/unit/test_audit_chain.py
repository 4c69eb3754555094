"""The hash chain: canonical form, verification, and every kind of tampering caught at its line."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.audit import AuditConfig, AuditLog, cmd_verify, verify_files
from proxy.audit.record import GENESIS, canonical, seal

KEY = b"test-key"


async def make_log(path: Path, n: int, key: bytes | None = KEY) -> list[bytes]:
    log = AuditLog(AuditConfig(path=str(path), key=key, fsync_interval=0))
    await log.start()
    for i in range(n):
        await log.write(
            {
                "event": "statement",
                "session": f"s{i % 3}",
                "user": "alice",
                "sql": f"SELECT {i}",
                "decision": "allow",
                "rules": [],
                "rows": i,
            }
        )
    await log.close()
    return path.read_bytes().splitlines(keepends=True)


def test_seal_hash_is_hmac_over_prev_and_sorted_canonical() -> None:
    line, digest = seal({"user": "bob", "event": "connect", "ts": "t"}, GENESIS, KEY)
    record = orjson.loads(line)
    assert list(record)[:3] == ["ts", "event", "user"]
    assert list(record)[-2:] == ["prev", "hash"]
    body = {k: v for k, v in record.items() if k != "hash"}
    canon = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    assert canon == canonical(record)
    assert digest == hmac.new(KEY, GENESIS.encode() + canon, hashlib.sha256).hexdigest()
    _, plain = seal({"user": "bob", "event": "connect", "ts": "t"}, GENESIS, None)
    assert plain == hashlib.sha256(GENESIS.encode() + canon).hexdigest()


def test_seal_accepts_awkward_python_values(tmp_path: Path) -> None:
    record = {"tables": ("a", "b"), "odd": "\udcff", "big": 2**70, "set": {"x"}, "raw": b"\x00"}
    line, _ = seal(record, GENESIS, None)
    parsed = orjson.loads(line)
    assert parsed["tables"] == ["a", "b"]
    assert parsed["big"] == str(2**70)
    path = tmp_path / "odd.jsonl"
    path.write_bytes(line)
    assert verify_files([str(path)], None).ok


async def test_intact_chain_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "a.jsonl"
    lines = await make_log(path, 5)
    assert len(lines) == 5
    assert orjson.loads(lines[0])["prev"] == GENESIS
    assert cmd_verify([str(path)], KEY) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: 5 records in 1 files, chain intact")
    assert orjson.loads(lines[-1])["hash"] in out


def tampered(path: Path, lines: list[bytes]) -> str:
    path.write_bytes(b"".join(lines))
    verdict = verify_files([str(path)], KEY)
    assert verdict.problem is not None
    return f"{verdict.problem.line}: {verdict.problem.what}"


async def test_edited_field_is_caught_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    lines = await make_log(path, 6)
    lines[3] = lines[3].replace(b'"user":"alice"', b'"user":"mallory"')
    assert tampered(path, lines).startswith("4: hash mismatch")


async def test_edit_with_recomputed_plain_hash_is_caught_by_the_next_line(tmp_path: Path) -> None:
    # Without the key an attacker can recompute a plain SHA-256 but not the HMAC.
    path = tmp_path / "a.jsonl"
    lines = await make_log(path, 6)
    record = orjson.loads(lines[2])
    record["rows"] = 0
    lines[2], _ = seal(record, record["prev"], None)
    assert tampered(path, lines).startswith("3: hash mismatch")


async def test_deleted_line_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    lines = await make_log(path, 6)
    del lines[2]
    assert tampered(path, lines).startswith("3: prev mismatch")


async def test_deleted_first_line_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    lines = await make_log(path, 4)
    del lines[0]
    assert "not the start of the chain" in tampered(path, lines)
    # A deliberately partial chain (older files archived) is accepted on request.
    assert verify_files([str(path)], KEY, partial=True).ok


async def test_swapped_lines_are_caught(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    lines = await make_log(path, 6)
    lines[3], lines[4] = lines[4], lines[3]
    assert tampered(path, lines).startswith("4: prev mismatch")


async def test_truncated_last_line_is_caught_and_prefix_verifies(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    lines = await make_log(path, 6)
    lines[-1] = lines[-1][: len(lines[-1]) // 2]  # a crash mid-write
    assert tampered(path, lines).startswith("6: last line truncated")
    verdict = verify_files([str(path)], KEY)
    assert verdict.records == 5
    path.write_bytes(b"".join(lines[:-1]))
    assert verify_files([str(path)], KEY).ok


async def test_appended_garbage_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    lines = await make_log(path, 3)
    assert tampered(path, [*lines, b"garbage\n"]) == "4: not JSON"
    assert tampered(path, [*lines, b"\n"]) == "4: empty line"
    assert tampered(path, [*lines, b'{"x": 1}\n']).startswith("4: not an audit record")


async def test_wrong_key_and_missing_key_are_named(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    await make_log(path, 3)
    wrong = verify_files([str(path)], b"other")
    assert wrong.problem is not None and wrong.problem.line == 1
    assert "wrong key" in wrong.problem.what
    none = verify_files([str(path)], None)
    assert none.problem is not None and "give the key" in none.problem.what


async def test_cmd_verify_reports_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "a.jsonl"
    lines = await make_log(path, 4)
    del lines[1]
    path.write_bytes(b"".join(lines))
    assert cmd_verify([str(path)], KEY) == 1
    out = capsys.readouterr().out
    assert f"{path}:2: prev mismatch" in out
    assert "1 records before it verify" in out


async def test_unkeyed_chain_verifies_without_key(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    await make_log(path, 3, key=None)
    assert verify_files([str(path)], None).ok
    assert not verify_files([str(path)], KEY).ok


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.text(), JSON, max_size=6), min_size=1, max_size=4))
def test_any_record_seals_and_verifies(records: list[dict[str, object]]) -> None:
    import tempfile

    prev, lines = GENESIS, []
    for record in records:
        line, prev = seal(record, prev, KEY)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        lines.append(line)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "h.jsonl"
        path.write_bytes(b"".join(lines))
        verdict = verify_files([str(path)], KEY)
    assert verdict.ok and verdict.records == len(records) and verdict.last_hash == prev
