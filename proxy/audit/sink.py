"""The audit file: open and recover, append, rotate, fsync.

Opening, rotating and fsyncing block on disk, so only the AuditLog's worker
thread does them; a plain append (`writable_now` says when) is one write(2)
to the page cache, which the AuditLog makes on the event loop. The two never
overlap: the loop waits for the thread's call to finish before writing again.

Opening recovers where the chain stands: a torn last line (a crash
mid-write) is cut and kept aside in `<name>.torn-<time>.jsonl`, and the
head is the hash of the last complete line, or of the newest rotated file's
when the live file is empty. A batch is appended with one write(2)
(O_APPEND) and truncated back if it fails part way, so no line is ever torn
or glued to the next.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
from collections.abc import Callable
from datetime import UTC, date, datetime

from proxy.audit.record import GENESIS
from proxy.audit.rotate import (
    BrokenHead,
    head_of_line,
    last_line,
    previous_head,
    rotated_name,
    torn_tail,
)

log = logging.getLogger("oversight.audit")

# Read access too: recovery reads the tail back to find the chain head.
_OPEN_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
_MODE = 0o640


def _lock(fd: int) -> None:
    """Take the file for this process: two writers would interleave two chains."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise OSError(errno.EBUSY, "in use by another Oversight process") from None


def _open_locked(path: str) -> int:
    fd = os.open(path, _OPEN_FLAGS, _MODE)
    try:
        _lock(fd)
    except OSError:
        os.close(fd)
        raise
    return fd


class Reseal(Exception):
    """The file was (re)opened and the chain head on disk is not what the batch was sealed after."""

    def __init__(self, head: str) -> None:
        super().__init__(head)
        self.head = head


class FileSink:
    def __init__(
        self,
        path: str,
        *,
        clock: Callable[[], datetime],
        rotate_bytes: int,
        rotate_daily: bool,
        fsync_each: bool,
    ) -> None:
        self.path = path
        self.clock = clock
        self.rotate_bytes = rotate_bytes
        self.rotate_daily = rotate_daily
        self.fsync_each = fsync_each
        self.head = GENESIS  # hash of the last record on disk
        self._head_known = False  # set once the head has been recovered at start
        self._fd: int | None = None
        self._size = 0
        self._day: date | None = None
        self._dirty = False
        self._regular = False  # a regular file (rotation, recovery), not /dev/stdout or a FIFO
        self._ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file

    def writable_now(self, incoming: int) -> bool:
        """Whether appending `incoming` bytes is a plain write(2): no open, rotation or fsync.

        The AuditLog makes such writes on the event loop and sends the rest to its thread.
        """
        if self._fd is None or self.fsync_each:
            return False
        if not self._regular or self._size == 0:
            return True
        if self._size + incoming > self.rotate_bytes:
            return False
        return not (self.rotate_daily and self._day is not None and self._day != self._today())

    def fsync_handle(self) -> int | None:
        """A duplicate descriptor for the periodic fsync if anything was written since the last.

        The thread fsyncs and closes the duplicate, so it never touches this object's state.
        """
        if self._fd is None or not self._dirty:
            return None
        try:
            fd = os.dup(self._fd)
        except OSError:
            return None  # out of descriptors: the next period tries again
        self._dirty = False
        return fd

    def lost(self) -> None:
        """An fsync failed: the kernel may have dropped pages, so reopen and recheck."""
        self._drop()

    def start(self) -> None:
        """Open the file and recover the head; on failure the head comes from rotated files."""
        try:
            self._open()
        except OSError:
            self.head = previous_head(self.path).hash
            raise
        finally:
            self._head_known = True

    def append(self, data: bytes, sealed_after: str, new_head: str) -> None:
        """Write one batch of whole lines chained from `sealed_after` to `new_head`.

        Raises OSError, or Reseal when reopening found another head on disk.
        """
        try:
            if self._fd is not None and self._replaced():
                log.warning("audit: %s was moved or replaced; reopening", self.path)
                self._drop()
            if self._fd is None:
                self._open()
                if self.head != sealed_after:
                    raise Reseal(self.head)
            self._maybe_rotate(len(data))
            self._write(data)
            self.head = new_head
        except OSError:
            self._drop()  # reopening recovers from whatever state the file is in
            raise

    def fsync(self) -> None:
        """fsync if anything was written since the last one; raises OSError."""
        if self._fd is None or not self._dirty:
            return
        try:
            os.fsync(self._fd)
        except OSError:
            self._drop()  # the kernel may have dropped pages: reopen and recheck
            raise
        self._dirty = False

    def close(self) -> None:
        try:
            self.fsync()
        finally:
            self._drop()

    # ---- internals --------------------------------------------------------

    def _today(self) -> date:
        return self.clock().astimezone(UTC).date()

    def _open(self) -> None:
        fd = os.open(self.path, _OPEN_FLAGS, _MODE)
        try:
            st = os.fstat(fd)
            self._regular = stat.S_ISREG(st.st_mode)
            self._ident = (st.st_dev, st.st_ino)
            if not self._regular:  # /dev/stdout, a FIFO...: nothing to recover
                self._fd, self._size, self._day = fd, 0, self._today()
                return
            _lock(fd)
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
                self.head = previous_head(self.path).hash
            self._fd, self._size, self._day = fd, end, self._today()
            return
        try:
            recovered = head_of_line(line)
        except BrokenHead as exc:
            # Keep the evidence aside, start a fresh file; verify flags the break.
            os.close(fd)
            aside = rotated_name(self.path, self.clock())
            os.rename(self.path, aside)
            log.error("audit: %s: %s; moved to %s, a new chain begins", self.path, exc, aside)
            self._fd = _open_locked(self.path)
            self._ident = self._stat_ident(self._fd)
            self._size, self._day, self.head = 0, self._today(), GENESIS
            return
        self.head, self._day = recovered.hash, recovered.day or self._today()
        self._fd, self._size = fd, end

    def _save_torn(self, fd: int, end: int, size: int) -> None:
        fragment = os.pread(fd, size - end, end)
        # Named apart from the chain's files (a glob of `<path>*` should not pick it up).
        root, ext = os.path.splitext(self.path)
        name = f"{root}.torn-{self.clock().strftime('%Y-%m-%dT%H-%M-%S.%f')}{ext}"
        with open(name, "ab") as f:
            f.write(fragment)
        log.warning(
            "audit: %s ended with a torn line (%d bytes, crash mid-write?); cut it, kept in %s",
            self.path,
            len(fragment),
            name,
        )

    def _replaced(self) -> bool:
        """Whether the path no longer names the open file (an outside rotation, a deletion)."""
        assert self._fd is not None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (st.st_dev, st.st_ino) != self._ident

    @staticmethod
    def _stat_ident(fd: int) -> tuple[int, int]:
        st = os.fstat(fd)
        return (st.st_dev, st.st_ino)

    def _write(self, data: bytes) -> None:
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
        if self.fsync_each:
            self.fsync()

    def _maybe_rotate(self, incoming: int) -> None:
        fd = self._fd
        if fd is None or self._size == 0 or not self._regular:
            return
        too_big = self._size + incoming > self.rotate_bytes
        new_day = self.rotate_daily and self._day is not None and self._day != self._today()
        if not (too_big or new_day):
            return
        os.fsync(fd)
        self._drop()
        os.rename(self.path, rotated_name(self.path, self.clock()))
        self._fd = _open_locked(self.path)
        self._ident = self._stat_ident(self._fd)
        self._size, self._day, self._dirty = 0, self._today(), False
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        # Makes the rename itself durable.
        with contextlib.suppress(OSError):
            dfd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def _drop(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
