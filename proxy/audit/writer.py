"""The process's single audit writer: ordered, whole lines, group commit, off the event loop.

Sessions call `await log.write(record)`. The record joins a pending list and
the caller waits on a future. One writer task takes everything pending as a
batch, seals it into the hash chain in order (on the loop: a few microseconds
a record, and no fight with a thread for the GIL), and hands the bytes to a
worker thread (worker.py) that appends them with one write(2) (so lines from
concurrent sessions never interleave or tear), rotating first when needed
(sink.py). Then every future of the batch is resolved. Records arriving
meanwhile form the next batch (group commit).

The chain head only advances after a successful write, so a failed batch
leaves no gap: the next record chains to the last one actually on disk.
fsync runs on `fsync_interval` from a timer (after every batch when 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, BinaryIO

from proxy.audit.config import AuditConfig
from proxy.audit.record import GENESIS, format_ts, seal
from proxy.audit.sink import FileSink, Reseal
from proxy.audit.worker import Worker
from proxy.errors import AuditUnavailable

log = logging.getLogger("oversight.audit")

# Sealing runs on the loop (~10 us a record): a cap keeps each stall short.
_MAX_BATCH = 256
_DROP_LOG_EVERY = 10.0  # seconds between "records lost" errors while failing open

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
        self._worker = Worker("oversight-audit")
        self._writer: asyncio.Task[None] | None = None
        self._syncer: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self._sink = (
            FileSink(
                config.path,
                clock=clock,
                rotate_bytes=config.rotate_bytes,
                rotate_daily=config.rotate_daily,
                fsync_each=config.fsync_interval <= 0,
            )
            if config.path
            else None
        )
        self._prev = GENESIS  # chain head, advanced by the writer task after each write
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
        self._worker.start()
        self._error = None
        if self._sink is not None:
            try:
                await self._worker.call(self._sink.start)
            except OSError as exc:
                self._error = f"cannot open {self.config.path}: {exc.strerror or exc}"
                log.error("audit log unavailable: %s", self._error)
            self._prev = self._sink.head
        self._writer = asyncio.create_task(self._run(), name="oversight-audit-writer")
        if self._sink is not None and self.config.fsync_interval > 0:
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
        await self._worker.call(self._close_file)
        self._worker.stop()
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
        for _ in range(3):
            prev = self._prev
            lines: list[bytes] = []
            for rec in records:
                line, prev = seal(rec, prev, self.config.key)
                lines.append(line)
            try:
                error = await self._worker.call(self._write_data, b"".join(lines), self._prev, prev)
            except Reseal as moved:
                self._prev = moved.head
                continue
            if error is None:
                self._prev = prev
            return error
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
        while True:
            await asyncio.sleep(self.config.fsync_interval)
            await self._worker.call(self._fsync)

    # ---- writer thread ----------------------------------------------------

    def _write_data(self, data: bytes, sealed_after: str, new_head: str) -> str | None:
        if self._sink is not None:
            try:
                self._sink.append(data, sealed_after, new_head)
            except OSError as exc:
                return f"cannot write {self.config.path}: {exc.strerror or exc}"
        if self._stdout is not None:
            try:
                self._stdout.write(data)
                self._stdout.flush()
            except (OSError, ValueError) as exc:
                if self._sink is None:
                    return f"cannot write stdout: {exc}"
                log.error("audit: cannot copy records to stdout: %s", exc)
        return None

    def _fsync(self) -> None:
        if self._sink is None:
            return
        try:
            self._sink.fsync()
        except OSError as exc:
            # The OS may have lost written pages: refuse until a write succeeds again.
            self._error = f"cannot fsync {self.config.path}: {exc.strerror or exc}"
            log.error("audit: %s", self._error)

    def _close_file(self) -> None:
        if self._sink is None:
            return
        try:
            self._sink.close()
        except OSError as exc:
            log.error("audit: closing %s: %s", self.config.path, exc)
