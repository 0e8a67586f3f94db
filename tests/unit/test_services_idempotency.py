"""An execute with a request id is queued once: retries, even racing ones, get the same job."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from server.errors import AlreadyExists
from server.store.models import JobStatus
from server.store.records import AgentRecord
from server.store.tables import events, idempotency_keys
from server.validation import ExecutionSpec, execution_spec
from tests.world import ALICE, BOB, World, agent_request, full_request


async def test_a_retried_execute_with_the_same_request_id_returns_the_same_job_and_sends_once(
    world: World, agent: AgentRecord
) -> None:
    first_at = world.clock.now
    first = await world.jobs.execute(ALICE, agent.id, full_request(), request_id="req-1")
    world.clock.advance(5)

    again = await world.jobs.execute(ALICE, agent.id, full_request(), request_id="req-1")

    assert again == first
    assert (await world.jobs.get_job(ALICE, again)).queued_at == first_at
    assert await world.job_ids() == [first]
    assert world.queue.calls == [(first, 0.0)]


async def test_a_replayed_execute_returns_the_job_as_it_is_now(
    world: World, agent: AgentRecord
) -> None:
    first = await world.jobs.execute(ALICE, agent.id, full_request(), request_id="req-1")
    await world.jobs.cancel_job(ALICE, first)

    again = await world.jobs.execute(ALICE, agent.id, full_request(), request_id="req-1")

    status = (await world.jobs.get_job(ALICE, again)).status
    assert (again, status) == (first, JobStatus.CANCELLED)


@pytest.mark.parametrize(
    "different",
    [
        full_request("Another prompt entirely."),
        execution_spec(
            prompt="Summarise the quarterly report.",
            context_id="ctx-42",
            enable_adversarial=False,  # the first request asked for True
            enable_self_correction=False,
            max_debate_rounds=5,
        ),
    ],
    ids=["another prompt", "another option"],
)
async def test_a_request_id_reused_with_a_different_request_is_refused(
    world: World, agent: AgentRecord, different: ExecutionSpec
) -> None:
    first = await world.jobs.execute(ALICE, agent.id, full_request(), request_id="req-1")

    with pytest.raises(AlreadyExists) as error:
        await world.jobs.execute(ALICE, agent.id, different, request_id="req-1")

    assert error.value.message == "Idempotency key reused with a different request"
    assert await world.job_ids() == [first]
    assert world.queue.calls == [(first, 0.0)]


async def test_a_request_id_reused_for_another_agent_is_refused(
    world: World, agent: AgentRecord
) -> None:
    other = await world.agents.create_agent(ALICE, agent_request("Writer"))
    await world.jobs.execute(ALICE, agent.id, full_request(), request_id="req-1")

    with pytest.raises(AlreadyExists):
        await world.jobs.execute(ALICE, other.id, full_request(), request_id="req-1")

    assert len(await world.job_ids()) == 1


async def test_the_same_request_id_in_another_tenant_is_a_new_request(
    world: World, agent: AgentRecord
) -> None:
    bobs_agent = await world.agents.create_agent(BOB, agent_request())
    alices = await world.jobs.execute(ALICE, agent.id, full_request(), request_id="req-1")

    bobs = await world.jobs.execute(
        BOB, bobs_agent.id, full_request("Bob's own prompt."), request_id="req-1"
    )

    assert bobs != alices
    bobs_job = await world.jobs.get_job(BOB, bobs)
    assert (bobs_job.tenant_id, bobs_job.prompt) == ("globex", "Bob's own prompt.")
    assert world.queue.calls == [(alices, 0.0), (bobs, 0.0)]
    assert await world.jobs.execute(ALICE, agent.id, full_request(), request_id="req-1") == alices


async def test_a_request_id_older_than_the_retention_period_is_a_new_request(
    world: World, agent: AgentRecord
) -> None:
    world.retention_s = 3600
    first = await world.jobs.execute(ALICE, agent.id, full_request(), request_id="req-1")

    world.clock.advance(3600)
    assert await world.jobs.execute(ALICE, agent.id, full_request(), request_id="req-1") == first
    world.clock.advance(1)
    fresh = await world.jobs.execute(
        ALICE, agent.id, full_request("A new question."), request_id="req-1"
    )

    assert fresh != first
    assert world.queue.calls == [(first, 0.0), (fresh, 0.0)]
    again = await world.jobs.execute(
        ALICE, agent.id, full_request("A new question."), request_id="req-1"
    )
    assert again == fresh


# Racing retries: each execute runs in its own transaction on its own connection.


async def test_concurrent_duplicate_executes_all_get_the_job_of_the_one_that_committed_first(
    pg_world: World,
) -> None:
    agent = await pg_world.agents.create_agent(ALICE, agent_request())

    # Retries of the same request, handled by several servers at once.
    answers = await asyncio.gather(
        *(pg_world.jobs.execute(ALICE, agent.id, full_request(), request_id="req-1") for _ in "abc")
    )

    winner = answers[0]
    assert answers == [winner] * 3
    assert await pg_world.job_ids() == [winner]
    keys = await pg_world.store.db.all(select(idempotency_keys.c.key))
    assert [row["key"] for row in keys] == ["req-1"]
    stored_events = await pg_world.store.db.all(select(events.c.job_id, events.c.type))
    assert [(row["job_id"], row["type"]) for row in stored_events] == [(winner, "queued")]
    assert pg_world.queue.calls == [(winner, 0.0)]


async def test_a_concurrent_execute_with_the_same_key_but_another_request_is_refused(
    pg_world: World,
) -> None:
    agent = await pg_world.agents.create_agent(ALICE, agent_request())

    answers = await asyncio.gather(
        pg_world.jobs.execute(ALICE, agent.id, full_request("The twin's prompt."), request_id="r"),
        pg_world.jobs.execute(ALICE, agent.id, full_request(), request_id="r"),
        return_exceptions=True,
    )

    queued = [answer for answer in answers if isinstance(answer, str)]
    refused = [answer for answer in answers if isinstance(answer, AlreadyExists)]
    assert (len(queued), len(refused)) == (1, 1)
    assert await pg_world.job_ids() == queued
    assert pg_world.queue.calls == [(queued[0], 0.0)]
