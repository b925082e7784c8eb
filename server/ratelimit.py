"""Token buckets: at most ``burst`` requests at once, refilled at ``rate`` per second.

One bucket per caller: the key's name when reads need a key, else the client address. A
caller past its bucket is told how long to wait (the HTTP layer turns that into ``429`` with
``Retry-After``). Buckets live in memory and are bounded: past ``max_callers`` the least
recently seen caller's bucket is dropped (it starts full again if that caller returns).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable


class TokenBuckets:
    """Per-caller token buckets of one shared ``rate`` (tokens per second) and ``burst``."""

    def __init__(self, rate: float, burst: int, *, max_callers: int = 65536,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive number of requests per second, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self.rate = float(rate)
        self.burst = int(burst)
        self.max_callers = max_callers
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # caller -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, caller: str) -> float:
        """Spend one token of ``caller``'s bucket: 0.0 when allowed, otherwise the seconds
        until a token is back (nothing is spent)."""
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.pop(caller, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[caller] = (tokens, now)  # most recently seen last
            while len(self._buckets) > self.max_callers:
                self._buckets.popitem(last=False)
        return wait


def retry_after_header(wait_s: float) -> str:
    """``Retry-After`` takes whole seconds; round up so a client that obeys it succeeds."""
    return str(max(1, math.ceil(wait_s)))
