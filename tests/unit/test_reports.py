"""`oversight report subject|user` over audit files written by the real writer.

The files come from tests/auditdata.py: two proxy instances, one with rotated
files, a ledger key rotation in the middle, every event kind. Each expectation
is worked out from the scenario or from the records read back, never from
the report itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from auditdata import (
    AUDIT_KEY,
    DAY1,
    HOSTILE,
    NEW_KEY,
    OLD_KEY,
    Stmt,
    read_records,
    write_log,
    write_scenario,
)

from proxy.cli import main
from proxy.ledger.hashing import subject_hash
from proxy.reports.api import ReportConfig, run_subject, run_user
from proxy.reports.chain import verify_all
from proxy.reports.errors import ReportError
from proxy.reports.files import resolve
from proxy.reports.render_html import subject_html, user_html
from proxy.reports.render_text import user_text
from proxy.reports.source import Source
from proxy.rules import load_rules

RULES = Path(__file__).resolve().parents[2] / "rules"


@pytest.fixture
async def logs(tmp_path: Path) -> dict[str, Path]:
    return await write_scenario(tmp_path)


def config(audit: list[str], keys: tuple[bytes, ...] = (NEW_KEY, OLD_KEY)) -> ReportConfig:
    rules = load_rules(RULES)
    return ReportConfig(audit=audit, audit_key=AUDIT_KEY, ledger_keys=keys, rules=lambda: rules)


def both(logs: dict[str, Path]) -> list[str]:
    return [str(logs["a"]), str(logs["b"])]


def who(lines: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    return [(line["user"], line["how"], line["column"]) for line in lines]


def test_subject_by_key_finds_exactly_who_received_or_searched_for_it(
    logs: dict[str, Path],
) -> None:
    lines = run_subject(config(both(logs)), "person", "42", None, None)
    assert who(lines) == [
        ("alice", "seen", None),
        ("alice", "looked_up", "id"),
        ("carol", "looked_up", "person_id"),  # a via column: the key searched for
        (HOSTILE, "seen", None),
    ]
    # dave read 42 only as another subject's key and searched for the name "42": not person 42.
    assert [line["rows"] for line in lines] == [2, 2, 5, 1]
    assert lines[0]["purpose"] == "CASE-1 fraud review" and lines[0]["session"] == "s1"
    assert lines[0]["decision"] == "allow" and lines[0]["fingerprint"].startswith("fp-")
    assert lines[3]["sql"] == "SELECT '<script>bad()</script>' FROM people"


def test_subject_after_a_key_rotation_needs_the_old_key(logs: dict[str, Path]) -> None:
    lines = run_subject(config(both(logs), keys=(NEW_KEY,)), "person", "42", None, None)
    assert {line["user"] for line in lines} == {"carol", HOSTILE}  # alice's: the old key
    old_only = run_subject(config(both(logs), keys=(OLD_KEY,)), "person", "42", None, None)
    assert {line["user"] for line in old_only} == {"alice"}


def test_subject_by_lookup_matches_that_column_only(logs: dict[str, Path]) -> None:
    cfg = config(both(logs))
    lines = run_subject(cfg, "person", None, "ssn=123-45-6789", None)
    assert who(lines) == [("bob", "looked_up", "ssn")]
    assert run_subject(cfg, "person", None, "ssn=123-45-6780", None) == []
    assert who(run_subject(cfg, "person", None, "full_name=42", None)) == [
        ("dave", "looked_up", "full_name")
    ]
    # A lookup on a key column is the key search.
    assert who(run_subject(cfg, "person", None, "person_id=42", None)) == who(
        run_subject(cfg, "person", "42", None, None)
    )


def test_a_key_search_with_the_subjects_own_lookup_values_finds_searches_by_them(
    logs: dict[str, Path],
) -> None:
    """`report subject person 42` with 42's SSN read from the warehouse finds bob's search."""
    cfg = config(both(logs))
    by_key = who(run_subject(cfg, "person", "42", None, None))
    assert ("bob", "looked_up", "ssn") not in by_key
    also = [("ssn", "123-45-6789"), ("phone", "555-0100")]
    with_values = who(run_subject(cfg, "person", "42", None, None, also))
    assert sorted(with_values) == sorted([*by_key, ("bob", "looked_up", "ssn")])
    # The value counts only on its own column: the SSN given as a name finds nothing more.
    wrong = who(run_subject(cfg, "person", "42", None, None, [("full_name", "123-45-6789")]))
    assert sorted(wrong) == sorted(by_key)


def test_since_leaves_out_older_records(logs: dict[str, Path]) -> None:
    cfg = config(both(logs))
    lines = run_subject(cfg, "person", "42", None, "2026-11-21T00:00:00Z")
    assert {line["user"] for line in lines} == {"carol", HOSTILE}
    now = DAY1.replace(day=23)  # relative ages count back from now
    cfg = ReportConfig(cfg.audit, AUDIT_KEY, cfg.ledger_keys, cfg.rules, now=lambda: now)
    assert {line["user"] for line in run_subject(cfg, "person", "42", None, "1d")} == {
        "carol",
        HOSTILE,
    }
    assert run_user(cfg, "alice", "1d")["statements"] == 1  # only s7 on the last day


def test_files_rotated_siblings_and_globs(logs: dict[str, Path], tmp_path: Path) -> None:
    a = resolve([str(logs["a"])])
    assert len(a) == 3 and a[-1] == str(logs["a"])  # two rotated files, then the live one
    assert all(name.startswith(str(logs["a"])) for name in a)
    everything = resolve([str(tmp_path / "*" / "oversight-audit.jsonl*")])
    assert sorted(everything) == sorted(resolve(both(logs)))
    # Records in rotated files are found: alice's 42 lines sit in instance a's oldest file.
    lines = run_subject(config([str(tmp_path / "*/*.jsonl*")]), "person", "42", None, None)
    assert len(lines) == 4
    only_b = run_subject(config([str(logs["b"])]), "person", "42", None, None)
    assert {line["user"] for line in only_b} == {"carol", HOSTILE}
    with pytest.raises(ReportError, match=r"no audit files found: .*nothing"):
        resolve([str(tmp_path / "nothing*")])


@pytest.mark.parametrize("user", ["alice", "bob", "carol", "dave", HOSTILE])
def test_user_report_totals_equal_the_records(logs: dict[str, Path], user: str) -> None:
    cfg = config(both(logs))
    report = run_user(cfg, user, None)
    mine = [r for r in read_records(resolve(both(logs))) if r.get("user") == user]
    stmts = [r for r in mine if r["event"] == "statement"]
    assert report["statements"] == len(stmts)
    assert report["rows"] == sum(r["rows"] for r in stmts)
    assert report["bytes"] == sum(r["bytes"] for r in stmts)
    assert report["refused"] == sum(r["decision"] in ("block", "cutoff") for r in stmts)
    assert report["sessions"] == len({r["session"] for r in mine})
    assert sum(report["hours"]) == len(stmts)
    assert {t["name"]: t["statements"] for t in report["tables"]} == _tables(stmts)
    assert report["chain_ok"] is True


def _tables(stmts: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in stmts:
        if r["decision"] not in ("block", "cutoff"):
            for t in r["tables"]:
                out[t] = out.get(t, 0) + 1
    return out


def test_user_report_details(logs: dict[str, Path]) -> None:
    report = run_user(config(both(logs)), "alice", None)
    # 42, 43, 44, 45 (old key) and 100..109: distinct hashes, 43 counted once.
    assert report["subjects_seen"] == 14 and report["subjects_looked_up"] == 1
    assert report["subjects_at_least"] is False
    assert [(d["rule"], d["detector"], d["count"]) for d in report["detectors"]] == [
        ("scrape", "enumeration", 1)
    ]
    assert report["canaries"] == 1
    assert report["canary_events"][0]["canary"] == "decoy-people"
    assert [(r["decision"], r["reason"]) for r in report["refusals"]] == [
        ("cutoff", "result limit of 1000 rows reached")
    ]
    assert {p["purpose"]: p["statements"] for p in report["purposes"]} == {
        "CASE-1 fraud review": 2,
        None: 3,
    }
    s1 = next(s for s in report["session_list"] if s["session"] == "s1")
    assert s1["hours"] == 1.0 and s1["statements"] == 2  # connect 09:00 to disconnect 10:00
    assert report["hours"][9] == 2 and report["hours"][23] == 2 and report["hours"][8] == 1


async def test_capped_subject_lists_say_at_least(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    capped = {"person": {"seen": ["a" * 32], "seen_count": 5000, "looked_up": [],
                         "looked_up_count": 0}}  # fmt: skip
    await write_log(path, [Stmt("erin", "s9", DAY1, rows=5000, extra={"subjects": capped})])
    report = run_user(config([str(path)]), "erin", None)
    assert report["subjects_seen"] == 1 and report["subjects_at_least"] is True
    assert "subjects seen        at least 1" in user_text(report)


async def test_a_tampered_file_gives_chain_ok_false(
    logs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    oldest = resolve([str(logs["a"])])[0]
    raw = Path(oldest).read_bytes()
    assert b'"rows":2,' in raw
    Path(oldest).write_bytes(raw.replace(b'"rows":2,', b'"rows":0,', 1))
    report = run_user(config(both(logs)), "alice", None)
    assert report["chain_ok"] is False
    broken = [c for c in report["chains"] if not c["ok"]]
    assert len(broken) == 1 and "hash mismatch" in broken[0]["problem"]
    assert oldest in broken[0]["problem"]
    assert 'id="chain" class="bad">BROKEN' in user_html(report)
    assert "Audit chain: BROKEN" in user_text(report)
    _env(monkeypatch, logs)
    assert main(["report", "user", "alice", "--since", "all", "--json"]) == 1
    assert orjson.loads(capsys.readouterr().out)["chain_ok"] is False


def _env(monkeypatch: pytest.MonkeyPatch, logs: dict[str, Path]) -> None:
    monkeypatch.chdir(logs["a"].parent)  # no oversight.toml here
    monkeypatch.setenv("OVERSIGHT_AUDIT_LOG", str(logs["a"]))
    monkeypatch.setenv("OVERSIGHT_AUDIT_KEY", AUDIT_KEY.decode())
    monkeypatch.setenv("OVERSIGHT_LEDGER_KEY", NEW_KEY.decode())
    monkeypatch.setenv("OVERSIGHT_RULES", str(RULES))


def test_cli_json_shapes(
    logs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _env(monkeypatch, logs)
    monkeypatch.setenv("OVERSIGHT_LEDGER_PREVIOUS_KEYS", orjson.dumps([OLD_KEY.decode()]).decode())
    args = ["report", "subject", "person", "42", "--since", "all", "--json", "--audit"]
    assert main([*args, str(logs["a"]), str(logs["b"])]) == 0
    lines = [orjson.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 4
    for line in lines:
        assert {"ts", "user", "session", "how", "column", "decision", "rows", "fingerprint",
                "purpose", "sql"} <= line.keys()  # fmt: skip
    # Default files: the configured log and its rotated siblings (instance a only).
    assert main(["report", "user", "alice", "--since", "all", "--json"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    for key in ("user", "statements", "rows", "bytes", "refused", "tables", "subjects_seen",
                "subjects_looked_up", "chain_ok"):  # fmt: skip
        assert key in report
    assert report["statements"] == 4 and report["rows"] == 1019 and report["chain_ok"] is True


def test_cli_previous_key_file(
    logs: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    _env(monkeypatch, logs)
    args = ["report", "subject", "person", "42", "--since", "all", "--json"]
    assert main(args) == 0
    assert capsys.readouterr().out == ""  # alice's records are under the old key
    keys = tmp_path / "old-keys"
    keys.write_text(OLD_KEY.decode() + "\n")
    assert main([*args, "--previous-key-file", str(keys)]) == 0
    assert {orjson.loads(x)["user"] for x in capsys.readouterr().out.splitlines()} == {"alice"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["subject", "persn", "42"], "no subject 'persn' (known: person)"),
        (["subject", "person", "--by-lookup", "nope=1"], "has no lookup column 'nope'"),
        (["subject", "person", "--by-lookup", "ssn"], "write COLUMN=VALUE"),
        (["subject", "person", "42", "--by-lookup", "ssn=1"], "one of them"),
        (["subject", "person"], "one of them"),
        (["user", "alice", "--since", "yesterday"], "since: not an RFC 3339 time"),
        (["user", "alice", "--audit", "/nonexistent/x.jsonl"], "no audit files found"),
    ],
)
def test_cli_usage_errors(
    logs: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    _env(monkeypatch, logs)
    assert main(["report", *args]) == 2
    assert message in capsys.readouterr().err


def test_text_and_html_show_hostile_values_as_text(
    logs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = config(both(logs))
    lines = run_subject(cfg, "person", "42", None, None)
    report = run_user(cfg, HOSTILE, None)
    for page in (subject_html(lines, "person 42"), user_html(report)):
        assert "<script" not in page.lower()
        assert "&lt;script&gt;" in page
        assert "&lt;script&gt;bad()&lt;/script&gt;" in page or HOSTILE not in page
    _env(monkeypatch, logs)
    out = tmp_path / "report.html"
    assert main(["report", "user", HOSTILE, "--since", "all", "--audit", str(logs["b"]),
                 "--html", str(out)]) == 0  # fmt: skip
    assert "<script" not in out.read_text().lower()


def test_text_output_escapes_control_characters(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    report = run_user(config([str(path)]), "x", None)
    assert report["statements"] == 0 and report["chain_ok"] is True
    report["user"] = "eve\x1b[2J\x1b[31m"
    text = user_text(report)
    assert "\x1b" not in text and "\\x1b[2J" in text


@pytest.mark.parametrize("damage", ["edit", "drop_last", "none"])
def test_parallel_chain_verification_agrees_with_one_walk(
    logs: dict[str, Path], damage: str
) -> None:
    files = resolve(both(logs))
    rotated = files[0]
    lines = Path(rotated).read_bytes().splitlines(keepends=True)
    if damage == "edit":
        Path(rotated).write_bytes(b"".join(lines).replace(b'"rows":2,', b'"rows":3,', 1))
    elif damage == "drop_last":  # invisible inside the file; the next file's first prev says it
        Path(rotated).write_bytes(b"".join(lines[:-1]))
    serial = verify_all(files, AUDIT_KEY)
    parallel = verify_all(files, AUDIT_KEY, workers=2, min_parallel_bytes=0)
    assert parallel == serial
    assert [c["ok"] for c in serial] == [damage == "none", True]
    if damage == "drop_last":
        assert "prev mismatch" in serial[0]["problem"] and files[1] in serial[0]["problem"]


def test_no_verify_leaves_chain_ok_null(
    logs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    oldest = resolve([str(logs["a"])])[0]
    Path(oldest).write_bytes(Path(oldest).read_bytes().replace(b'"rows":2,', b'"rows":0,', 1))
    _env(monkeypatch, logs)
    assert main(["report", "user", "alice", "--since", "all", "--no-verify", "--json"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert report["chain_ok"] is None and report["chains"] == []
    assert main(["report", "user", "alice", "--since", "all", "--no-verify"]) == 0
    assert "Audit chain: not verified" in capsys.readouterr().out


def test_duckdb_threads_can_be_capped(logs: dict[str, Path]) -> None:
    """The dashboard runs reports on one DuckDB thread, beside the proxy's sessions."""
    files = resolve(both(logs))
    with Source(files, threads=1) as source:
        assert source.rows("SELECT current_setting('threads') AS n") == [{"n": 1}]
        assert source.rows("SELECT count(*) AS n FROM {audit}") == [{"n": len(read_records(files))}]


async def test_odd_subjects_fields_are_read_not_fatal(tmp_path: Path) -> None:
    """A later version's extra field, a damaged entry, an id with / and . : read what is there."""
    path = tmp_path / "audit.jsonl"
    h42 = subject_hash(NEW_KEY, "person", "42")
    odd = {
        "person": {"seen": [h42], "seen_count": 1, "looked_up": [], "looked_up_count": 0,
                   "canary": True},
        "a/b.c~d": {"seen": ["f" * 32], "seen_count": 1},
        "broken": 5,
    }  # fmt: skip
    await write_log(
        path,
        [
            Stmt("erin", "s1", DAY1, rows=1, extra={"subjects": odd}),
            Stmt("erin", "s1", DAY1, rows=1, extra={"subjects": ["not", "an", "object"]}),
        ],
    )
    lines = run_subject(config([str(path)]), "person", "42", None, None)
    assert [(x["user"], x["how"]) for x in lines] == [("erin", "seen")]
    report = run_user(config([str(path)]), "erin", None)
    assert {s["subject"]: s["seen"] for s in report["subjects"]} == {
        "person": 1,
        "a/b.c~d": 1,
        "broken": 0,
    }
    assert report["subjects_seen"] == 2 and report["statements"] == 2


def test_partial_accepts_a_chain_whose_start_is_archived(logs: dict[str, Path]) -> None:
    oldest = resolve([str(logs["a"])])[0]
    Path(oldest).unlink()  # archived elsewhere
    strict = run_user(config([str(logs["a"])]), "alice", None)
    assert strict["chain_ok"] is False
    assert "not the start of the chain" in strict["chains"][0]["problem"]
    cfg = config([str(logs["a"])])
    loose = ReportConfig(cfg.audit, AUDIT_KEY, cfg.ledger_keys, cfg.rules, partial=True)
    assert run_user(loose, "alice", None)["chain_ok"] is True
