"""Rate limits (a token bucket per tenant) and the tiers that size them."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel, Field
from redis import RedisError

from server import metrics
from server.errors import Unavailable
from server.redis_client import asyncio_client

RATE_LIMITER_DOWN = "Rate limiter unavailable"
# Seconds a take waits for Redis's reply before the request is refused.
REPLY_TIMEOUT_S = 2.0


class Tier(BaseModel):
    """A bucket's size: `burst` requests at once, refilled at `rate` per second."""

    rate: float = Field(gt=0)
    burst: int = Field(ge=1)


DEFAULT_TIERS = {
    "free": Tier(rate=2, burst=20),
    "standard": Tier(rate=100, burst=200),
    "unlimited": Tier(rate=1_000_000, burst=1_000_000),
}


@dataclass(frozen=True)
class Decision:
    """The bucket's answer, with what the rate-limit headers report."""

    allowed: bool
    limit: int
    remaining: int
    reset_at: int  # unix seconds when the bucket is full again
    retry_after_s: int  # seconds until one request fits; 0 when allowed


def _decide(tier: Tier, tokens: float, now: float, allowed: bool) -> Decision:
    refill_s = (tier.burst - tokens) / tier.rate
    wait_s = 0 if allowed else max(1, math.ceil((1 - tokens) / tier.rate))
    return Decision(
        allowed=allowed,
        limit=tier.burst,
        remaining=max(0, math.floor(tokens)),
        reset_at=math.ceil(now + refill_s),
        retry_after_s=wait_s,
    )


class RateLimiter(Protocol):
    """Takes one request from a tenant's bucket, on the event loop."""

    async def take(self, tenant_id: str, tier: Tier) -> Decision: ...

    async def close(self) -> None: ...


class MemoryRateLimiter:
    """Buckets in this process: the embedded default, where there is one process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    async def take(self, tenant_id: str, tier: Tier) -> Decision:
        """Refill by the time passed, then take one token if there is one."""
        with self._lock:
            now = self._clock()
            tokens, since = self._buckets.get(tenant_id, (float(tier.burst), now))
            tokens = min(float(tier.burst), tokens + (now - since) * tier.rate)
            allowed = tokens >= 1
            if allowed:
                tokens -= 1
            self._buckets[tenant_id] = (tokens, now)
        return _decide(tier, tokens, time.time(), allowed)

    async def close(self) -> None:
        """Nothing to release."""


# Refill, then take up to ARGV[3] tokens in one step inside Redis, on Redis's
# clock, so every replica shares one bucket per tenant and no two can spend the
# same token.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return {granted, tostring(tokens), tostring(now)}
"""
# A replica may hold tokens it took ahead for at most this long.
LEASE_S = 0.5
# And never more than this many, nor a tenth of the burst.
MAX_LEASE = 100


def lease_size(tier: Tier) -> int:
    """How many tokens a replica takes at once: 1 for small tiers, so they stay exact."""
    return max(1, min(int(tier.rate * LEASE_S), tier.burst // 10, MAX_LEASE))


@dataclass
class _Lease:
    """Tokens a replica took ahead from a tenant's bucket, spendable until `until`."""

    tier: Tier
    left: int
    until: float  # monotonic
    bucket: float  # tokens in the shared bucket when they were taken


class RedisRateLimiter:
    """Buckets in Redis, shared by every replica.

    For a tier with room (a rate of 20 a second or more), a replica takes a few
    tokens at once (`lease_size`) and spends them without asking Redis again for
    up to half a second. A token is still spent once at most, so no tenant gets
    past its limit; tokens a replica took and did not spend in time are
    forfeited, which only ever limits harder, and only a tenant that is far from
    its limit anyway. The remaining count in the headers is then the bucket's
    level when the tokens were taken plus those still held.

    The client is asyncio's: a take is one round trip awaited on the event
    loop, where a thread hop per call would cost more than the call itself.
    Its connections belong to the loop that first uses them. A take on a
    pooled connection that died (Redis restarted) is retried once on a fresh
    one, so only a Redis that is down answers Unavailable.
    """

    def __init__(
        self, url: str, *, namespace: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._redis = asyncio_client(url, timeout_s=REPLY_TIMEOUT_S)
        self._take = self._redis.register_script(_TAKE)
        self._namespace = namespace
        self._clock = clock
        self._leases: dict[str, _Lease] = {}

    async def take(self, tenant_id: str, tier: Tier) -> Decision:
        """Take one token; Unavailable (never a pass) when Redis does not answer."""
        now = self._clock()
        lease = self._leases.get(tenant_id)
        if lease is not None and lease.left > 0 and lease.until > now and lease.tier == tier:
            lease.left -= 1
            return _decide(tier, lease.bucket + lease.left, time.time(), True)
        want = lease_size(tier)
        key = f"{self._namespace}:ratelimit:{tenant_id}"
        try:
            granted, tokens, at = await self._take(keys=[key], args=[tier.rate, tier.burst, want])
        except (RedisError, OSError) as error:
            metrics.redis_error("rate_limit")
            raise Unavailable(RATE_LIMITER_DOWN) from error
        bucket = float(tokens)
        if not granted:
            return _decide(tier, bucket, float(at), False)
        if want > 1:
            self._forget_spent(now)
            self._leases[tenant_id] = _Lease(tier, int(granted) - 1, now + LEASE_S, bucket)
        return _decide(tier, bucket + int(granted) - 1, float(at), True)

    def _forget_spent(self, now: float) -> None:
        # Leases of tenants that went quiet would otherwise pile up.
        if len(self._leases) >= 1024:
            self._leases = {k: v for k, v in self._leases.items() if v.until > now and v.left}

    async def close(self) -> None:
        """Release the connection pool."""
        await self._redis.aclose()
