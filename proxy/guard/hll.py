"""HyperLogLog over sliding buckets: how many distinct subjects a user received in a window.

The coverage detector counts distinct subject hashes over days, and a user
may receive millions: an exact set would grow with them. A HyperLogLog
sketch answers "about how many distinct" in 16 KiB whatever the count, with
a standard error of 0.81% (2^14 registers, as Redis's PFADD/PFCOUNT use, so
the memory store and the Redis store agree). The window is cut into
buckets (windows.COVERAGE_BUCKETS), one sketch each; the count is that of
their union (register-wise maximum). The union and a histogram of its
registers are kept up to date as members are added, so a count costs no
pass over the registers; they are rebuilt only when a bucket leaves the
window. The estimator is Ertl's ("New cardinality estimation algorithms
for HyperLogLog sketches", 2017), the one Redis uses, exact enough for
small counts that no separate linear-counting branch is needed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

P = 14
M = 1 << P  # registers
Q = 64 - P  # bits of the hash left after the register index
_ALPHA_INF = 0.5 / math.log(2)


def register(member: str) -> tuple[int, int]:
    """(register index, rank): where a member lands and its run of zero bits plus one.

    Members are ledger hashes (32 hex digits of an HMAC), uniform already: their
    first 64 bits serve as the hash. Anything else is hashed first.
    """
    try:
        x = int(member[:16], 16) if len(member) >= 16 else -1
    except ValueError:
        x = -1
    if x < 0:
        x = int.from_bytes(hashlib.blake2b(member.encode(), digest_size=8).digest(), "little")
    w = x >> P
    return x & (M - 1), Q - w.bit_length() + 1


def _sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        prev = z
        z += x * y
        y += y
        if z == prev:
            return z


def _tau(x: float) -> float:
    if x in (0.0, 1.0):
        return 0.0
    y, z = 1.0, 1.0 - x
    while True:
        x = math.sqrt(x)
        prev = z
        y *= 0.5
        z -= (1.0 - x) ** 2 * y
        if z == prev:
            return z / 3.0


def estimate(hist: list[int]) -> int:
    """Distinct members from the histogram of register values (0..Q+1)."""
    z = M * _tau((M - hist[Q + 1]) / M)
    for k in range(Q, 0, -1):
        z = 0.5 * (z + hist[k])
    z += M * _sigma(hist[0] / M)
    return 0 if math.isinf(z) else round(_ALPHA_INF * M * M / z)


def _histogram(registers: bytearray) -> list[int]:
    hist = [0] * (Q + 2)
    for value in registers:
        hist[value] += 1
    return hist


class WindowSketch:
    """Per-bucket sketches (bucket start in ms -> registers) and their running union."""

    __slots__ = ("buckets", "hist", "union")

    def __init__(self) -> None:
        self.buckets: dict[int, bytearray] = {}
        self.union = bytearray(M)
        self.hist = _histogram(self.union)

    def prune(self, now_ms: int, window_ms: int, width: int) -> None:
        """Drop buckets that no longer overlap the window; rebuild the union if any went."""
        dead = [s for s in self.buckets if s + width <= now_ms - window_ms]
        if not dead:
            return
        for start in dead:
            del self.buckets[start]
        union = bytearray(M)
        for regs in self.buckets.values():
            union = bytearray(map(max, union, regs))
        self.union, self.hist = union, _histogram(union)

    def add(self, start: int, members: Iterable[str]) -> None:
        regs = self.buckets.get(start)
        if regs is None:
            regs = self.buckets[start] = bytearray(M)
        union, hist = self.union, self.hist
        for member in members:
            idx, rank = register(member)
            if rank > regs[idx]:
                regs[idx] = rank
                old = union[idx]
                if rank > old:
                    hist[old] -= 1
                    hist[rank] += 1
                    union[idx] = rank

    def count(self) -> int:
        return estimate(self.hist)
