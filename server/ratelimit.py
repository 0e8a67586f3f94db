"""Rate limits (a token bucket and optional minute and day windows, per tenant and per
API key) and the tiers that size them."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
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
    """A limit's size: a bucket of `burst` requests refilled at `rate` per second, and
    optionally at most `per_minute` requests per clock minute and `per_day` per day (UTC).
    """

    rate: float = Field(gt=0)
    burst: int = Field(ge=1)
    per_minute: int | None = Field(default=None, ge=1)
    per_day: int | None = Field(default=None, ge=1)


DEFAULT_TIERS = {
    "free": Tier(rate=2, burst=20),
    "standard": Tier(rate=100, burst=200),
    "unlimited": Tier(rate=1_000_000, burst=1_000_000),
    # Plans as vex-api's neighbours sell them: so many a minute, so many a day.
    "starter": Tier(rate=1, burst=60, per_minute=60, per_day=10_000),
    "pro": Tier(rate=5, burst=300, per_minute=300, per_day=100_000),
}
MINUTE_S = 60
DAY_S = 86_400


@dataclass(frozen=True)
class Decision:
    """The answer of every limit in force, with what the rate-limit headers report: the
    tightest of them (the refusing one that frees last, else the one with fewest left).
    """

    allowed: bool
    limit: int
    remaining: int
    reset_at: int  # unix seconds when that limit is whole again
    retry_after_s: int  # seconds until one request fits; 0 when allowed
    subject: str = ""  # whose limit: "tenant:<id>" or "apikey:<id>"
    description: str = ""  # which limit, in words


@dataclass(frozen=True)
class Owner:
    """Whose counters a request is taken from, and the tier that sizes them."""

    subject: str  # "tenant:<id>" or "apikey:<id>"
    tier: Tier


@dataclass(frozen=True)
class Level:
    """One owner's counters after a take: bucket tokens and this window's counts."""

    tokens: float
    in_minute: int
    in_day: int


@dataclass(frozen=True)
class _Reading:
    limit: int
    left: float
    reset_at: float
    description: str
    subject: str
    refill_rate: float | None = None  # a bucket's; None for a window


def _readings(owner: Owner, level: Level, now: float, extra: int) -> list[_Reading]:
    """Each limit of an owner as the headers would report it; `extra` tokens held aside."""
    tier, who = owner.tier, owner.subject
    tokens = level.tokens + extra
    bucket = f"{tier.burst} requests at once, refilled at {tier.rate:g} per second"
    full_at = now + (tier.burst - tokens) / tier.rate
    readings = [_Reading(tier.burst, tokens, full_at, bucket, who, tier.rate)]
    for size, count, window, name in (
        (tier.per_minute, level.in_minute, MINUTE_S, "minute"),
        (tier.per_day, level.in_day, DAY_S, "day"),
    ):
        if size is not None:
            end = (math.floor(now / window) + 1) * window
            left = size - count + extra
            what = f"{size} request{'' if size == 1 else 's'} per {name}"
            readings.append(_Reading(size, left, end, what, who))
    return readings


def _wait_s(reading: _Reading, now: float) -> float:
    """Seconds until one more request fits this limit."""
    if reading.refill_rate is not None:
        return (1 - reading.left) / reading.refill_rate
    return reading.reset_at - now


def decide(
    owners: Sequence[Owner], levels: Sequence[Level], now: float, allowed: bool, extra: int = 0
) -> Decision:
    """The decision over every owner's limits, reporting the tightest."""
    pairs = zip(owners, levels, strict=True)
    readings = [r for owner, level in pairs for r in _readings(owner, level, now, extra)]
    if allowed:
        tightest = min(readings, key=lambda r: (math.floor(r.left), r.limit))
        wait_s = 0
    else:
        waits = [(_wait_s(r, now), r) for r in readings if r.left < 1]
        longest, tightest = max(waits, key=lambda wait: wait[0])
        wait_s = max(1, math.ceil(longest))
    return Decision(
        allowed=allowed,
        limit=tightest.limit,
        remaining=max(0, math.floor(tightest.left)),
        reset_at=math.ceil(tightest.reset_at),
        retry_after_s=wait_s,
        subject=tightest.subject,
        description=tightest.description,
    )


def owners_of(tenant_id: str, tier: Tier, key: tuple[str, Tier] | None) -> list[Owner]:
    """The tenant's counters, and the key's when it has a tier of its own."""
    owners = [Owner(f"tenant:{tenant_id}", tier)]
    if key is not None:
        owners.append(Owner(f"apikey:{key[0]}", key[1]))
    return owners


class RateLimiter(Protocol):
    """Takes one request from a tenant's limits, and a key's (id and tier) when it has
    its own, on the event loop; all of them or none.
    """

    async def take(
        self, tenant_id: str, tier: Tier, key: tuple[str, Tier] | None = None
    ) -> Decision: ...

    async def close(self) -> None: ...


class MemoryRateLimiter:
    """Counters in this process: the embedded default, where there is one process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # Per subject: bucket tokens, when they were counted, minute and its count, day
        # and its count.
        self._state: dict[str, tuple[float, float, int, int, int, int]] = {}
        self._lock = threading.Lock()

    async def take(
        self, tenant_id: str, tier: Tier, key: tuple[str, Tier] | None = None
    ) -> Decision:
        """Refill by the time passed, then take one token from every owner if each has one."""
        owners = owners_of(tenant_id, tier, key)
        wall = time.time()
        minute, day = math.floor(wall / MINUTE_S), math.floor(wall / DAY_S)
        with self._lock:
            now = self._clock()
            levels: list[Level] = []
            allowed = True
            for owner in owners:
                t = owner.tier
                fresh = (float(t.burst), now, minute, 0, day, 0)
                tokens, since, at_minute, in_minute, at_day, in_day = self._state.get(
                    owner.subject, fresh
                )
                tokens = min(float(t.burst), tokens + (now - since) * t.rate)
                level = Level(
                    tokens, in_minute if at_minute == minute else 0, in_day if at_day == day else 0
                )
                levels.append(level)
                allowed = allowed and level.tokens >= 1
                allowed = allowed and (t.per_minute is None or level.in_minute < t.per_minute)
                allowed = allowed and (t.per_day is None or level.in_day < t.per_day)
            spent = 1 if allowed else 0
            levels = [
                Level(lv.tokens - spent, lv.in_minute + spent, lv.in_day + spent) for lv in levels
            ]
            for owner, lv in zip(owners, levels, strict=True):
                self._state[owner.subject] = (lv.tokens, now, minute, lv.in_minute, day, lv.in_day)
        return decide(owners, levels, wall, allowed)

    async def close(self) -> None:
        """Nothing to release."""


# Refill every owner's bucket and roll its windows over, then take up to ARGV[1]
# tokens from all of them (as many as the tightest has), in one step inside Redis, on
# Redis's clock: every replica shares one set of counters per tenant and per key, no
# two can spend the same token, and a request is one round trip however many limits
# it meets. KEYS: one hash per owner; ARGV after the first: rate, burst, per_minute and
# per_day of each (0: no such window).
_TAKE = """
local want = tonumber(ARGV[1])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local minute = math.floor(now / 60)
local day = math.floor(now / 86400)
local states = {}
local granted = want
for i, key in ipairs(KEYS) do
  local base = 2 + (i - 1) * 4
  local rate = tonumber(ARGV[base])
  local burst = tonumber(ARGV[base + 1])
  local per_minute = tonumber(ARGV[base + 2])
  local per_day = tonumber(ARGV[base + 3])
  local s = redis.call('HMGET', key, 'tokens', 'at', 'minute', 'in_minute', 'day', 'in_day')
  local tokens = tonumber(s[1]) or burst
  local at = tonumber(s[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
  local in_minute = 0
  if tonumber(s[3]) == minute then in_minute = tonumber(s[4]) end
  local in_day = 0
  if tonumber(s[5]) == day then in_day = tonumber(s[6]) end
  granted = math.min(granted, math.floor(tokens))
  if per_minute > 0 then granted = math.min(granted, per_minute - in_minute) end
  if per_day > 0 then granted = math.min(granted, per_day - in_day) end
  local ttl = math.ceil(burst / rate) + 60
  if per_day > 0 then ttl = math.max(ttl, math.ceil((day + 1) * 86400 - now) + 60) end
  states[i] = {tokens, in_minute, in_day, ttl}
end
granted = math.max(0, granted)
local reply = {granted, tostring(now)}
for i, key in ipairs(KEYS) do
  local st = states[i]
  local tokens = st[1] - granted
  redis.call('HSET', key, 'tokens', tostring(tokens), 'at', tostring(now),
    'minute', minute, 'in_minute', st[2] + granted, 'day', day, 'in_day', st[3] + granted)
  redis.call('EXPIRE', key, st[4])
  table.insert(reply, tostring(tokens))
  table.insert(reply, st[2] + granted)
  table.insert(reply, st[3] + granted)
end
return reply
"""
# A replica may hold tokens it took ahead for at most this long.
LEASE_S = 0.5
# And never more than this many, nor a tenth of the burst or of the minute's limit.
MAX_LEASE = 100


def lease_size(tier: Tier) -> int:
    """How many tokens a replica takes at once: 1 for small tiers, so they stay exact."""
    size = min(int(tier.rate * LEASE_S), tier.burst // 10, MAX_LEASE)
    if tier.per_minute is not None:
        size = min(size, tier.per_minute // 10)
    return max(1, size)


@dataclass
class _Lease:
    """Tokens a replica took ahead from every owner's counters, spendable until `until`."""

    owners: list[Owner]
    left: int
    until: float  # monotonic
    levels: list[Level]  # the owners' counters when the tokens were taken


class RedisRateLimiter:
    """Counters in Redis, shared by every replica.

    For tiers with room (a rate of 20 a second or more), a replica takes a few
    tokens at once (`lease_size`) and spends them without asking Redis again for
    up to half a second, and never past the end of the clock minute they were
    counted in. A token is still spent once at most, so no tenant or key gets
    past its limit; tokens a replica took and did not spend in time are
    forfeited, which only ever limits harder, and only an owner that is far from
    its limit anyway. The remaining count in the headers is then the counters'
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
        self._leases: dict[tuple[str, str | None], _Lease] = {}

    def _key(self, subject: str) -> str:
        # The tenant's key is what it always was; a key's lives apart from every tenant's.
        kind, _, name = subject.partition(":")
        return f"{self._namespace}:{'ratelimit' if kind == 'tenant' else 'ratelimit-key'}:{name}"

    async def take(
        self, tenant_id: str, tier: Tier, key: tuple[str, Tier] | None = None
    ) -> Decision:
        """Take one token; Unavailable (never a pass) when Redis does not answer."""
        owners = owners_of(tenant_id, tier, key)
        now = self._clock()
        lease_key = (tenant_id, None if key is None else key[0])
        lease = self._leases.get(lease_key)
        if lease is not None and lease.left > 0 and lease.until > now and lease.owners == owners:
            lease.left -= 1
            return decide(owners, lease.levels, time.time(), True, extra=lease.left)
        want = min(lease_size(owner.tier) for owner in owners)
        args: list[float | int] = [want]
        for owner in owners:
            t = owner.tier
            args += [t.rate, t.burst, t.per_minute or 0, t.per_day or 0]
        try:
            reply = await self._take(keys=[self._key(o.subject) for o in owners], args=args)
        except (RedisError, OSError) as error:
            metrics.redis_error("rate_limit")
            raise Unavailable(RATE_LIMITER_DOWN) from error
        granted, at = int(reply[0]), float(reply[1])
        levels = [
            Level(float(reply[i]), int(reply[i + 1]), int(reply[i + 2]))
            for i in range(2, len(reply), 3)
        ]
        if not granted:
            return decide(owners, levels, at, False)
        if want > 1:
            self._forget_spent(now)
            until = now + LEASE_S
            if any(o.tier.per_minute or o.tier.per_day for o in owners):
                # Counted in this minute's window (and day's): never spent in the next.
                until = min(until, now + (math.floor(at / MINUTE_S) + 1) * MINUTE_S - at)
            self._leases[lease_key] = _Lease(owners, granted - 1, until, levels)
        return decide(owners, levels, at, True, extra=granted - 1)

    def _forget_spent(self, now: float) -> None:
        # Leases of tenants that went quiet would otherwise pile up.
        if len(self._leases) >= 1024:
            self._leases = {k: v for k, v in self._leases.items() if v.until > now and v.left}

    async def close(self) -> None:
        """Release the connection pool."""
        await self._redis.aclose()
