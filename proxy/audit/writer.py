"""The process's single audit writer: ordered, whole lines, group commit, off the event loop.

Sessions call `await log.write(record)`. The record joins a pending list and
the caller waits on a future. One writer task takes everything pending as a
batch and hands it to a dedicated one-thread executor, which seals the records
into the hash chain in order, writes the whole batch with one write(2) (so
lines from concurrent sessions can never interleave or tear), rotates first
when needed, and returns; then every future of the batch is resolved. Records
arriving meanwhile form the next batch (group commit).

The chain head only advances after a successful write, so a failed batch
leaves no gap: the next record chains to the last one actually on disk. A
failed write is truncated back and the file reopened, which also cuts any
torn tail. fsync runs on `fsync_interval` from a timer (every batch when 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from typing import Any, BinaryIO

from proxy.audit.config import AuditConfig
from proxy.audit.record import GENESIS, format_ts, seal
from proxy.audit.rotate import (
    BrokenHead,
    head_of_line,
    last_line,
    previous_head,
    rotated_name,
    torn_tail,
)
from proxy.errors import AuditUnavailable

log = logging.getLogger("oversight.audit")

# Sealing runs on the loop (~10 us a record): a cap keeps each stall short.
_MAX_BATCH = 256
_DROP_LOG_EVERY = 10.0  # seconds between "records lost" errors while failing open
_RESEAL = "reseal"  # the chain head moved under a sealed batch (file reopened)
# Read access too: recovery reads the tail back to find the chain head.
_OPEN_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)

Pending = tuple[dict[str, Any], "asyncio.Future[None]"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class AuditLog:
    """Tamper-evident JSON-lines audit trail; see the module docstring."""

    def __init__(
        self,
        config: AuditConfig,
        *,
        clock: Callable[[], datetime] = _utcnow,
        stdout: BinaryIO | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._stdout = stdout
        self._pending: list[Pending] = []
        self._wake = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._writer: asyncio.Task[None] | None = None
        self._syncer: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        # Touched only on the writer thread once started.
        self._fd: int | None = None
        self._size = 0
        self._day: date | None = None
        self._prev = GENESIS
        self._head_known = False  # set once a file has been opened and the head recovered
        self._dirty = False
        # Read on the loop, written on the thread (plain attribute stores).
        self._error: str | None = "audit log not started"
        self.records = 0
        self.batches = 0
        self.dropped = 0
        self._drop_logged = 0.0

    # ---- public API -------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self._error is None

    @property
    def head(self) -> str:
        """Hash of the last record written (GENESIS before any)."""
        return self._prev

    @property
    def enabled(self) -> bool:
        return bool(self.config.path) or self.config.stdout

    async def start(self) -> None:
        """Open the file and recover the chain head; a failure leaves the log unhealthy."""
        if self._writer is not None:
            return
        if self.config.stdout and self._stdout is None:
            self._stdout = sys.stdout.buffer
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="oversight-audit")
        loop = asyncio.get_running_loop()
        self._error = None
        if self.config.path:
            self._error = await loop.run_in_executor(self._executor, self._start_file)
            if self._error is not None:
                log.error("audit log unavailable: %s", self._error)
        self._writer = asyncio.create_task(self._run(), name="oversight-audit-writer")
        if self.config.path and self.config.fsync_interval > 0:
            self._syncer = asyncio.create_task(self._sync_loop(), name="oversight-audit-fsync")

    def check_writable(self) -> None:
        """Raise AuditUnavailable now if the log is known broken (and failing closed)."""
        if self.config.fail_open:
            return
        if self._closed or self._closing:
            raise AuditUnavailable("audit log is closed")
        if self._error is not None:
            raise AuditUnavailable(self._error)

    async def write(self, record: dict[str, Any]) -> None:
        """Append one record; returns once its line has been handed to the OS."""
        if not self.enabled:
            return
        if self._writer is None or self._closing:
            if self.config.fail_open:
                self.dropped += 1
                return
            raise AuditUnavailable("audit log is closed" if self._closing else "not started")
        rec = dict(record)
        if "ts" not in rec:
            rec["ts"] = format_ts(self._clock())
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((rec, fut))
        self._wake.set()
        await fut

    async def close(self) -> None:
        """Drain pending records, fsync and close."""
        if self._writer is None or self._closed:
            return
        self._closing = True
        self._wake.set()
        await self._writer
        if self._syncer is not None:
            self._syncer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._syncer
        assert self._executor is not None
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close_file)
        self._executor.shutdown(wait=True)
        self._closed = True

    # ---- loop side --------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[:_MAX_BATCH]
                del self._pending[:_MAX_BATCH]
                records = [rec for rec, _ in batch]
                try:
                    error = await self._flush(records)
                except Exception as exc:  # a bug, not I/O: still never lose the caller
                    log.exception("audit writer failed")
                    error = f"audit writer failed: {exc!r}"
                self._settle(batch, error)
            if self._closing:
                return

    async def _flush(self, records: list[dict[str, Any]]) -> str | None:
        """Seal the batch here, in order, then hand the bytes to the writer thread.

        Sealing on the loop rather than the thread avoids fighting the thread
        for the GIL; the head advances only once the bytes are written.
        """
        loop = asyncio.get_running_loop()
        for _ in range(3):
            prev = self._prev
            lines: list[bytes] = []
            for rec in records:
                line, prev = seal(rec, prev, self.config.key)
                lines.append(line)
            result = await loop.run_in_executor(
                self._executor, self._write_data, b"".join(lines), self._prev
            )
            if result == _RESEAL:
                continue
            if result is None:
                self._prev = prev
            return result
        return "audit chain head keeps changing while writing"

    def _settle(self, batch: list[Pending], error: str | None) -> None:
        was_healthy = self._error is None
        self._error = error
        if error is None:
            self.records += len(batch)
            self.batches += 1
            if not was_healthy:
                log.warning("audit log writable again: %s", self.config.path or "stdout")
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)
            return
        if was_healthy:
            log.error("audit log unavailable: %s", error)
        if self.config.fail_open:
            self.dropped += len(batch)
            now = time.monotonic()
            if was_healthy or now - self._drop_logged >= _DROP_LOG_EVERY:
                self._drop_logged = now
                log.error("audit: %d record(s) lost so far (fail_open): %s", self.dropped, error)
        for _, fut in batch:
            if fut.done():
                continue
            if self.config.fail_open:
                fut.set_result(None)
            else:
                fut.set_exception(AuditUnavailable(error))

    async def _sync_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._executor is not None
        while True:
            await asyncio.sleep(self.config.fsync_interval)
            await loop.run_in_executor(self._executor, self._fsync)

    # ---- writer thread ----------------------------------------------------

    def _start_file(self) -> str | None:
        try:
            self._open()
            self._head_known = True
        except OSError as exc:
            self._prev = previous_head(self.config.path).hash
            self._head_known = True
            return f"cannot open {self.config.path}: {exc.strerror or exc}"
        return None

    def _open(self) -> None:
        """Open the live file, cut a torn tail, and take the chain head from its last line."""
        path = self.config.path
        fd = os.open(path, _OPEN_FLAGS, 0o640)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                self._fd, self._size, self._day = fd, 0, self._today()
                return
            end = torn_tail(fd)
            if end < st.st_size:
                self._save_torn(fd, end, st.st_size)
                os.ftruncate(fd, end)
            line = last_line(fd, end)
        except OSError:
            os.close(fd)
            raise
        if line is None:
            # A fresh file: the chain goes on from what this process last wrote,
            # or at start from the newest rotated file.
            if not self._head_known:
                self._prev = previous_head(path).hash
            self._day = self._today()
        else:
            try:
                head = head_of_line(line)
            except BrokenHead as exc:
                # Keep the evidence, start a fresh file; verify will flag the break.
                os.close(fd)
                aside = rotated_name(path, self._clock())
                os.rename(path, aside)
                log.error("audit: %s: %s; moved to %s, new chain begins", path, exc, aside)
                fd = os.open(path, _OPEN_FLAGS, 0o640)
                self._fd, self._size, self._day, self._prev = fd, 0, self._today(), GENESIS
                return
            self._prev, self._day = head.hash, head.day or self._today()
        self._fd, self._size = fd, end

    def _save_torn(self, fd: int, end: int, size: int) -> None:
        fragment = os.pread(fd, size - end, end)
        name = f"{self.config.path}.torn.{self._clock().strftime('%Y-%m-%dT%H-%M-%S.%f')}"
        with open(name, "ab") as f:
            f.write(fragment)
        log.warning(
            "audit: %s ended with a torn line (%d bytes, crash mid-write?); "
            "cut it and kept it in %s",
            self.config.path,
            len(fragment),
            name,
        )

    def _today(self) -> date:
        return self._clock().astimezone(UTC).date()

    def _write_data(self, data: bytes, sealed_after: str) -> str | None:
        if self.config.path:
            try:
                if self._fd is not None and self._replaced():
                    log.warning("audit: %s was moved or replaced; reopening", self.config.path)
                    self._drop_fd()
                if self._fd is None:
                    self._open()
                    self._head_known = True
                    if self._prev != sealed_after:
                        return _RESEAL
                self._write_file(data)
            except OSError as exc:
                self._drop_fd()
                return f"cannot write {self.config.path}: {exc.strerror or exc}"
        if self._stdout is not None:
            try:
                self._stdout.write(data)
                self._stdout.flush()
            except (OSError, ValueError) as exc:
                if not self.config.path:
                    return f"cannot write stdout: {exc}"
                log.error("audit: cannot copy records to stdout: %s", exc)
        return None

    def _replaced(self) -> bool:
        """Whether the path no longer names the open file (an outside rotation, a deletion)."""
        assert self._fd is not None
        try:
            st = os.stat(self.config.path)
        except FileNotFoundError:
            return True
        mine = os.fstat(self._fd)
        return (st.st_dev, st.st_ino) != (mine.st_dev, mine.st_ino)

    def _write_file(self, data: bytes) -> None:
        self._maybe_rotate(len(data))
        fd = self._fd
        assert fd is not None
        start = self._size
        view = memoryview(data)
        try:
            while view:
                n = os.write(fd, view)
                view = view[n:]
        except OSError:
            # Never leave half a batch: a torn line would glue onto the next one.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise
        self._size = start + len(data)
        self._dirty = True
        if self.config.fsync_interval <= 0:
            self._fsync()

    def _maybe_rotate(self, incoming: int) -> None:
        fd = self._fd
        if fd is None or self._size == 0 or not stat.S_ISREG(os.fstat(fd).st_mode):
            return
        too_big = self._size + incoming > self.config.rotate_bytes
        new_day = self.config.rotate_daily and self._day is not None and self._day != self._today()
        if not (too_big or new_day):
            return
        path = self.config.path
        os.fsync(fd)
        os.close(fd)
        self._fd = None
        os.rename(path, rotated_name(path, self._clock()))
        self._fd = os.open(path, _OPEN_FLAGS, 0o640)
        self._size, self._day, self._dirty = 0, self._today(), False
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        directory = os.path.dirname(self.config.path) or "."
        try:
            dfd = os.open(directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)

    def _fsync(self) -> None:
        if self._fd is None or not self._dirty:
            return
        try:
            os.fsync(self._fd)
            self._dirty = False
        except OSError as exc:
            # The OS may have dropped pages; say so loudly, the next write retries.
            self._error = f"cannot fsync {self.config.path}: {exc.strerror or exc}"
            log.error("audit: %s", self._error)
            self._drop_fd()

    def _drop_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _close_file(self) -> None:
        self._fsync()
        self._drop_fd()
