"""`oversight passwd USER`: write a SCRAM-SHA-256 verifier to the users file.

Proxy auth mode (OVERSIGHT_AUTH=proxy) checks clients against this file, so
it holds verifiers only (PostgreSQL's rolpassword format), never passwords,
one `user:verifier` line per user. The file is rewritten whole through a
temporary file in the same directory (mode 0600), so a crash never leaves
it half-written and other users' lines survive untouched.
"""

from __future__ import annotations

import getpass
import os
import sys
import tempfile
from typing import TextIO

from proxy.scram import make_verifier

EXIT_OK, EXIT_FAIL = 0, 1


def read_password(stdin: TextIO | None = None) -> str | None:
    """Ask twice on a terminal; read one line when piped. None when they differ."""
    stdin = stdin or sys.stdin
    if stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != first:
            return None
        return first
    return stdin.readline().rstrip("\r\n")


def set_verifier(path: str, user: str, verifier: str) -> bool:
    """Add or replace `user`'s line; True if it replaced an existing one."""
    lines: list[str] = []
    replaced = False
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                name, sep, _ = line.strip().partition(":")
                if sep and name == user and not line.lstrip().startswith("#"):
                    if not replaced:
                        lines.append(f"{user}:{verifier}\n")
                    replaced = True
                else:
                    lines.append(line if line.endswith("\n") else line + "\n")
    if not replaced:
        lines.append(f"{user}:{verifier}\n")
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".oversight-users-", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(lines)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return replaced


def cmd_passwd(user: str, path: str) -> int:
    if not user or any(c in user for c in ":\n\r#") or user != user.strip():
        print(f"oversight: invalid user name {user!r}", file=sys.stderr)
        return EXIT_FAIL
    try:
        password = read_password()
    except (EOFError, KeyboardInterrupt):
        print("\noversight: no password given", file=sys.stderr)
        return EXIT_FAIL
    if password is None:
        print("oversight: passwords do not match; nothing changed", file=sys.stderr)
        return EXIT_FAIL
    if not password:
        print("oversight: empty password refused; nothing changed", file=sys.stderr)
        return EXIT_FAIL
    try:
        replaced = set_verifier(path, user, make_verifier(password))
    except OSError as e:
        print(f"oversight: cannot write {path}: {e}", file=sys.stderr)
        return EXIT_FAIL
    print(f"{'updated' if replaced else 'added'} SCRAM-SHA-256 verifier for {user} in {path}")
    return EXIT_OK
