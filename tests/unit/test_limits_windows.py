"""Per-minute and per-day windows and per-key limits of the in-process limiter, on a
ticking clock: the tightest limit wins, and its figures are what the headers report.
"""

from __future__ import annotations

import math
import time

import pytest

from server.ratelimit import DEFAULT_TIERS, Decision, MemoryRateLimiter, Tier, lease_size
from tests.unit.test_limits import TickingClock

# 20 s into a minute of a day: windows end at START + 40 and at the next midnight (UTC).
START = 1_700_000_000.0 - (1_700_000_000 % 60) + 20
NEXT_MINUTE = START + 40
NEXT_DAY = (math.floor(START / 86_400) + 1) * 86_400
ROOMY = Tier(rate=1000, burst=1000)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> TickingClock:
    """The clock of test_limits.py, started 20 s into a minute."""
    clock = TickingClock()
    clock.now = START
    monkeypatch.setattr(time, "time", clock)
    return clock


@pytest.fixture
def limiter(clock: TickingClock) -> MemoryRateLimiter:
    return MemoryRateLimiter(clock=clock)


def _take(limiter: MemoryRateLimiter, tier: Tier, key: tuple[str, Tier] | None = None) -> Decision:
    # The memory limiter never waits, so its coroutine ends at its first step.
    try:
        limiter.take("acme", tier, key).send(None)
    except StopIteration as done:
        decision: Decision = done.value
        return decision
    raise AssertionError("the memory limiter waited")


def test_a_minute_window_admits_its_count_then_refuses_until_the_next_minute(
    limiter: MemoryRateLimiter, clock: TickingClock
) -> None:
    tier = Tier(rate=1000, burst=1000, per_minute=3)

    taken = [_take(limiter, tier) for _ in range(4)]

    assert [d.allowed for d in taken] == [True, True, True, False]
    # The window is tighter than the bucket of 1000: the headers report it.
    assert [(d.limit, d.remaining) for d in taken] == [(3, 2), (3, 1), (3, 0), (3, 0)]
    assert {d.reset_at for d in taken} == {NEXT_MINUTE}
    refused = taken[-1]
    assert refused.retry_after_s == 40
    assert refused.subject == "tenant:acme" and refused.description == "3 requests per minute"
    clock.advance(39.5)
    assert not _take(limiter, tier).allowed
    clock.advance(0.5)  # the next minute
    assert _take(limiter, tier).allowed


def test_a_day_window_counts_across_minutes_and_ends_at_midnight_utc(
    limiter: MemoryRateLimiter, clock: TickingClock
) -> None:
    tier = Tier(rate=1000, burst=1000, per_minute=10, per_day=2)

    first = _take(limiter, tier)
    clock.advance(120)
    second, third = _take(limiter, tier), _take(limiter, tier)

    assert (first.allowed, second.allowed, third.allowed) == (True, True, False)
    assert (third.limit, third.remaining, third.reset_at) == (2, 0, NEXT_DAY)
    assert third.retry_after_s == math.ceil(NEXT_DAY - clock.now)
    assert third.description == "2 requests per day"
    clock.now = NEXT_DAY
    assert _take(limiter, tier).allowed


def test_a_key_with_a_tier_of_its_own_is_limited_by_it_and_its_tenant_by_the_tenants(
    limiter: MemoryRateLimiter,
) -> None:
    key_tier = Tier(rate=1000, burst=1000, per_minute=2)

    by_key = [_take(limiter, ROOMY, ("k1", key_tier)) for _ in range(3)]

    assert [d.allowed for d in by_key] == [True, True, False]
    assert (by_key[-1].subject, by_key[-1].limit) == ("apikey:k1", 2)
    # Another key of the tenant, and the tenant's other callers, are not held back.
    assert _take(limiter, ROOMY, ("k2", key_tier)).allowed
    assert _take(limiter, ROOMY).allowed


def test_the_tenants_limit_binds_every_key_of_the_tenant_together(
    limiter: MemoryRateLimiter,
) -> None:
    tenant_tier = Tier(rate=1000, burst=1000, per_minute=3)
    key_tier = Tier(rate=1000, burst=1000, per_minute=10)

    taken = [_take(limiter, tenant_tier, (f"k{i % 2}", key_tier)) for i in range(4)]

    assert [d.allowed for d in taken] == [True, True, True, False]
    assert (taken[-1].subject, taken[-1].limit) == ("tenant:acme", 3)


def test_a_request_refused_by_the_key_costs_its_tenant_nothing(
    limiter: MemoryRateLimiter,
) -> None:
    tenant_tier = Tier(rate=1000, burst=1000, per_minute=5)
    key_tier = Tier(rate=1000, burst=1000, per_minute=1)
    _take(limiter, tenant_tier, ("k1", key_tier))

    for _ in range(10):
        assert not _take(limiter, tenant_tier, ("k1", key_tier)).allowed

    assert _take(limiter, tenant_tier).remaining == 3  # 5, less the two it admitted


def test_the_headers_report_the_limit_with_the_fewest_requests_left(
    limiter: MemoryRateLimiter,
) -> None:
    # The bucket (5) is tighter than the minute (100) until the key's minute (3) is.
    tenant_tier = Tier(rate=0.001, burst=5, per_minute=100)
    key_tier = Tier(rate=1000, burst=1000, per_minute=3)

    first = _take(limiter, tenant_tier)
    by_key = _take(limiter, tenant_tier, ("k1", key_tier))

    assert (first.limit, first.remaining, first.subject) == (5, 4, "tenant:acme")
    assert (by_key.limit, by_key.remaining, by_key.subject) == (3, 2, "apikey:k1")


def test_a_refusal_names_the_limit_that_frees_last(limiter: MemoryRateLimiter) -> None:
    # Both the minute and the day are spent: only the day's end lets a request through.
    tier = Tier(rate=1000, burst=1000, per_minute=1, per_day=1)
    _take(limiter, tier)

    refused = _take(limiter, tier)

    assert (refused.limit, refused.reset_at, refused.description) == (
        1,
        NEXT_DAY,
        "1 request per day",
    )


def test_the_plans_are_tiers_of_their_own_and_windows_shrink_the_lease() -> None:
    assert DEFAULT_TIERS["starter"].per_minute == 60
    assert DEFAULT_TIERS["starter"].per_day == 10_000
    assert DEFAULT_TIERS["pro"].per_minute == 300
    assert DEFAULT_TIERS["pro"].per_day == 100_000
    # A tenth of the minute's limit at most, so a replica never holds much of it.
    assert lease_size(Tier(rate=1000, burst=1000, per_minute=50)) == 5
    assert lease_size(Tier(rate=1000, burst=1000, per_minute=5)) == 1
