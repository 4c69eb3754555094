"""The process's single audit writer: ordered, whole lines, group commit on the event loop.

Sessions call `await log.write(record)`. The record joins a pending list and
the caller waits on a future. Once per event-loop turn, a callback takes
everything pending (every session's records of that turn), seals it into
the hash chain in order and appends it with one write(2) (so lines from
concurrent sessions never interleave or tear); then every future of the
batch is resolved, and each session sends its client the completion. The
write goes to the page cache and takes microseconds, so it is made right on
the loop: a thread round trip per batch (queue, wake-up, call_soon_threadsafe)
cost more than the write itself.

The worker thread (worker.py) only gets the calls that can block: opening and
recovering the file, rotating it (fsync, rename), every batch when fsync
after each batch is configured (fsync_interval 0), copying to stdout (a pipe
may be full), and the periodic fsync (on a duplicate of the descriptor, so
the thread never shares the loop's file state). Batches wait while the
thread works, so the order on disk is always the order of `write` calls.

The chain head only advances after a successful write, so a failed batch
leaves no gap: the next record chains to the last one actually on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

from proxy.audit.config import AuditConfig
from proxy.audit.record import GENESIS, format_ts, seal, wall_ts
from proxy.audit.sink import FileSink, Reseal
from proxy.audit.worker import Worker
from proxy.errors import AuditUnavailable
from proxy.statement import StatementRecord

log = logging.getLogger("oversight.audit")

# Sealing runs on the loop (a few us a record): a cap keeps each stall short.
_MAX_BATCH = 256
_DROP_LOG_EVERY = 10.0  # seconds between "records lost" errors while failing open

Record = dict[str, Any] | StatementRecord
Pending = tuple[Record, "asyncio.Future[None]"]
_ON_THREAD = "(on the worker thread)"  # not an error: the batch is settled there


def _fsync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        self._worker = Worker("oversight-audit")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._scheduled = False  # a flush is queued for this loop turn
        self._slow: asyncio.Task[None] | None = None  # a batch on the worker thread
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
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
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
        self._started = True
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

    async def write(self, record: Record) -> None:
        """Append one record; returns once its line has been handed to the OS."""
        if not self.enabled:
            return
        if not self._started or self._closing:
            if self.config.fail_open:
                self.dropped += 1
                return
            raise AuditUnavailable("audit log is closed" if self._closing else "not started")
        rec: Record
        if isinstance(record, StatementRecord):
            rec = record  # built for this write alone, with its ts
        else:
            rec = dict(record)
            if "ts" not in rec:
                rec["ts"] = self.now()
        loop = self._loop
        assert loop is not None
        fut: asyncio.Future[None] = loop.create_future()
        self._pending.append((rec, fut))
        if not self._scheduled and self._slow is None:
            self._scheduled = True
            loop.call_soon(self._flush_turn)
        await fut

    def now(self, ago: float = 0.0) -> str:
        """The record timestamp for now (minus `ago` seconds), RFC 3339 UTC."""
        if self._clock is _utcnow:
            return wall_ts(time.time() - ago)
        return format_ts(self._clock() - timedelta(seconds=ago))

    async def close(self) -> None:
        """Drain pending records, fsync and close."""
        if not self._started or self._closed:
            return
        self._closing = True
        while self._pending or self._slow is not None:
            if self._slow is not None:
                await asyncio.shield(self._slow)
            else:
                self._flush_turn()
        if self._syncer is not None:
            self._syncer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._syncer
        await self._worker.call(self._close_file)
        self._worker.stop()
        self._closed = True

    # ---- loop side --------------------------------------------------------

    def _flush_turn(self) -> None:
        """Write everything pending, batch by batch, unless a batch is on the thread."""
        self._scheduled = False
        while self._pending and self._slow is None:
            batch = self._pending[:_MAX_BATCH]
            del self._pending[:_MAX_BATCH]
            records = [rec for rec, _ in batch]
            try:
                error = self._flush_here(batch, records)
            except Exception as exc:  # a bug, not I/O: still never lose the caller
                log.exception("audit writer failed")
                error = f"audit writer failed: {exc!r}"
            if error is not _ON_THREAD:
                self._settle(batch, error)

    def _flush_here(self, batch: list[Pending], records: list[Record]) -> str | None:
        """Seal and append on the loop; hands the batch to the thread when it may block."""
        for _ in range(3):
            data, head = self._seal(records)
            if self._needs_thread(len(data)):
                self._slow = asyncio.ensure_future(self._flush_on_thread(batch, records))
                return _ON_THREAD
            try:
                error = self._write_data(data, self._prev, head)
            except Reseal as moved:  # the file was replaced and reopened
                self._prev = moved.head
                continue
            if error is None:
                self._prev = head
            return error
        return "audit chain head keeps changing while writing"

    async def _flush_on_thread(self, batch: list[Pending], records: list[Record]) -> None:
        error: str | None = "audit chain head keeps changing while writing"
        try:
            for _ in range(3):
                data, head = self._seal(records)
                try:
                    error = await self._worker.call(self._write_data, data, self._prev, head)
                except Reseal as moved:
                    self._prev = moved.head
                    continue
                if error is None:
                    self._prev = head
                break
        except Exception as exc:
            log.exception("audit writer failed")
            error = f"audit writer failed: {exc!r}"
        finally:
            self._settle(batch, error)
            self._slow = None
            if self._pending and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._flush_turn)

    def _seal(self, records: list[Record]) -> tuple[bytes, str]:
        prev = self._prev
        lines: list[bytes] = []
        for rec in records:
            line, prev = seal(rec, prev, self.config.key)
            lines.append(line)
        return b"".join(lines), prev

    def _needs_thread(self, size: int) -> bool:
        if self._stdout is not None:
            return True  # a full pipe would stall the loop
        return self._sink is not None and not self._sink.writable_now(size)

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
            if self._sink is None:
                continue
            fd = self._sink.fsync_handle()
            if fd is None:
                continue
            try:
                await self._worker.call(_fsync_and_close, fd)
            except OSError as exc:
                # The OS may have lost written pages: refuse until a write succeeds again.
                self._sink.lost()
                self._error = f"cannot fsync {self.config.path}: {exc.strerror or exc}"
                log.error("audit: %s", self._error)

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

    def _close_file(self) -> None:
        if self._sink is None:
            return
        try:
            self._sink.close()
        except OSError as exc:
            log.error("audit: closing %s: %s", self.config.path, exc)
