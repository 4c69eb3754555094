"""Every subcommand reads the one settings object: environment, ./oversight.toml, --config.

Run as an operator runs them: `python -m proxy.cli ...` in a subprocess, with
no inherited OVERSIGHT_* variables and a working directory of the test's own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.audit.record import GENESIS, seal
from proxy.cli import _parser

ROOT = Path(__file__).resolve().parents[2]
KEY = "key-only-in-the-file"
RULES = """\
version: 1
rules:
  - id: only-in-config
    table: public.people
    columns: {ssn: redact}
tests:
  - user: alice
    sql: SELECT 1
    expect: {decision: allow}
"""


def oversight(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("OVERSIGHT_")}
    full["PYTHONPATH"] = str(ROOT)
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def keyed_log(path: Path, key: bytes, n: int = 3) -> None:
    prev, lines = GENESIS, []
    for i in range(n):
        line, prev = seal({"ts": f"t{i}", "event": "statement", "user": "alice"}, prev, key)
        lines.append(line)
    path.write_bytes(b"".join(lines))


def test_every_subcommand_but_demo_takes_config() -> None:
    """New subcommands get --config too, or this fails."""
    sub = next(a for a in _parser()._actions if a.dest == "command")
    leaves = {}
    for name, p in sub.choices.items():  # type: ignore[union-attr]
        nested = [a for a in p._actions if a.dest.endswith("_command")]  # audit, alerts
        for n, q in nested[0].choices.items() if nested else [(None, p)]:  # type: ignore[union-attr]
            leaves[f"{name} {n}" if n else name] = q
    without = [n for n, p in leaves.items() if "--config" not in p._option_string_actions]
    assert without == ["demo"]


def test_audit_verify_uses_a_key_set_only_in_oversight_toml(tmp_path: Path) -> None:
    keyed_log(tmp_path / "audit.jsonl", KEY.encode())
    no_key = oversight(tmp_path, "audit", "verify", "audit.jsonl")
    assert no_key.returncode == 1, no_key  # a keyed chain does not verify without its key
    (tmp_path / "oversight.toml").write_text(f'audit_key = "{KEY}"\n')
    r = oversight(tmp_path, "audit", "verify", "audit.jsonl")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok" in r.stdout


def test_the_environment_beats_the_file(tmp_path: Path) -> None:
    keyed_log(tmp_path / "audit.jsonl", KEY.encode())
    (tmp_path / "oversight.toml").write_text('audit_key = "wrong"\n')
    r = oversight(tmp_path, "audit", "verify", "audit.jsonl", env={"OVERSIGHT_AUDIT_KEY": KEY})
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture
def configured(tmp_path: Path) -> tuple[Path, Path]:
    """A --config file in another directory, naming rules, audit log, key and users file."""
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    (elsewhere / "rules.yaml").write_text(RULES)
    keyed_log(elsewhere / "audit.jsonl", KEY.encode())
    cfg = elsewhere / "oversight.conf"
    cfg.write_text(
        f'rules = "{elsewhere / "rules.yaml"}"\n'
        f'audit_log = "{elsewhere / "audit.jsonl"}"\n'
        f'audit_key = "{KEY}"\n'
        f'users_file = "{elsewhere / "users"}"\n'
    )
    work = tmp_path / "work"
    work.mkdir()
    return work, cfg


def test_check_honours_config(configured: tuple[Path, Path]) -> None:
    work, cfg = configured
    r = oversight(work, "check", "--config", str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok: 1 table rules" in r.stdout


def test_test_honours_config(configured: tuple[Path, Path]) -> None:
    work, cfg = configured
    r = oversight(work, "test", "--config", str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed, 0 failed" in r.stdout


def test_explain_honours_config(configured: tuple[Path, Path]) -> None:
    work, cfg = configured
    schema = str(ROOT / "rules" / "demo-schema.json")
    r = oversight(
        work,
        "explain",
        "--config",
        str(cfg),
        "--user",
        "bob",
        "--schema",
        schema,
        "SELECT ssn FROM people",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rules:    only-in-config" in r.stdout


def test_tail_honours_config(configured: tuple[Path, Path]) -> None:
    work, cfg = configured
    r = oversight(work, "tail", "--config", str(cfg), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(r.stdout.splitlines()) == 3


def test_audit_verify_honours_config(configured: tuple[Path, Path]) -> None:
    work, cfg = configured
    log = str(cfg.parent / "audit.jsonl")
    assert oversight(work, "audit", "verify", log).returncode == 1
    r = oversight(work, "audit", "verify", "--config", str(cfg), log)
    assert r.returncode == 0, r.stdout + r.stderr


def test_passwd_honours_config(configured: tuple[Path, Path]) -> None:
    work, cfg = configured
    r = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "passwd", "--config", str(cfg), "carol"],
        cwd=work,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("OVERSIGHT_")},
            "PYTHONPATH": str(ROOT),
        },
        input="s3cret\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (cfg.parent / "users").read_text().startswith("carol:SCRAM-SHA-256$")


def test_serve_honours_config(configured: tuple[Path, Path]) -> None:
    work, cfg = configured
    cfg.write_text(cfg.read_text() + 'admin_listen = "0.0.0.0"\n')
    r = oversight(
        work,
        "serve",
        "--config",
        str(cfg),
        env={"OVERSIGHT_UPSTREAM": "postgresql://u:p@127.0.0.1:1/db"},
    )
    assert r.returncode == 2
    assert "bad setting admin_listen" in r.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["serve"],
        ["check"],
        ["test"],
        ["explain", "--user", "u", "SELECT 1"],
        ["tail"],
        ["audit", "verify", "x.jsonl"],
        ["passwd", "u"],
    ],
)
def test_a_missing_config_file_is_an_error_everywhere(tmp_path: Path, command: list[str]) -> None:
    r = oversight(tmp_path, *command, "--config", str(tmp_path / "nope.toml"))
    assert r.returncode == 2, r
    assert r.stderr.strip() == f"oversight: config file {tmp_path / 'nope.toml'} not found"


def test_an_unknown_key_in_the_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "oversight.toml").write_text('audit_kye = "typo"\n')
    r = oversight(tmp_path, "audit", "verify", "x.jsonl")
    assert r.returncode == 2
    assert "audit_kye" in r.stderr


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("OVERSIGHT_ADMIN_LISTEN", "0.0.0.0"),  # validated, then crashed after binding, once
        ("OVERSIGHT_ADMIN_LISTEN", "::1"),
        ("OVERSIGHT_ADMIN_LISTEN", "127.0.0.1:65536"),
        ("OVERSIGHT_LISTEN", "0.0.0.0"),
        ("OVERSIGHT_LISTEN", "[::1]"),
        ("OVERSIGHT_LISTEN", "no such:1"),
    ],
)
def test_serve_refuses_a_bad_address_before_binding(
    tmp_path: Path, setting: str, value: str
) -> None:
    env = {
        "OVERSIGHT_UPSTREAM": "postgresql://u:p@127.0.0.1:1/db",
        "OVERSIGHT_LISTEN": "127.0.0.1:0",
        "OVERSIGHT_RULES": str(ROOT / "rules"),
        setting: value,
    }
    r = oversight(tmp_path, "serve", env=env)
    assert r.returncode == 2, r
    lines = r.stderr.strip().splitlines()
    name = setting.removeprefix("OVERSIGHT_").lower()
    assert len(lines) == 1 and lines[0].startswith(f"oversight: bad setting {name}: "), r.stderr
    assert "listening" not in r.stderr  # it never got as far as a socket
