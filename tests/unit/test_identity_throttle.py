"""The failed-login limit: counts per address and per user, forgets past the window."""

from __future__ import annotations

import time

import pytest

from proxy.idsrc.throttle import LoginThrottle


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    return now


def test_limit_applies_per_address_and_per_user(clock: list[float]) -> None:
    t = LoginThrottle(2, 60)
    t.failed("10.0.0.1", "dave")
    assert t.retry_after("10.0.0.1", "dave") == 0
    t.failed("10.0.0.1", "dave")
    assert t.retry_after("10.0.0.1", "dave") == 60
    assert t.retry_after("10.0.0.1", "erin") == 60  # same address
    assert t.retry_after("10.0.0.9", "dave") == 60  # same user
    assert t.retry_after("10.0.0.9", "erin") == 0


def test_failures_leave_the_window(clock: list[float]) -> None:
    t = LoginThrottle(2, 60)
    t.failed("10.0.0.1", "dave")
    clock[0] += 30
    t.failed("10.0.0.1", "dave")
    assert t.retry_after("10.0.0.1", "dave") == 30  # until the first failure is 60 s old
    clock[0] += 30
    assert t.retry_after("10.0.0.1", "dave") == 0
    clock[0] += 60
    assert t.retry_after("10.0.0.1", "dave") == 0
    assert t._failures == {}  # nothing kept for names no longer failing
