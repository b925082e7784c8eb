"""Token buckets against a hand-driven clock."""

from __future__ import annotations

import pytest

from server.ratelimit import TokenBuckets, retry_after_header


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refill_at_rate() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=2.0, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)
    assert buckets.take("b") == 0.0  # callers do not share a bucket
    clock.now += 0.5
    assert buckets.take("a") == 0.0
    assert buckets.take("a") == pytest.approx(0.5)  # a refused take spends nothing
    clock.now += 100
    assert [buckets.take("a") for _ in range(4)][:3] == [0.0, 0.0, 0.0]  # capped at burst


def test_callers_are_bounded() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=1.0, burst=1, max_callers=2, clock=clock)
    buckets.take("a")
    buckets.take("b")
    buckets.take("c")  # drops a, the least recently seen
    assert buckets.take("b") > 0 and buckets.take("a") == 0.0


def test_retry_after_rounds_up_to_a_whole_second() -> None:
    assert retry_after_header(0.01) == "1" and retry_after_header(1.2) == "2"
    with pytest.raises(ValueError):
        TokenBuckets(rate=0, burst=1)
