"""One thread that runs the audit log's blocking calls in order, for the event loop.

A ThreadPoolExecutor round trip goes through concurrent.futures (a Future
with its lock and condition, then `wrap_future` on the loop side); this is a
plain queue in and `call_soon_threadsafe` out, about half the CPU per call,
which matters because a statement's record waits for one such round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_Item = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]


def _resolve(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if fut.done():  # the awaiting task was cancelled
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


class Worker:
    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        # A daemon: records are only acknowledged once written, so nothing is lost
        # if a process exits without close(); it just must not hang on the way out.
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    def call(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run `fn(*args)` on the thread, after every call submitted before it."""
        assert self._loop is not None, "Worker.start() first"
        fut: asyncio.Future[T] = self._loop.create_future()
        self._queue.put((fn, args, fut))
        return fut

    def stop(self) -> None:
        """Let queued calls finish, then end the thread (blocks until it has)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _main(self) -> None:
        loop = self._loop
        assert loop is not None
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args, fut = item
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the awaiting coroutine
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(_resolve, fut, result, error)
