"""A token bucket in capture time: what bounds the alert stream (detect/policy.py) and the DNS
log (output/dnslog.py).

Time is the capture's, not the wall clock's, so a replay at any speed limits exactly as the
live sensor would; a clock that steps back neither refills nor drains the bucket.

>>> b = TokenBucket(rate=1.0, burst=2)
>>> [b.take(0.0), b.take(0.0), b.take(0.0)]   # the burst, then empty
[True, True, False]
>>> b.take(1.0)                                # one token back after one second
True
"""

from __future__ import annotations


class TokenBucket:
    __slots__ = ("rate", "burst", "_tokens", "_refilled")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._refilled: float | None = None

    def take(self, ts: float) -> bool:
        """Take one token at capture time ``ts``; False if none is left."""
        if self._refilled is not None and ts > self._refilled:
            self._tokens = min(self.burst, self._tokens + (ts - self._refilled) * self.rate)
        if self._refilled is None or ts > self._refilled:
            self._refilled = ts
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
