"""What a process counts for ``/metrics``: plain numbers, bumped on the hot path for the price
of an addition and read by the Prometheus collectors (``gateway/metrics.py``,
``runtime/metrics.py``, ``media/metrics.py``) only when scraped."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field

TICK_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
"""Bounds of the gateway's tick (one flush of every room) duration histogram."""

REDIS_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 3.0)
"""Bounds of the Redis round-trip histogram (a trip of pipelined writes and joins' reads)."""


class Histogram:
    """Counts of observations at or below each bound (Prometheus's ``le``), their sum, their
    number; ``observe`` is one bisect and three additions."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        """``[(le, observations <= le), ..., ("+Inf", all)]``, as Prometheus lists buckets."""
        out, total = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(total)))
        return out


@dataclass(slots=True)
class GatewayStats:
    """One gateway process's counters (its connections hold a reference and add to them)."""

    ops: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(op, outcome) -> ops answered: outcome ``ok`` or the error code (``sold_out``, ...)."""
    closes: Counter[int] = field(default_factory=Counter)
    """Close code -> connections the gateway closed (4408 slow consumer, 4403, 4401, ...)."""
    frames: int = 0
    """WebSocket frames written to viewers (shared tick frames, replies, catch-up)."""
    bytes: int = 0
    """Bytes of those frames."""
    events_in: int = 0
    """Events the room reader handed over from Redis."""
    tick: Histogram = field(default_factory=lambda: Histogram(TICK_BUCKETS_S))
    """Seconds each tick's flush took."""

    def op(self, name: str, outcome: str) -> None:
        self.ops[name, outcome] += 1
