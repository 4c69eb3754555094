"""Failed-login rate limit for `proxy` auth mode, per client address and per user.

At most `max_failures` failed logins per `window` seconds from one client
address, and for one user name; past either, logins are refused before any
password or token is asked for, until the oldest failure leaves the window.
Successes do not wipe failures (one known password must not reset the
address's count for guessing others). Kept in memory, per instance.
"""

from __future__ import annotations

import time
from collections import deque


class LoginThrottle:
    def __init__(self, max_failures: int, window: float) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, client_ip: str, user: str) -> float:
        """Seconds until a login from `client_ip` as `user` may be tried; 0 when it may now."""
        now = time.monotonic()
        wait = 0.0
        for key in (f"ip:{client_ip}", f"user:{user}"):
            q = self._recent(key, now)
            if q is not None and len(q) >= self.max_failures:
                wait = max(wait, q[0] + self.window - now)
        return wait

    def failed(self, client_ip: str, user: str) -> None:
        now = time.monotonic()
        for key in (f"ip:{client_ip}", f"user:{user}"):
            q = self._recent(key, now)
            if q is None:
                q = self._failures[key] = deque(maxlen=self.max_failures)
            q.append(now)
        if len(self._failures) > 100_000:  # a flood of names: drop what has expired
            for k in [k for k in self._failures if self._recent(k, now) is None]:
                self._failures.pop(k, None)

    def _recent(self, key: str, now: float) -> deque[float] | None:
        q = self._failures.get(key)
        if q is None:
            return None
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self._failures[key]
            return None
        return q
