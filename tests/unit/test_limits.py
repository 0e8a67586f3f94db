"""The in-process token bucket admits a burst, refills at its rate and reports its headers."""

from __future__ import annotations

import math
import time

import pytest
from pydantic import ValidationError

from server.ratelimit import Decision, MemoryRateLimiter, Tier

WALL_START = 1_700_000_000.0


class TickingClock:
    """Both clocks the limiter reads: its monotonic clock and the wall clock of reset_at."""

    def __init__(self) -> None:
        self.now = WALL_START

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> TickingClock:
    clock = TickingClock()
    # The limiter reads the wall clock as time.time().
    monkeypatch.setattr(time, "time", clock)
    return clock


@pytest.fixture
def limiter(clock: TickingClock) -> MemoryRateLimiter:
    return MemoryRateLimiter(clock=clock)


def _take(limiter: MemoryRateLimiter, tenant: str, tier: Tier) -> Decision:
    # The memory limiter never waits, so its coroutine ends at its first step.
    try:
        limiter.take(tenant, tier).send(None)
    except StopIteration as done:
        decision: Decision = done.value
        return decision
    raise AssertionError("the memory limiter waited")


def _takes(
    limiter: MemoryRateLimiter, tier: Tier, count: int, tenant: str = "acme"
) -> list[Decision]:
    return [_take(limiter, tenant, tier) for _ in range(count)]


def _refused_after_the_burst(limiter: MemoryRateLimiter, tier: Tier) -> Decision:
    """Take the tier's whole burst, then one more: the refusal."""
    _takes(limiter, tier, tier.burst)
    return _take(limiter, "acme", tier)


def test_a_full_bucket_admits_a_burst_counting_down_what_remains(
    limiter: MemoryRateLimiter,
) -> None:
    decisions = _takes(limiter, Tier(rate=2, burst=5), 5)

    assert [d.allowed for d in decisions] == [True] * 5
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0]
    assert {d.limit for d in decisions} == {5}
    assert {d.retry_after_s for d in decisions} == {0}


def test_the_request_after_the_burst_is_refused_with_a_retry_after_of_at_least_a_second(
    limiter: MemoryRateLimiter,
) -> None:
    refused = _refused_after_the_burst(limiter, Tier(rate=2, burst=5))

    assert not refused.allowed
    assert refused.remaining == 0
    assert refused.limit == 5
    assert refused.retry_after_s == 1


def test_retry_after_is_the_whole_seconds_until_one_request_fits(
    limiter: MemoryRateLimiter, clock: TickingClock
) -> None:
    tier = Tier(rate=0.25, burst=1)
    _take(limiter, "acme", tier)

    assert _take(limiter, "acme", tier).retry_after_s == 4
    clock.advance(2.5)  # 0.625 of a token back: 1.5 s to go
    assert _take(limiter, "acme", tier).retry_after_s == 2


def test_the_bucket_refills_at_its_rate_per_second(
    limiter: MemoryRateLimiter, clock: TickingClock
) -> None:
    tier = Tier(rate=2, burst=5)
    _takes(limiter, tier, 5)

    clock.advance(0.5)  # one token at 2 per second
    assert [d.allowed for d in _takes(limiter, tier, 2)] == [True, False]
    clock.advance(1.0)  # two more
    assert [d.allowed for d in _takes(limiter, tier, 3)] == [True, True, False]


def test_a_refused_request_costs_nothing(limiter: MemoryRateLimiter, clock: TickingClock) -> None:
    tier = Tier(rate=2, burst=5)
    _takes(limiter, tier, 5)
    _takes(limiter, tier, 10)  # all refused

    clock.advance(0.5)

    assert _take(limiter, "acme", tier).allowed


def test_an_idle_bucket_fills_up_to_its_burst_and_no_further(
    limiter: MemoryRateLimiter, clock: TickingClock
) -> None:
    tier = Tier(rate=2, burst=5)
    _takes(limiter, tier, 5)

    clock.advance(3600)

    assert [d.allowed for d in _takes(limiter, tier, 6)] == [True] * 5 + [False]


def test_each_tenant_has_its_own_bucket(limiter: MemoryRateLimiter) -> None:
    tier = Tier(rate=2, burst=3)
    _takes(limiter, tier, 4, tenant="acme")

    globex = _takes(limiter, tier, 3, tenant="globex")

    assert [d.allowed for d in globex] == [True, True, True]
    assert not _take(limiter, "acme", tier).allowed


def test_reset_at_is_the_wall_clock_second_when_the_bucket_is_full_again(
    limiter: MemoryRateLimiter, clock: TickingClock
) -> None:
    tier = Tier(rate=2, burst=5)

    first = _take(limiter, "acme", tier)  # 4 left: full again in 0.5 s
    assert first.reset_at == math.ceil(WALL_START + 0.5)
    decisions = _takes(limiter, tier, 2)  # 2 left: full again in 1.5 s
    assert decisions[-1].reset_at == math.ceil(WALL_START + 1.5)

    clock.advance(10.2)  # full; one take leaves 4
    assert _take(limiter, "acme", tier).reset_at == math.ceil(WALL_START + 10.2 + 0.5)


def test_reset_at_of_a_refused_request_is_when_the_whole_burst_is_back(
    limiter: MemoryRateLimiter,
) -> None:
    refused = _refused_after_the_burst(limiter, Tier(rate=4, burst=10))

    assert refused.reset_at == math.ceil(WALL_START + 10 / 4)


@pytest.mark.parametrize(("rate", "burst"), [(0, 5), (-1, 5), (1, 0)])
def test_a_tier_needs_a_positive_rate_and_a_burst_of_at_least_one(rate: float, burst: int) -> None:
    with pytest.raises(ValidationError):
        Tier(rate=rate, burst=burst)
