"""An embedded PostgreSQL for `oversight demo`, from the binaries in the pgserver wheel.

pgserver's own starter listens only on a unix socket and trusts everyone;
the demo needs TCP with password authentication (the proxy relays each
user's own login), so this module runs `initdb` and `postgres` itself.

PostgreSQL refuses to run as root, so under root the server runs as an
unprivileged system user from a data directory that user owns, with the
binaries copied to a world-readable cache (site-packages may sit in a home
directory that user cannot enter). The postmaster is a child in its own
session, so a terminal Ctrl-C reaches the demo first, which then stops it
in order; on Linux it also gets SIGINT if the demo dies, so nothing lingers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

SYSTEM_USER = "oversight-demo"

PG_HBA = """\
# Written by oversight demo: the unix socket is private to the demo.
local all all trust
host all all 127.0.0.1/32 scram-sha-256
"""

CONF = """
# Written by oversight demo on each start, included from postgresql.conf.
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sockdir}'
password_encryption = 'scram-sha-256'
max_connections = 100
shared_buffers = 64MB
synchronous_commit = off
logging_collector = off
log_min_messages = warning
"""


class ClusterError(RuntimeError):
    """The embedded PostgreSQL could not be set up or started; the message has its log."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def system_user(name: str = SYSTEM_USER) -> pwd.struct_passwd:
    """The unprivileged account PostgreSQL runs as under root; created when missing."""
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    # Another process may create it at the same moment: look again on failure.
    proc = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
    )
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise ClusterError(f"cannot create system user {name}: {proc.stderr}") from None


def pg_bindir(as_root: bool) -> Path:
    """The pgserver wheel's bin/ directory, or a world-readable copy of it under root."""
    # find_spec, not import: importing pgserver takes a lock file and warns.
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise ClusterError("the pgserver package is not installed: pip install pgserver")
    pkg = Path(next(iter(spec.submodule_search_locations))).resolve()
    bindir = pkg / "pginstall" / "bin"
    if not as_root:
        return bindir
    # The binaries find lib/ and share/ relative to themselves: copy that layout.
    version = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    cache = Path(tempfile.gettempdir()) / f"oversight-pgserver-{version}"
    if not (cache / "pgserver" / "pginstall" / "bin" / "postgres").exists():
        staging = Path(tempfile.mkdtemp(prefix="oversight-pgserver-"))
        shutil.copytree(pkg / "pginstall", staging / "pgserver" / "pginstall", symlinks=True)
        libs = pkg.parent / "pgserver.libs"
        if libs.is_dir():
            shutil.copytree(libs, staging / "pgserver.libs", symlinks=True)
        staging.chmod(0o755)
        try:
            staging.rename(cache)
        except OSError:  # a concurrent run got there first
            shutil.rmtree(staging, ignore_errors=True)
    return cache / "pgserver" / "pginstall" / "bin"


def _die_with_parent() -> None:
    """preexec_fn: ask Linux to send SIGINT (fast shutdown) when the demo process dies."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG, after the uid switch that clears it


class EmbeddedPostgres:
    """One data directory and its postmaster; `start()` initdb's it when new."""

    def __init__(self, datadir: Path) -> None:
        self.datadir = datadir
        self.as_root = os.geteuid() == 0
        self.pw = system_user() if self.as_root else None
        self.bindir = pg_bindir(self.as_root)
        # A short private dir for the socket (unix socket paths are limited to ~100 bytes).
        self.rundir = Path(tempfile.mkdtemp(prefix="oversight-demo-run-"))
        self.log = self.rundir / "postgres.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._own(self.rundir)

    def _own(self, path: Path) -> None:
        if self.pw is not None:
            os.chown(path, self.pw.pw_uid, self.pw.pw_gid)
        path.chmod(0o700)

    def _run_as(self) -> dict[str, Any]:
        if self.pw is None:
            return {}
        return {
            "user": self.pw.pw_uid,
            "group": self.pw.pw_gid,
            "extra_groups": [],
            "env": {**os.environ, "HOME": str(self.rundir), "USER": SYSTEM_USER},
        }

    @property
    def initialized(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    @property
    def version(self) -> str:
        out = subprocess.run(
            [str(self.bindir / "postgres"), "--version"], capture_output=True, text=True
        )
        return out.stdout.split()[-1] if out.returncode == 0 else "?"

    def _let_traverse(self) -> None:
        """Under root, let the server's user reach the data dir (o+x only: no listing)."""
        if self.pw is None:
            return
        for parent in self.datadir.resolve().parents:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(mode | stat.S_IXOTH)

    def initdb(self) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        self._own(self.datadir)
        self._let_traverse()
        cmd = [str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres"]
        cmd += ["-E", "UTF8", "--locale=C", "--no-sync"]
        cmd += ["--auth-local=trust", "--auth-host=scram-sha-256"]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, cwd=self.rundir, **self._run_as()
        )
        if proc.returncode:
            raise ClusterError(f"initdb failed:\n{proc.stdout}\n{proc.stderr}")
        (self.datadir / "pg_hba.conf").write_text(PG_HBA)
        with (self.datadir / "postgresql.conf").open("a") as f:
            f.write("\ninclude_if_exists 'oversight-demo.conf'\n")

    async def start(self, timeout: float = 30.0) -> None:
        if not self.initialized:
            await asyncio.to_thread(self.initdb)
        self._let_traverse()  # again: a kept dir's parents may have changed since
        for _attempt in range(5):
            self.port = free_port()
            # Rewritten on each start: a kept data dir gets a fresh port and socket dir.
            conf = self.datadir / "oversight-demo.conf"
            conf.write_text(CONF.format(port=self.port, sockdir=self.rundir))
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen(
                    [str(self.bindir / "postgres"), "-D", str(self.datadir)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.rundir,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,  # only ctypes + prctl: safe enough after fork
                    **self._run_as(),
                )
            if self.pw is not None:
                os.chown(self.log, self.pw.pw_uid, self.pw.pw_gid)
            if await self._wait_ready(timeout):
                return
            self.stop()  # most likely the port was taken between free_port() and bind
        tail = self.log.read_text(errors="replace")[-3000:]
        raise ClusterError(f"PostgreSQL did not start (log {self.log}):\n{tail}")

    async def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                conn = await self.connect("postgres")
            except (OSError, asyncpg.PostgresError):
                await asyncio.sleep(0.1)
                continue
            await conn.close()
            return True
        return False

    async def connect(self, database: str) -> Any:
        """A superuser asyncpg connection over the private unix socket."""
        return await asyncpg.connect(
            host=str(self.rundir), port=self.port, user="postgres", database=database, timeout=5
        )

    def dsn(self, user: str, password: str, database: str) -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        """Fast shutdown; waits for the postmaster to exit, escalating if it hangs."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def cleanup(self, delete_data: bool) -> None:
        self.stop()
        shutil.rmtree(self.rundir, ignore_errors=True)
        if delete_data:
            shutil.rmtree(self.datadir, ignore_errors=True)
