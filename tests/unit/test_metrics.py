"""Each thing agentq counts is counted once, where it happens (server/metrics.py).

The services, the runner and the sweeper run on a world's real store (tests/world.py);
the counts are read from prometheus-client's registry before and after, and every sample
that changed must be one the test expects, by exactly what it expects.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from server import metrics
from server.errors import ResourceExhausted
from server.providers.base import ProviderError
from server.store.models import JobStatus
from server.worker.policy import RetryPolicy
from tests.fakes.provider import ScriptedProvider
from tests.metric_samples import (
    attempt_counts,
    changes,
    in_process,
    job_counts,
    key,
    provider_counts,
)
from tests.world import ALICE, ANSWER, World, agent_request, execute_request, sqlite_store, world_on

# The runner of a world names no provider: its calls are counted under this name.
UNNAMED = {"provider": "unnamed", "model": "unnamed"}
QUEUE_WAIT_SUM = "agentq_job_queue_wait_seconds_sum"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_world(request: pytest.FixtureRequest) -> World:
    """The world on SQLite, then on PostgreSQL: the claim reads its times back from each."""
    fixture = "world" if request.param == "sqlite" else "pg_world"
    made: World = request.getfixturevalue(fixture)
    return made


@pytest.fixture
def by_tenant() -> Iterator[None]:
    """The job counters labelled by tenant for one test (AGENTQ_METRICS_TENANT_LABELS)."""
    metrics.configure(tenant_labels=True)
    try:
        yield
    finally:
        metrics.configure(tenant_labels=False)


async def test_a_flow_counts_each_job_transition_and_provider_call_once(any_world: World) -> None:
    world = any_world
    runner = world.runner(ScriptedProvider(ANSWER, ProviderError("Bad request", retryable=False)))
    before, waited_before = in_process(), metrics.REGISTRY.get_sample_value(QUEUE_WAIT_SUM) or 0.0

    agent = await world.agents.create_agent(ALICE, agent_request())
    done, failed, dropped = [
        await world.jobs.execute(ALICE, agent.id, execute_request()) for _ in range(3)
    ]
    world.clock.advance(7)
    assert await world.run_job(runner, done)
    assert await world.run_job(runner, failed)
    await world.jobs.cancel_job(ALICE, dropped)

    assert changes(before, in_process()) == {
        key("agentq_agents_created_total"): 1,
        **job_counts(submitted=3, cancelled=1),
        **attempt_counts(completed=1, failed=1),
        **provider_counts(UNNAMED, calls=2, tokens=ANSWER.tokens_used, fatal=1),
    }
    # Both waited the 7 s from their queueing to their claim, by the database's times.
    assert (metrics.REGISTRY.get_sample_value(QUEUE_WAIT_SUM) or 0.0) - waited_before == 14


async def test_a_retried_attempt_counts_as_retried_and_its_error_as_retryable(
    world: World,
) -> None:
    agent = await world.add_agent()
    job = await world.add_job(agent)
    provider = ScriptedProvider(ProviderError("Provider returned HTTP 503", retryable=True), ANSWER)
    runner = world.runner(provider, policy=RetryPolicy(max_attempts=2, backoff_s=5))
    before = in_process()

    assert await world.run_job(runner, job.id)
    world.clock.advance(5)
    assert await world.run_job(runner, job.id)

    assert changes(before, in_process()) == {
        **attempt_counts(retrying=1, completed=1),
        **provider_counts(UNNAMED, calls=2, tokens=ANSWER.tokens_used, retryable=1),
    }


async def test_deleting_an_agent_counts_the_pending_jobs_it_cancelled(world: World) -> None:
    agent = await world.agents.create_agent(ALICE, agent_request())
    for _ in range(2):
        await world.jobs.execute(ALICE, agent.id, execute_request())
    before = in_process()

    await world.agents.delete_agent(ALICE, agent.id)

    assert changes(before, in_process()) == {key("agentq_jobs_cancelled_total"): 2}


async def test_with_tenant_labels_each_job_counter_is_counted_by_its_tenant(
    world: World, by_tenant: None
) -> None:
    agent = await world.agents.create_agent(ALICE, agent_request())
    runner = world.runner(ScriptedProvider(ANSWER))
    before = in_process()

    job_id = await world.jobs.execute(ALICE, agent.id, execute_request())
    assert await world.run_job(runner, job_id)

    counted = changes(before, in_process())
    tenant = ALICE.tenant_id
    assert {
        name: value for name, value in counted.items() if name[0].startswith("agentq_jobs")
    } == {
        key("agentq_jobs_submitted_total", tenant=tenant): 1,
        key("agentq_jobs_started_total", tenant=tenant): 1,
        key("agentq_jobs_completed_total", tenant=tenant): 1,
    }


async def test_a_capped_submit_counts_as_a_cap_refusal_and_queues_nothing() -> None:
    async with world_on(await sqlite_store(), max_unfinished_jobs=0) as world:
        agent = await world.agents.create_agent(ALICE, agent_request())
        before = in_process()

        with pytest.raises(ResourceExhausted):
            await world.jobs.execute(ALICE, agent.id, execute_request())

        assert changes(before, in_process()) == {key("agentq_refusals_total", reason="cap"): 1}


async def test_the_sweeper_counts_each_lost_run_by_its_outcome_and_each_message_resent(
    world: World,
) -> None:
    agent = await world.add_agent()
    policy = world.policy
    lapsed = world.clock() - timedelta(seconds=policy.lease_s + 60)
    for attempts, cancel in ((1, False), (policy.max_attempts, False), (1, True)):
        await world.add_job(
            agent,
            status=JobStatus.RUNNING.value,
            attempts=attempts,
            started_at=lapsed,
            run_token="a lost attempt",
            lease_expires_at=lapsed + timedelta(seconds=policy.lease_s),
            cancel_requested=cancel,
        )
    overdue = world.clock() - timedelta(seconds=120)
    await world.add_job(agent, queued_at=overdue, next_run_at=overdue, enqueued_at=overdue)
    before = in_process()

    await world.recovery(requeue_after_s=60).sweep()

    assert changes(before, in_process()) == {
        key("agentq_sweeper_recovered_total", outcome="retried"): 1,
        key("agentq_sweeper_recovered_total", outcome="failed"): 1,
        key("agentq_sweeper_recovered_total", outcome="cancelled"): 1,
        key("agentq_jobs_retried_total"): 1,
        key("agentq_jobs_failed_total"): 1,
        key("agentq_jobs_cancelled_total"): 1,
        # Only the overdue job's message: the retried job's first message is not a resend.
        key("agentq_sweeper_resent_total"): 1,
    }


def test_the_pending_and_running_gauges_count_at_most_once_per_interval() -> None:
    counted: list[int] = []

    def count() -> dict[str, int]:
        counted.append(1)
        return {"pending": 4}

    gauges = metrics.JobCounts(count, max_age_s=3600)
    first = {family.name: family.samples[0].value for family in gauges.collect()}
    second = {family.name: family.samples[0].value for family in gauges.collect()}

    assert first == second == {"agentq_jobs_pending": 4, "agentq_jobs_running": 0}
    assert len(counted) == 1
    assert [family.name for family in gauges.describe()] == [
        "agentq_jobs_pending",
        "agentq_jobs_running",
    ]
    assert len(counted) == 1  # naming the gauges asks the database nothing


def test_gauges_the_database_cannot_count_are_left_out_and_the_error_counted() -> None:
    def count() -> dict[str, int]:
        raise ConnectionError("the database is down")

    before = in_process()

    assert list(metrics.JobCounts(count).collect()) == []
    assert changes(before, in_process()) == {key("agentq_database_errors_total"): 1}
