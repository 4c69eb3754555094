"""Suppression windows: the same user and rule within a destination's window is counted, not sent.

The first alert of a (user, rule) pair goes out and opens a window; repeats
inside it are only counted. When the window closes with repeats counted,
`due` hands back one message carrying the count (the last repeat, with
`count` = how many it stands for), so ten repeats cost one message, not ten.
The clock is injected so tests need no sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from proxy.alerts.alert import Alert

MAX_KEYS = 10_000  # pairs tracked per destination; beyond that alerts go out unsuppressed


@dataclass(slots=True)
class _Window:
    until: float
    repeats: int = 0
    last: Alert | None = None


class Suppressor:
    def __init__(self, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.clock = clock
        self._open: dict[tuple[str, str], _Window] = {}

    def offer(self, alert: Alert) -> Alert | None:
        """The alert to send now, or None when it was counted into an open window."""
        if self.window <= 0:
            return alert
        now = self.clock()
        w = self._open.get(alert.key)
        if w is not None and now < w.until:
            w.repeats += 1
            w.last = alert
            return None
        if w is not None and w.repeats:  # closed with repeats not yet reported: fold them in
            alert = alert.counted(alert.count + w.repeats)
        if len(self._open) >= MAX_KEYS and alert.key not in self._open:
            return alert
        self._open[alert.key] = _Window(until=now + self.window)
        return alert

    def due(self) -> list[Alert]:
        """Messages for windows that have closed with repeats counted; forgets closed windows."""
        now = self.clock()
        out = []
        for key, w in list(self._open.items()):
            if now >= w.until:
                del self._open[key]
                if w.repeats and w.last is not None:
                    out.append(w.last.counted(w.repeats))
        return out
