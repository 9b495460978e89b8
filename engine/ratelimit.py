"""Rate limits as plain values: time is passed in, nothing sleeps."""

from __future__ import annotations

from collections import deque


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``."""

    __slots__ = ("rate", "burst", "_tokens", "_at")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at = now

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now

    def take(self, now: float, n: float = 1) -> bool:
        """Take ``n`` tokens if all are there."""
        self._refill(now)
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False

    def take_up_to(self, now: float, n: int) -> int:
        """Take as many of ``n`` whole tokens as there are; return how many."""
        self._refill(now)
        got = min(n, int(self._tokens))
        self._tokens -= got
        return got


class WindowCounter:
    """Counts events in a sliding window; ``exceeded`` once more than ``limit`` happened."""

    __slots__ = ("limit", "window", "_times")

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._times: deque[float] | None = None
        """Made at the first event (most connections never send a bad message)."""

    def hit(self, now: float) -> bool:
        """Record one event; True when this one is over the limit."""
        times = self._times
        if times is None:
            times = self._times = deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        times.append(now)
        return len(times) > self.limit
