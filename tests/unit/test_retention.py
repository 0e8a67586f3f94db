"""The recovery sweeper ends retention: finished jobs go with their events, keys and agents."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Column, Table, func, select

from server.errors import NotFound
from server.store.models import JobStatus
from server.store.records import AgentRecord
from server.store.store import Tables
from server.store.tables import agents, events, idempotency_keys, jobs
from server.worker.policy import RetryPolicy
from server.worker.runner import AttemptRunner
from tests.fakes.provider import ScriptedProvider
from tests.world import ALICE, ANSWER, World, agent_request, execute_request

POLICY = RetryPolicy(max_attempts=3, time_limit_s=120, lease_grace_s=15)
REQUEUE_AFTER_S = 30.0
RETENTION_S = 86400.0


class Tenant:
    """ALICE's agents and jobs, made through the world's services and run by its worker."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.runner: AttemptRunner = world.runner(ScriptedProvider(*(ANSWER for _ in range(10))))

    async def execute(self, agent: AgentRecord, request_id: str | None = None) -> str:
        spec = execute_request()
        return await self.world.jobs.execute(ALICE, agent.id, spec, request_id=request_id)

    async def completed(self, agent: AgentRecord, request_id: str | None = None) -> str:
        job_id = await self.execute(agent, request_id)
        assert await self.world.run_job(self.runner, job_id)
        return job_id

    async def new_agent(self, name: str) -> AgentRecord:
        return await self.world.agents.create_agent(ALICE, agent_request(name))

    async def expire(self) -> int:
        return await self.world.recovery(requeue_after_s=REQUEUE_AFTER_S).expire()


@pytest.fixture
def tenant(world: World) -> Tenant:
    world.policy, world.retention_s = POLICY, RETENTION_S
    return Tenant(world)


@pytest.fixture
async def agent(world: World) -> AgentRecord:
    return await world.add_agent(tenant_id=ALICE.tenant_id)


async def _ids(world: World, column: Column[Any]) -> set[str]:
    """Every distinct value of a column, of any tenant."""
    return {row[column.key] for row in await world.store.db.all(select(column))}


async def _count(world: World, table: Table) -> int:
    row = await world.store.db.one(select(func.count()).select_from(table))
    assert row is not None
    return int(next(iter(row.values())))


async def test_retention_deletes_finished_jobs_past_it_with_their_events_and_keys(
    world: World, tenant: Tenant, agent: AgentRecord
) -> None:
    old_done = await tenant.completed(agent, "old-done")
    old_cancelled = await tenant.execute(agent, "old-cancelled")
    await world.jobs.cancel_job(ALICE, old_cancelled)
    old_pending = await tenant.execute(agent)
    old_running = await world.add_job(
        agent,
        status=JobStatus.RUNNING.value,
        attempts=1,
        started_at=world.clock.now,
        run_token="token-of-attempt-1",
        lease_expires_at=world.clock.now + timedelta(seconds=RETENTION_S * 2),
    )
    world.clock.advance(1)
    just_kept = await tenant.completed(agent, "just-kept")
    world.clock.advance(RETENTION_S)
    young = await tenant.completed(agent, "young")

    assert await tenant.expire() == 2

    kept = {old_pending, old_running.id, just_kept, young}
    assert await _ids(world, jobs.c.id) == kept
    assert await _ids(world, events.c.job_id) == kept
    assert sorted(await _ids(world, idempotency_keys.c.key)) == ["just-kept", "young"]
    for gone in (old_done, old_cancelled):
        with pytest.raises(NotFound):
            await world.jobs.get_job(ALICE, gone)
    assert (await world.jobs.get_job(ALICE, just_kept)).response == ANSWER.text


async def test_a_request_id_whose_job_retention_removed_starts_a_new_job(
    world: World, tenant: Tenant, agent: AgentRecord
) -> None:
    old = await tenant.completed(agent, "req-1")
    world.clock.advance(RETENTION_S + 1)
    await tenant.expire()

    again = await tenant.execute(agent, "req-1")

    assert again != old
    assert (await world.jobs.get_job(ALICE, again)).status == JobStatus.PENDING


async def test_retention_deletes_in_batches_each_committed_on_its_own(
    world: World, tenant: Tenant, agent: AgentRecord, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("server.service.recovery.BATCH", 2)
    long_ago = world.clock.now - timedelta(seconds=RETENTION_S + 60)
    for n in range(5):
        await world.add_job(
            agent,
            id=f"00000000-0000-4000-8000-00000000000{n}",
            queued_at=long_ago,
            next_run_at=long_ago,
            enqueued_at=long_ago,
            status=JobStatus.COMPLETED.value,
            attempts=1,
            completed_at=long_ago,
        )
    assert await _count(world, events) == 5  # each job's QUEUED event
    left_at_each_start: list[int] = []
    transaction = world.store.transaction

    @asynccontextmanager
    async def counted() -> AsyncIterator[Tables]:
        # What each transaction finds: what the ones before it committed.
        left_at_each_start.append(await _count(world, jobs))
        async with transaction() as tx:
            yield tx

    monkeypatch.setattr(world.store, "transaction", counted)

    assert await tenant.expire() == 5

    assert left_at_each_start == [5, 3, 1]
    assert (await _count(world, jobs), await _count(world, events)) == (0, 0)


async def test_retention_removes_deleted_agents_once_their_last_job_is_gone(
    world: World, tenant: Tenant, agent: AgentRecord
) -> None:
    await tenant.completed(agent)
    await world.agents.delete_agent(ALICE, agent.id)
    jobless = await tenant.new_agent("Jobless")
    await world.agents.delete_agent(ALICE, jobless.id)
    live = await tenant.new_agent("Live")
    world.clock.advance(RETENTION_S)
    recent = await tenant.new_agent("Recent")
    recent_job = await tenant.completed(recent)
    await world.agents.delete_agent(ALICE, recent.id)
    world.clock.advance(1)

    await tenant.expire()

    assert await _ids(world, agents.c.id) == {live.id, recent.id}
    assert (await world.jobs.get_job(ALICE, recent_job)).status == JobStatus.COMPLETED

    world.clock.advance(RETENTION_S)
    await tenant.expire()

    assert await _ids(world, agents.c.id) == {live.id}
