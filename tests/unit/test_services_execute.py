"""Execute commits a job before its message, keeps tenants apart, and bounds sub-agent depth.

Idempotent executes are in test_services_idempotency.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from sqlalchemy.engine import make_url

from server.errors import InvalidArgument, NotFound
from server.sending import MessageSender
from server.service.jobs import JobService
from server.store.models import JobStatus
from server.store.records import AgentRecord, JobRecord
from server.validation import agent_spec
from tests.world import ALICE, BOB, World, agent_request, full_request


async def _stored(world: World, job_id: str) -> JobRecord:
    found = await world.job(job_id)
    assert found is not None
    return found


# Executions.


async def test_execute_stores_a_pending_job_with_the_request_options(
    world: World, agent: AgentRecord
) -> None:
    job_id = await world.jobs.execute(ALICE, agent.id, full_request())

    stored = await _stored(world, job_id)
    assert stored.status == JobStatus.PENDING
    assert (stored.agent_id, stored.tenant_id, stored.prompt) == (
        agent.id,
        "acme",
        "Summarise the quarterly report.",
    )
    assert (stored.context_id, stored.enable_adversarial, stored.enable_self_correction) == (
        "ctx-42",
        True,
        False,
    )
    assert stored.max_debate_rounds == 5
    assert (stored.attempts, stored.tokens_used, stored.queued_at) == (0, 0, world.clock.now)
    assert (stored.started_at, stored.completed_at, stored.response, stored.error) == (
        None,
        None,
        None,
        None,
    )
    assert job_id == str(uuid.UUID(job_id))


@pytest.mark.parametrize("case", ["plain", "idempotent", "capped"])
async def test_execute_commits_the_job_before_sending_its_message(
    pg_world: World, fresh_postgres_url: str, case: str
) -> None:
    # Another connection reads the job at the moment its message is sent: it sees only
    # what was committed.
    conninfo = make_url(fresh_postgres_url).set(drivername="postgresql")
    committed_when_sent: list[str | None] = []

    def look_at_the_store(job_id: str, delay_s: float) -> None:
        with psycopg.connect(conninfo.render_as_string(hide_password=False)) as other:
            row = other.execute("SELECT status FROM jobs WHERE id = %s", (job_id,)).fetchone()
        committed_when_sent.append(None if row is None else row[0])

    if case == "capped":
        pg_world.max_unfinished_jobs = 10
    agent = await pg_world.agents.create_agent(ALICE, agent_request())
    pg_world.queue.on_enqueue = look_at_the_store
    request_id = "req-1" if case == "idempotent" else None

    job_id = await pg_world.jobs.execute(ALICE, agent.id, full_request(), request_id=request_id)

    assert pg_world.queue.calls == [(job_id, 0.0)]
    assert committed_when_sent == [JobStatus.PENDING]


async def test_an_executed_job_can_be_read_back_by_its_id(world: World, agent: AgentRecord) -> None:
    job_id = await world.jobs.execute(ALICE, agent.id, full_request("What is 6 x 7?"))

    found = await world.jobs.get_job(ALICE, job_id)

    assert (found.id, found.agent_id, found.prompt) == (job_id, agent.id, "What is 6 x 7?")
    assert found.status == JobStatus.PENDING


@pytest.mark.parametrize("case", ["unknown agent", "another tenant's agent"])
async def test_execute_on_an_agent_the_caller_cannot_see_stores_and_sends_nothing(
    world: World, agent: AgentRecord, case: str
) -> None:
    caller, agent_id = (ALICE, str(uuid.uuid4())) if case == "unknown agent" else (BOB, agent.id)

    with pytest.raises(NotFound) as error:
        await world.jobs.execute(caller, agent_id, full_request())

    assert error.value.message == "Agent not found"
    assert await world.job_ids() == []
    assert world.queue.calls == []


async def test_execute_returns_the_job_when_the_queue_is_down_and_recovery_sends_it_later(
    world: World, agent: AgentRecord
) -> None:
    # The service hands its messages to a sender that never raises to it.
    sender = MessageSender(world.queue)
    service = JobService(world.store, sender, clock=world.clock)
    world.queue.error = ConnectionError("Redis is down")

    job_id = await service.execute(ALICE, agent.id, full_request())
    sender.close()  # the send is tried, and fails

    assert (await service.get_job(ALICE, job_id)).status == JobStatus.PENDING
    assert (await _stored(world, job_id)).status == JobStatus.PENDING

    world.queue.error = None
    recovery = world.recovery(requeue_after_s=30)
    world.clock.advance(31)
    await recovery.sweep()

    assert world.queue.calls == [(job_id, 0.0), (job_id, 0.0)]  # the lost send, then the resend
    assert (await _stored(world, job_id)).status == JobStatus.PENDING


@pytest.mark.parametrize("case", ["unknown id", "another tenant's job"])
async def test_get_job_of_a_job_the_caller_cannot_see_names_the_id(
    world: World, agent: AgentRecord, case: str
) -> None:
    # Another tenant's job answers exactly like an unknown id.
    if case == "unknown id":
        caller, job_id = ALICE, str(uuid.uuid4())
    else:
        caller, job_id = BOB, await world.jobs.execute(ALICE, agent.id, full_request())

    with pytest.raises(NotFound) as error:
        await world.jobs.get_job(caller, job_id)

    assert error.value.message == f"Job {job_id} not found"


# Sub-agent executes.


async def test_a_sub_agent_job_is_one_level_deeper_than_its_parent(
    world: World, agent: AgentRecord
) -> None:
    root = await world.jobs.execute(ALICE, agent.id, full_request())
    child = await world.jobs.execute(ALICE, agent.id, full_request(), parent_job_id=root)
    grandchild = await world.jobs.execute(ALICE, agent.id, full_request(), parent_job_id=child)

    found = [await world.jobs.get_job(ALICE, j) for j in (root, child, grandchild)]
    assert [(j.depth, j.parent_job_id) for j in found] == [
        (0, None),
        (1, root),
        (2, child),
    ]


@pytest.mark.parametrize("max_depth", [0, 1])
async def test_a_sub_agent_job_deeper_than_the_agents_max_depth_is_refused(
    world: World, max_depth: int
) -> None:
    shallow = await world.agents.create_agent(
        ALICE,
        agent_spec(name="Shallow", role="Stays shallow.", max_depth=max_depth, spawn_shadow=False),
    )
    parent = await world.jobs.execute(ALICE, shallow.id, full_request())
    for _ in range(max_depth):
        parent = await world.jobs.execute(ALICE, shallow.id, full_request(), parent_job_id=parent)
    stored = await world.job_ids()

    with pytest.raises(InvalidArgument) as error:
        await world.jobs.execute(ALICE, shallow.id, full_request(), parent_job_id=parent)

    message = f"Execution depth {max_depth + 1} exceeds max_depth {max_depth}"
    assert error.value.message == message
    assert [v.field for v in error.value.violations] == ["parent_job_id"]
    assert await world.job_ids() == stored
    assert len(world.queue.calls) == len(stored)


@pytest.mark.parametrize("case", ["unknown parent", "another tenant's parent"])
async def test_a_sub_agent_job_of_a_parent_the_caller_cannot_see_is_not_found(
    world: World, agent: AgentRecord, case: str
) -> None:
    if case == "unknown parent":
        parent_id = str(uuid.uuid4())
    else:
        bobs_agent = await world.agents.create_agent(BOB, agent_request())
        parent_id = await world.jobs.execute(BOB, bobs_agent.id, full_request())
    stored = await world.job_ids()

    with pytest.raises(NotFound) as error:
        await world.jobs.execute(ALICE, agent.id, full_request(), parent_job_id=parent_id)

    assert error.value.message == f"Job {parent_id} not found"
    assert await world.job_ids() == stored
    assert len(world.queue.calls) == len(stored)
