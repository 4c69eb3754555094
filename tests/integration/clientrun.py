"""Running external client programs (psql, java, node) from the compatibility tests.

- `require(ok, what, how_to_install)`: skip the test when a client's runtime
  is missing, saying how to install it; when the environment variable `CI` is
  set, fail instead, because `.ci/run` installs every runtime and CI must skip
  no test.
- `run(cmd, ...)`: run a program without blocking the event loop. The proxy
  runs in the test's event loop, so a blocking `subprocess.run` in an async
  test would deadlock against it.
- `key_values(out)`: parse the `key=value` lines the client programs print.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest


def require(ok: bool, what: str, how_to_install: str) -> None:
    """Skip (or, under CI, fail) unless `ok`; the message says how to install `what`."""
    if ok:
        return
    message = f"{what} is missing; install with: {how_to_install}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set: .ci/run installs it, so no test may be skipped)")
    pytest.skip(message)


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


async def run(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: str | None = None,
    timeout: float = 60.0,
) -> Run:
    """Run `cmd` to completion in a subprocess; kill it after `timeout` seconds."""
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env) if env is not None else None,
        cwd=cwd,
    )
    data = stdin.encode() if stdin is not None else None
    try:
        out, err = await asyncio.wait_for(proc.communicate(data), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(
            f"{cmd[0]} timed out after {timeout}s\nstdout:\n{out.decode()}\nstderr:\n{err.decode()}"
        ) from None
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def key_values(out: str) -> dict[str, str]:
    """The `key=value` lines of `out` as a dict (a repeated key must not occur)."""
    found: dict[str, str] = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if not sep or not key or " " in key:
            continue
        assert key not in found, f"key {key!r} printed twice"
        found[key] = value
    return found
