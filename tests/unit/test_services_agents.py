"""The agent service keeps tenants apart, and deleting an agent stops its jobs.

Executes are in test_services_execute and test_services_idempotency; lists in test_paging.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import pytest

from server.auth.principal import Principal
from server.errors import NotFound
from server.providers.base import Completion
from server.store.models import JobStatus
from server.store.records import AgentRecord
from server.validation import agent_spec
from server.worker.runner import CancelSignal
from tests.fakes.provider import ScriptedProvider
from tests.world import ALICE, BOB, World, agent_request, execute_request, full_request


async def _stored(world: World, agent_id: str) -> AgentRecord:
    found = await world.agent(agent_id)
    assert found is not None
    return found


# Agents.


async def test_create_agent_stores_the_trimmed_agent_in_the_tenant_of_the_caller(
    world: World,
) -> None:
    spec = agent_spec(
        name="  Research Bot  ", role="\n You research things. \t", max_depth=7, spawn_shadow=True
    )

    created = await world.agents.create_agent(ALICE, spec)

    stored = await _stored(world, created.id)
    assert stored.tenant_id == "acme"  # the token's tenant_id, not its subject
    assert (stored.name, stored.role, stored.max_depth, stored.spawn_shadow) == (
        "Research Bot",
        "You research things.",
        7,
        True,
    )
    assert (stored.generation, stored.fitness, stored.created_at) == (0, 0.0, world.clock.now)
    assert created.id == str(uuid.UUID(created.id))  # lowercase, hyphenated


async def test_each_created_agent_gets_its_own_id(world: World) -> None:
    first = await world.agents.create_agent(ALICE, agent_request("One"))
    second = await world.agents.create_agent(ALICE, agent_request("Two"))

    assert first.id != second.id
    names = {(await _stored(world, first.id)).name, (await _stored(world, second.id)).name}
    assert names == {"One", "Two"}


async def test_get_agent_returns_the_callers_agent(world: World, agent: AgentRecord) -> None:
    found = await world.agents.get_agent(ALICE, agent.id)

    assert (found.id, found.name, found.tenant_id) == (agent.id, "Researcher", "acme")


async def test_get_agent_of_another_tenant_answers_exactly_like_an_unknown_id(
    world: World, agent: AgentRecord
) -> None:
    with pytest.raises(NotFound) as other_tenant:
        await world.agents.get_agent(BOB, agent.id)
    with pytest.raises(NotFound) as unknown:
        await world.agents.get_agent(BOB, str(uuid.uuid4()))

    assert other_tenant.value.message == unknown.value.message == "Agent not found"
    assert str(other_tenant.value) == str(unknown.value)


async def test_another_user_of_the_same_tenant_sees_the_agent(
    world: World, agent: AgentRecord
) -> None:
    colleague = Principal(subject="carol", role="agent", tenant_id="acme")

    assert (await world.agents.get_agent(colleague, agent.id)).id == agent.id


# Deleting agents.


async def test_a_deleted_agent_can_no_longer_be_read_run_or_deleted(
    world: World, agent: AgentRecord
) -> None:
    await world.agents.delete_agent(ALICE, agent.id)

    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: world.agents.get_agent(ALICE, agent.id),
        lambda: world.jobs.execute(ALICE, agent.id, full_request()),
        lambda: world.agents.delete_agent(ALICE, agent.id),
    ]
    for call in calls:
        with pytest.raises(NotFound) as error:
            await call()
        assert error.value.message == "Agent not found"
    assert await world.job_ids() == []


async def test_deleting_an_agent_cancels_its_pending_jobs_and_keeps_finished_ones_readable(
    world: World, agent: AgentRecord
) -> None:
    done = await world.jobs.execute(ALICE, agent.id, execute_request("Already answered."))
    provider = ScriptedProvider(Completion(text="42", tokens_used=1))
    runner = world.runner(provider)
    await world.run_job(runner, done)
    waiting = await world.jobs.execute(ALICE, agent.id, execute_request("Still waiting."))

    await world.agents.delete_agent(ALICE, agent.id)

    assert (await world.jobs.get_job(ALICE, waiting)).status == JobStatus.CANCELLED
    _, events = await world.jobs.events_after(ALICE, waiting, 0)
    assert [e.type for e in events] == ["queued", "cancelled"]
    kept = await world.jobs.get_job(ALICE, done)
    assert (kept.status, kept.response) == (JobStatus.COMPLETED, "42")
    assert not await world.run_job(runner, waiting)  # its message arrives after the delete
    assert (await world.jobs.get_job(ALICE, waiting)).status == JobStatus.CANCELLED
    assert len(provider.calls) == 1


async def test_deleting_an_agent_stops_its_running_job(world: World, agent: AgentRecord) -> None:
    job_id = await world.jobs.execute(ALICE, agent.id, full_request())
    signal = CancelSignal()
    seen: list[bool] = []

    async def deleted_midway() -> Completion:
        await world.agents.delete_agent(ALICE, agent.id)
        seen.append((await world.jobs.get_job(ALICE, job_id)).cancel_requested)
        # The worker's next cancel check.
        if job_id in await world.store.jobs.cancel_requested([job_id]):
            signal.cancel()
        return Completion(text="too late", tokens_used=1)

    provider = ScriptedProvider(deleted_midway)
    await world.run_job(world.runner(provider), job_id, signal)

    assert seen == [True]
    assert provider.interrupted == 1
    final = await world.jobs.get_job(ALICE, job_id)
    assert (final.status, final.response) == (JobStatus.CANCELLED, None)


async def test_a_deleted_agent_disappears_from_the_list_of_agents(
    world: World, agent: AgentRecord
) -> None:
    world.clock.advance(1)
    other = await world.agents.create_agent(ALICE, agent_request("Writer"))

    await world.agents.delete_agent(ALICE, agent.id)

    page = await world.agents.list_agents(ALICE, size=None, token="")
    assert [a.id for a in page.items] == [other.id]


async def test_an_agent_cannot_be_deleted_from_another_tenant(
    world: World, agent: AgentRecord
) -> None:
    job_id = await world.jobs.execute(ALICE, agent.id, full_request())

    with pytest.raises(NotFound) as error:
        await world.agents.delete_agent(BOB, agent.id)

    assert error.value.message == "Agent not found"
    assert (await world.agents.get_agent(ALICE, agent.id)).id == agent.id
    assert (await world.jobs.get_job(ALICE, job_id)).status == JobStatus.PENDING
