"""Refusals and the failures of the database and Redis are each counted once (README: Metrics).

The stores here are real ones that cannot answer: a SQLite file in no directory, and Redis
at a port nothing listens on.
"""

from __future__ import annotations

import pytest
from dramatiq.brokers.redis import RedisBroker
from redis import RedisError

from server.api.failures import FailureThrottle
from server.errors import ResourceExhausted, Unavailable
from server.providers.builtin import BuiltinProvider
from server.queue import DramatiqJobQueue
from server.ratelimit import DEFAULT_TIERS, RedisRateLimiter
from server.redis_client import RedisWatch, blocking_client
from server.service.access import AccessService
from server.worker.verification import VerifyConfig
from tests.metric_samples import changes, in_process, key
from tests.world import ALICE, World, agent_request, full_request

NOWHERE = "redis://127.0.0.1:1/0"


async def test_a_statement_the_database_cannot_answer_counts_as_one_database_error(
    offline: AccessService,
) -> None:
    before = in_process()

    with pytest.raises(Unavailable):
        await offline.tier_of("acme")

    assert changes(before, in_process()) == {key("agentq_database_errors_total"): 1}


async def test_a_rate_limit_redis_does_not_answer_counts_as_a_redis_error() -> None:
    limiter = RedisRateLimiter(NOWHERE, namespace="metrics-test")
    before = in_process()
    try:
        with pytest.raises(Unavailable):
            await limiter.take("acme", DEFAULT_TIERS["standard"])
    finally:
        await limiter.close()

    assert changes(before, in_process()) == {
        key("agentq_redis_errors_total", operation="rate_limit"): 1
    }


def test_a_job_message_redis_refuses_and_a_failed_ping_count_as_redis_errors() -> None:
    client = blocking_client(NOWHERE, timeout_s=1)
    queue = DramatiqJobQueue(RedisBroker(client=client))  # type: ignore[no-untyped-call]
    watch = RedisWatch(NOWHERE)
    before = in_process()

    with pytest.raises(RedisError):
        queue.enqueue("a job")
    assert watch.check() is False

    assert changes(before, in_process()) == {
        key("agentq_redis_errors_total", operation="send"): 1,
        key("agentq_redis_errors_total", operation="ping"): 1,
    }


def test_a_call_refused_for_too_many_failed_credential_checks_counts_as_throttled() -> None:
    throttle = FailureThrottle(burst=1)
    throttle.failed("203.0.113.7")
    before = in_process()

    with pytest.raises(ResourceExhausted):
        throttle.check("203.0.113.7")

    assert changes(before, in_process()) == {
        key("agentq_refusals_total", reason="auth_throttle"): 1
    }


@pytest.mark.parametrize(("marker", "verified"), [("", "true"), ("[wrong] ", "false")])
async def test_a_completed_adversarial_run_counts_its_verdict_and_debate_rounds(
    world: World, marker: str, verified: str
) -> None:
    agent = await world.agents.create_agent(ALICE, agent_request())
    job_id = await world.jobs.execute(ALICE, agent.id, full_request(f"{marker}Is water wet?"))
    runner = world.runner(BuiltinProvider(latency_ms=0), verify=VerifyConfig())
    before = in_process()

    assert await world.run_job(runner, job_id)

    job = await world.job(job_id)
    assert job is not None and job.debate_rounds >= 1
    counted = changes(before, in_process())
    assert {name: n for name, n in counted.items() if name[0].startswith("agentq_verif")} == {
        key("agentq_verifications_total", verified=verified): 1
    }
    assert counted[key("agentq_debate_rounds_total")] == job.debate_rounds
