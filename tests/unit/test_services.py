"""The service layer keeps tenants apart and commits a job before it sends the job's message."""

from __future__ import annotations

import uuid

import pytest

from server.auth import Principal
from server.errors import NotFound
from server.models import Agent, JobStatus
from server.recovery import Recovery
from server.runner import RetryPolicy
from server.services import AgentService, JobService
from server.validation import AgentSpec, ExecutionSpec, agent_spec, execution_spec
from tests.unit.fakes import FakeClock, FakeQueue, FakeStore

ALICE = Principal(subject="alice", role="user", tenant_id="acme")
BOB = Principal(subject="bob", role="user", tenant_id="globex")


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue() -> FakeQueue:
    return FakeQueue()


@pytest.fixture
def agents(store: FakeStore, clock: FakeClock) -> AgentService:
    return AgentService(store.unit_of_work, clock=clock)


@pytest.fixture
def jobs(store: FakeStore, queue: FakeQueue, clock: FakeClock) -> JobService:
    return JobService(store.unit_of_work, queue, clock=clock)


@pytest.fixture
def agent(agents: AgentService) -> Agent:
    return agents.create_agent(ALICE, _agent_spec())


def _agent_spec(name: str = "Researcher") -> AgentSpec:
    return agent_spec(
        name=name, role="You are a careful research assistant.", max_depth=None, spawn_shadow=False
    )


def _execution(prompt: str = "Summarise the quarterly report.") -> ExecutionSpec:
    return execution_spec(
        prompt=prompt,
        context_id="ctx-42",
        enable_adversarial=True,
        enable_self_correction=False,
        max_debate_rounds=5,
    )


# Agents.


def test_create_agent_stores_the_trimmed_agent_in_the_tenant_of_the_caller(
    agents: AgentService, store: FakeStore, clock: FakeClock
) -> None:
    spec = agent_spec(
        name="  Research Bot  ", role="\n You research things. \t", max_depth=7, spawn_shadow=True
    )

    created = agents.create_agent(ALICE, spec)

    stored = store.agents[created.id]
    assert stored.tenant_id == "acme"  # the token's tenant_id, not its subject
    assert (stored.name, stored.role, stored.max_depth, stored.spawn_shadow) == (
        "Research Bot",
        "You research things.",
        7,
        True,
    )
    assert (stored.generation, stored.fitness, stored.created_at) == (0, 0.0, clock.now)
    assert created.id == str(uuid.UUID(created.id))  # lowercase, hyphenated


def test_each_created_agent_gets_its_own_id(agents: AgentService, store: FakeStore) -> None:
    first = agents.create_agent(ALICE, _agent_spec("One"))
    second = agents.create_agent(ALICE, _agent_spec("Two"))

    assert first.id != second.id
    assert {store.agents[first.id].name, store.agents[second.id].name} == {"One", "Two"}


def test_get_agent_returns_the_callers_agent(agents: AgentService, agent: Agent) -> None:
    found = agents.get_agent(ALICE, agent.id)

    assert (found.id, found.name, found.tenant_id) == (agent.id, "Researcher", "acme")


def test_get_agent_of_another_tenant_answers_exactly_like_an_unknown_id(
    agents: AgentService, agent: Agent
) -> None:
    with pytest.raises(NotFound) as other_tenant:
        agents.get_agent(BOB, agent.id)
    with pytest.raises(NotFound) as unknown:
        agents.get_agent(BOB, str(uuid.uuid4()))

    assert other_tenant.value.message == unknown.value.message == "Agent not found"
    assert str(other_tenant.value) == str(unknown.value)


def test_another_user_of_the_same_tenant_sees_the_agent(agents: AgentService, agent: Agent) -> None:
    colleague = Principal(subject="carol", role="agent", tenant_id="acme")

    assert agents.get_agent(colleague, agent.id).id == agent.id


# Executions.


def test_execute_stores_a_pending_job_with_the_request_options(
    jobs: JobService, agent: Agent, store: FakeStore, clock: FakeClock
) -> None:
    job = jobs.execute(ALICE, agent.id, _execution())

    stored = store.jobs[job.id]
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
    assert (stored.attempts, stored.tokens_used, stored.queued_at) == (0, 0, clock.now)
    assert (stored.started_at, stored.completed_at, stored.response, stored.error) == (
        None,
        None,
        None,
        None,
    )
    assert job.id == str(uuid.UUID(job.id))


def test_execute_commits_the_job_before_sending_its_message(
    jobs: JobService, agent: Agent, store: FakeStore, queue: FakeQueue
) -> None:
    committed_when_sent: list[str | None] = []

    def look_at_the_store(job_id: str, delay_s: float) -> None:
        row = store.jobs.get(job_id)
        committed_when_sent.append(None if row is None else row.status)

    queue.on_enqueue = look_at_the_store

    job = jobs.execute(ALICE, agent.id, _execution())

    assert queue.calls == [(job.id, 0.0)]
    assert committed_when_sent == [JobStatus.PENDING]


def test_an_executed_job_can_be_read_back_by_its_id(jobs: JobService, agent: Agent) -> None:
    job = jobs.execute(ALICE, agent.id, _execution("What is 6 x 7?"))

    found = jobs.get_job(ALICE, job.id)

    assert (found.id, found.agent_id, found.prompt) == (job.id, agent.id, "What is 6 x 7?")
    assert found.status == JobStatus.PENDING


@pytest.mark.parametrize("case", ["unknown agent", "another tenant's agent"])
def test_execute_on_an_agent_the_caller_cannot_see_stores_and_sends_nothing(
    jobs: JobService, agent: Agent, store: FakeStore, queue: FakeQueue, case: str
) -> None:
    caller, agent_id = (ALICE, str(uuid.uuid4())) if case == "unknown agent" else (BOB, agent.id)

    with pytest.raises(NotFound) as error:
        jobs.execute(caller, agent_id, _execution())

    assert error.value.message == "Agent not found"
    assert store.jobs == {}
    assert queue.calls == []


def test_execute_returns_the_job_when_the_queue_is_down_and_recovery_sends_it_later(
    jobs: JobService, agent: Agent, store: FakeStore, queue: FakeQueue, clock: FakeClock
) -> None:
    queue.error = ConnectionError("Redis is down")

    job = jobs.execute(ALICE, agent.id, _execution())

    assert job.status == JobStatus.PENDING
    assert store.jobs[job.id].status == JobStatus.PENDING
    assert jobs.get_job(ALICE, job.id).id == job.id

    queue.error = None
    recovery = Recovery(store.unit_of_work, queue, RetryPolicy(), requeue_after_s=30, clock=clock)
    clock.advance(31)
    recovery.sweep()

    assert queue.calls == [(job.id, 0.0), (job.id, 0.0)]  # the lost send, then the resend
    assert store.jobs[job.id].status == JobStatus.PENDING


def test_get_job_of_an_unknown_id_names_the_id(jobs: JobService) -> None:
    job_id = str(uuid.uuid4())

    with pytest.raises(NotFound) as error:
        jobs.get_job(ALICE, job_id)

    assert error.value.message == f"Job {job_id} not found"


def test_get_job_of_another_tenant_answers_exactly_like_an_unknown_id(
    jobs: JobService, agent: Agent
) -> None:
    job = jobs.execute(ALICE, agent.id, _execution())

    with pytest.raises(NotFound) as error:
        jobs.get_job(BOB, job.id)

    assert error.value.message == f"Job {job.id} not found"
