"""The Redis token bucket against a real Redis: one bucket per tenant shared by replicas."""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import pytest
import redis
from redis.typing import EncodableT, KeyT

from server.errors import Unavailable
from server.ratelimit import (
    LEASE_S,
    Decision,
    MemoryRateLimiter,
    RedisRateLimiter,
    Tier,
    lease_size,
)

# So slow that a test never sees a token come back (one in 1000 s).
NO_REFILL = 0.001


class Replica:
    """A Redis limiter driven from test code on one event loop, its connections' loop."""

    def __init__(self, limiter: RedisRateLimiter, runner: asyncio.Runner) -> None:
        self.limiter = limiter
        self._runner = runner

    def take(self, tenant_id: str, tier: Tier) -> Decision:
        return self._runner.run(self.limiter.take(tenant_id, tier))


MakeLimiter = Callable[[], Replica]


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as loop:
        yield loop


@pytest.fixture
def make_limiter(
    redis_url: str, redis_namespace: str, runner: asyncio.Runner
) -> Iterator[MakeLimiter]:
    """Builds limiters on the same namespace, as replicas of one deployment are."""
    made: list[RedisRateLimiter] = []

    def make() -> Replica:
        made.append(RedisRateLimiter(redis_url, namespace=redis_namespace))
        return Replica(made[-1], runner)

    yield make
    for limiter in made:
        runner.run(limiter.close())


def test_a_full_bucket_admits_a_burst_then_refuses_with_a_retry_after(
    make_limiter: MakeLimiter,
) -> None:
    limiter, tier = make_limiter(), Tier(rate=NO_REFILL, burst=5)
    before = time.time()

    decisions = [limiter.take("acme", tier) for _ in range(6)]

    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0]
    assert {d.limit for d in decisions} == {5}
    assert [d.retry_after_s for d in decisions[:5]] == [0] * 5
    assert decisions[5].retry_after_s >= 1
    # Empty at 0.001 a second: full again in 5000 s, by Redis's clock.
    assert before + 5000 - 5 <= decisions[5].reset_at <= time.time() + 5000 + 5


def test_the_bucket_refills_at_its_rate(make_limiter: MakeLimiter) -> None:
    limiter, tier = make_limiter(), Tier(rate=10, burst=2)
    assert [limiter.take("acme", tier).allowed for _ in range(3)] == [True, True, False]

    time.sleep(0.25)  # two and a half tokens at 10 a second, capped at the burst of two

    assert [limiter.take("acme", tier).allowed for _ in range(3)] == [True, True, False]


def test_each_tenant_has_its_own_bucket(make_limiter: MakeLimiter) -> None:
    limiter, tier = make_limiter(), Tier(rate=NO_REFILL, burst=2)
    for _ in range(3):
        limiter.take("acme", tier)

    assert [limiter.take("globex", tier).allowed for _ in range(3)] == [True, True, False]
    assert not limiter.take("acme", tier).allowed


def test_two_replicas_share_one_bucket_per_tenant(make_limiter: MakeLimiter) -> None:
    first, second, tier = make_limiter(), make_limiter(), Tier(rate=NO_REFILL, burst=4)

    taken = [replica.take("acme", tier) for replica in (first, second, first, second, first)]

    assert [d.allowed for d in taken] == [True, True, True, True, False]
    assert [d.remaining for d in taken] == [3, 2, 1, 0, 0]


def test_fifty_concurrent_requests_against_a_burst_of_twenty_admit_exactly_twenty(
    make_limiter: MakeLimiter, runner: asyncio.Runner
) -> None:
    replicas, tier = [make_limiter(), make_limiter()], Tier(rate=NO_REFILL, burst=20)

    async def race() -> list[Decision]:
        # All 50 are in flight at once, over both replicas' connections.
        takes = [replicas[i % 2].limiter.take("acme", tier) for i in range(50)]
        return await asyncio.gather(*takes)

    allowed = [d.allowed for d in runner.run(race())]

    assert len(allowed) == 50
    assert allowed.count(True) == 20


def test_a_bucket_expires_from_redis_once_it_would_be_full_anyway(
    make_limiter: MakeLimiter, redis_url: str, redis_namespace: str
) -> None:
    make_limiter().take("acme", Tier(rate=1, burst=10))

    client = redis.Redis.from_url(redis_url)
    try:
        ttl = client.ttl(f"{redis_namespace}:ratelimit:acme")
    finally:
        client.close()
    assert 0 < ttl <= math.ceil(10 / 1) + 60


def test_the_redis_and_memory_limiters_agree_on_a_burst(
    make_limiter: MakeLimiter, runner: asyncio.Runner
) -> None:
    tier = Tier(rate=NO_REFILL, burst=3)
    redis_limiter, memory = make_limiter(), MemoryRateLimiter()

    in_redis = [redis_limiter.take("acme", tier) for _ in range(4)]
    in_memory = [runner.run(memory.take("acme", tier)) for _ in range(4)]

    assert [(d.allowed, d.remaining, d.limit) for d in in_redis] == [
        (d.allowed, d.remaining, d.limit) for d in in_memory
    ]


def test_an_unreachable_redis_is_unavailable_never_a_pass(runner: asyncio.Runner) -> None:
    limiter = RedisRateLimiter("redis://127.0.0.1:1/0", namespace="agentq-test-unreachable")
    try:
        with pytest.raises(Unavailable) as caught:
            runner.run(limiter.take("acme", Tier(rate=1, burst=1)))
    finally:
        runner.run(limiter.close())

    assert caught.value.message == "Rate limiter unavailable"


class Ticking:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _counting_calls(
    limiter: RedisRateLimiter, monkeypatch: pytest.MonkeyPatch
) -> list[Sequence[KeyT] | None]:
    """Records each round trip the limiter makes to Redis: the keys of its script call."""
    calls: list[Sequence[KeyT] | None] = []
    script = limiter._take

    async def counted(
        keys: Sequence[KeyT] | None = None, args: Iterable[EncodableT] | None = None
    ) -> object:
        calls.append(keys)
        return await script(keys=keys, args=args)

    monkeypatch.setattr(limiter, "_take", counted)
    return calls


def test_small_tiers_take_one_token_per_round_trip() -> None:
    assert [lease_size(Tier(rate=r, burst=b)) for r, b in [(2, 20), (1, 10), (NO_REFILL, 5)]] == [
        1,
        1,
        1,
    ]
    assert lease_size(Tier(rate=100, burst=200)) == 20
    assert lease_size(Tier(rate=1_000_000, burst=1_000_000)) == 100


def test_a_roomy_tier_asks_redis_once_per_lease_and_counts_down_what_remains(
    make_limiter: MakeLimiter, monkeypatch: pytest.MonkeyPatch
) -> None:
    replica, tier = make_limiter(), Tier(rate=NO_REFILL * 1e6, burst=1000)  # 1000/s
    calls = _counting_calls(replica.limiter, monkeypatch)

    decisions = [replica.take("acme", tier) for _ in range(250)]

    assert all(d.allowed for d in decisions)
    assert len(calls) == 3  # leases of 100
    # The first lease: 100 of 1000 taken, spent one by one.
    assert [d.remaining for d in decisions[:100]] == list(range(999, 899, -1))


def test_replicas_taking_ahead_never_admit_more_than_the_bucket(
    make_limiter: MakeLimiter,
) -> None:
    replicas, tier = [make_limiter(), make_limiter()], Tier(rate=20, burst=100)
    assert lease_size(tier) == 10
    started = time.monotonic()

    allowed = [replicas[i % 2].take("acme", tier).allowed for i in range(300)]

    refilled = math.ceil(20 * (time.monotonic() - started))
    assert 100 <= allowed.count(True) <= 100 + refilled


def test_tokens_taken_ahead_and_not_spent_in_time_are_forfeited(
    redis_url: str, redis_namespace: str, runner: asyncio.Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Ticking()
    limiter = RedisRateLimiter(redis_url, namespace=redis_namespace, clock=clock)
    tier = Tier(rate=20, burst=10_000)
    calls = _counting_calls(limiter, monkeypatch)
    try:
        runner.run(limiter.take("acme", tier))  # takes 10, spends 1
        runner.run(limiter.take("acme", tier))  # from the lease
        clock.now += LEASE_S + 0.01
        runner.run(limiter.take("acme", tier))  # the lease is over: Redis again
    finally:
        runner.run(limiter.close())

    assert len(calls) == 2


class PrivateRedis:
    """A redis-server of the test's own on a free port, to kill and start again there."""

    def __init__(self, directory: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._directory = directory
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and return once it answers PING."""
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self._directory)]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise AssertionError("redis-server did not start") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL, as when the machine or container dies; nothing is saved."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None

    def restart(self) -> None:
        """Kill it and start an empty one on the same port."""
        self.kill()
        self.start()


def private_redis_server(directory: Path) -> Iterator[PrivateRedis]:
    """Yield a started PrivateRedis, killed afterwards; skip (fail in CI) without redis-server."""
    if shutil.which("redis-server") is None:
        reason = "redis-server is not on PATH; tests that restart Redis need their own"
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    server = PrivateRedis(directory)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A started redis-server of this test alone, which it may kill and restart."""
    yield from private_redis_server(tmp_path)


def test_the_first_takes_after_redis_restarts_are_answered(
    private_redis: PrivateRedis, runner: asyncio.Runner
) -> None:
    limiter = RedisRateLimiter(private_redis.url, namespace="agentq-test")
    tier = Tier(rate=NO_REFILL, burst=100)

    async def burst() -> list[Decision]:
        # Ten at once: ten connections in the pool, every one of them stale after the restart.
        return await asyncio.gather(*[limiter.take(f"tenant-{i}", tier) for i in range(10)])

    try:
        assert all(d.allowed for d in runner.run(burst()))
        private_redis.restart()

        first = runner.run(limiter.take("acme", tier))
        after = runner.run(burst())
    finally:
        runner.run(limiter.close())

    assert first.allowed
    # The restarted Redis is empty: every bucket starts full again.
    assert first.remaining == 99
    assert all(d.allowed for d in after)


def test_a_redis_that_stays_down_after_a_restart_is_still_unavailable(
    private_redis: PrivateRedis, runner: asyncio.Runner
) -> None:
    limiter = RedisRateLimiter(private_redis.url, namespace="agentq-test")
    tier = Tier(rate=NO_REFILL, burst=100)
    try:
        runner.run(limiter.take("acme", tier))
        private_redis.kill()
        with pytest.raises(Unavailable) as caught:
            runner.run(limiter.take("acme", tier))
    finally:
        runner.run(limiter.close())

    assert caught.value.message == "Rate limiter unavailable"
