"""Rate limits (a token bucket per tenant) and the tiers that size them."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from pydantic import BaseModel, Field
from redis import RedisError

from server.errors import Unavailable

RATE_LIMITER_DOWN = "Rate limiter unavailable"


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


# Refill and take in one step inside Redis, on Redis's clock, so every replica
# shares one bucket per tenant and no two can spend the same token.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return {allowed, tostring(tokens), tostring(now)}
"""


class RedisRateLimiter:
    """Buckets in Redis, shared by every replica.

    The client is asyncio's: a take is one round trip awaited on the event
    loop, where a thread hop per call would cost more than the call itself.
    Its connections belong to the loop that first uses them.
    """

    def __init__(self, url: str, *, namespace: str) -> None:
        self._redis = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._take = self._redis.register_script(_TAKE)
        self._namespace = namespace

    async def take(self, tenant_id: str, tier: Tier) -> Decision:
        """One atomic take; Unavailable (never a pass) when Redis does not answer."""
        key = f"{self._namespace}:ratelimit:{tenant_id}"
        try:
            allowed, tokens, now = await self._take(keys=[key], args=[tier.rate, tier.burst])
        except (RedisError, OSError) as error:
            raise Unavailable(RATE_LIMITER_DOWN) from error
        return _decide(tier, float(tokens), float(now), bool(allowed))

    async def close(self) -> None:
        """Release the connection pool."""
        await self._redis.aclose()
