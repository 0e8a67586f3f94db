"""Minute and day windows and per-key limits of the Redis limiter, against a real Redis:
shared by replicas, one script call per take however many limits, and the same answers
as the in-process limiter of the embedded default.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest

from server.ratelimit import Decision, MemoryRateLimiter, RateLimiter, RedisRateLimiter, Tier
from tests.e2e.own_keys_helpers import clear_of_a_minute_end

ROOMY = Tier(rate=1000, burst=1000)
# Leases are taken for tiers of 20 a second or more: these take ten at a time.
LEASING_KEY = Tier(rate=1000, burst=1000, per_minute=100, per_day=1000)


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as loop:
        yield loop


@pytest.fixture
def replicas(
    redis_url: str, redis_namespace: str, runner: asyncio.Runner
) -> Iterator[list[RedisRateLimiter]]:
    """Two replicas of one deployment: two limiters on the same namespace."""
    made = [RedisRateLimiter(redis_url, namespace=redis_namespace) for _ in range(2)]
    yield made
    for limiter in made:
        runner.run(limiter.close())


@pytest.fixture(params=["memory", "redis"])
def limiter(request: pytest.FixtureRequest, replicas: list[RedisRateLimiter]) -> RateLimiter:
    return MemoryRateLimiter() if request.param == "memory" else replicas[0]


def _take(
    runner: asyncio.Runner, limiter: RateLimiter, tier: Tier, key: tuple[str, Tier] | None = None
) -> Decision:
    return runner.run(limiter.take("acme", tier, key))


def test_a_minute_window_admits_its_count_and_reports_its_end(
    runner: asyncio.Runner, limiter: RateLimiter
) -> None:
    tier = Tier(rate=1000, burst=1000, per_minute=3)
    clear_of_a_minute_end()

    taken = [_take(runner, limiter, tier) for _ in range(4)]

    assert [d.allowed for d in taken] == [True, True, True, False]
    assert [(d.limit, d.remaining) for d in taken] == [(3, 2), (3, 1), (3, 0), (3, 0)]
    minute_end = (math.floor(time.time() / 60) + 1) * 60
    assert {d.reset_at for d in taken} == {minute_end}
    assert 1 <= taken[-1].retry_after_s <= 60


def test_a_day_window_reports_midnight_utc(runner: asyncio.Runner, limiter: RateLimiter) -> None:
    tier = Tier(rate=1000, burst=1000, per_day=2)

    taken = [_take(runner, limiter, tier) for _ in range(3)]

    assert [d.allowed for d in taken] == [True, True, False]
    midnight = (math.floor(time.time() / 86_400) + 1) * 86_400
    assert (taken[-1].limit, taken[-1].reset_at) == (2, midnight)
    assert taken[-1].description == "2 requests per day"


def test_a_keys_tier_binds_the_key_and_a_refusal_by_it_costs_the_tenant_nothing(
    runner: asyncio.Runner, limiter: RateLimiter
) -> None:
    tenant_tier = Tier(rate=1000, burst=1000, per_minute=5)
    key_tier = Tier(rate=1000, burst=1000, per_minute=2)
    clear_of_a_minute_end()

    by_key = [_take(runner, limiter, tenant_tier, ("k1", key_tier)) for _ in range(5)]

    assert [d.allowed for d in by_key] == [True, True, False, False, False]
    assert (by_key[-1].subject, by_key[-1].limit) == ("apikey:k1", 2)
    tenant_only = _take(runner, limiter, tenant_tier)
    assert (tenant_only.allowed, tenant_only.remaining) == (True, 2)
    # The tenant's limit binds its other keys together with it.
    others = [_take(runner, limiter, tenant_tier, ("k2", key_tier)) for _ in range(3)]
    assert [d.allowed for d in others] == [True, True, False]
    assert others[-1].subject == "tenant:acme"


def test_replicas_share_a_keys_window_exactly_even_when_they_take_tokens_ahead(
    runner: asyncio.Runner, replicas: list[RedisRateLimiter]
) -> None:
    clear_of_a_minute_end(margin_s=15)

    allowed = [
        _take(runner, replicas[i % 2], ROOMY, ("k1", LEASING_KEY)).allowed for i in range(130)
    ]

    assert allowed.count(True) <= 100
    assert allowed[:90] == [True] * 90  # tokens held ahead cost a few at most


def test_a_take_is_one_script_call_however_many_limits_it_meets(
    runner: asyncio.Runner, replicas: list[RedisRateLimiter], monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = replicas[0]
    calls: list[Any] = []
    script = limiter._take

    async def counted(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return await script(**kwargs)

    monkeypatch.setattr(limiter, "_take", counted)
    tier = Tier(rate=1, burst=10, per_minute=10, per_day=100)

    _take(runner, limiter, tier, ("k1", Tier(rate=1, burst=10, per_minute=5, per_day=50)))

    assert len(calls) == 1
    assert len(calls[0]["keys"]) == 2  # the tenant's counters and the key's, in one call
