"""The service layer keeps tenants apart, commits a job before its message, and owns its rules.

Idempotent and sub-agent executes, and deleting agents, are here; lists in test_paging.
"""

from __future__ import annotations

import uuid

import pytest

from server.auth.principal import Principal
from server.errors import AlreadyExists, InvalidArgument, NotFound
from server.providers.base import Completion
from server.recovery import Recovery
from server.services import AgentService, JobService
from server.store.models import Agent, Job, JobStatus
from server.validation import AgentSpec, ExecutionSpec, agent_spec, execution_spec
from server.worker.policy import RetryPolicy
from tests.unit.fakes import (
    FakeClock,
    FakeQueue,
    FakeStore,
    ManualCancelCheck,
    ScriptedProvider,
    attempt_runner,
    run_job,
)

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


# Idempotent executes.


def test_a_retried_execute_with_the_same_request_id_returns_the_same_job_and_sends_once(
    jobs: JobService, agent: Agent, store: FakeStore, queue: FakeQueue, clock: FakeClock
) -> None:
    first = jobs.execute(ALICE, agent.id, _execution(), request_id="req-1")
    clock.advance(5)

    again = jobs.execute(ALICE, agent.id, _execution(), request_id="req-1")

    assert again.id == first.id
    assert again.queued_at == first.queued_at
    assert list(store.jobs) == [first.id]
    assert queue.calls == [(first.id, 0.0)]


def test_a_replayed_execute_returns_the_job_as_it_is_now(
    jobs: JobService, agent: Agent, store: FakeStore
) -> None:
    first = jobs.execute(ALICE, agent.id, _execution(), request_id="req-1")
    jobs.cancel_job(ALICE, first.id)

    again = jobs.execute(ALICE, agent.id, _execution(), request_id="req-1")

    assert (again.id, again.status) == (first.id, JobStatus.CANCELLED)


@pytest.mark.parametrize(
    "different",
    [
        _execution("Another prompt entirely."),
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
def test_a_request_id_reused_with_a_different_request_is_refused(
    jobs: JobService, agent: Agent, store: FakeStore, queue: FakeQueue, different: ExecutionSpec
) -> None:
    first = jobs.execute(ALICE, agent.id, _execution(), request_id="req-1")

    with pytest.raises(AlreadyExists) as error:
        jobs.execute(ALICE, agent.id, different, request_id="req-1")

    assert error.value.message == "Idempotency key reused with a different request"
    assert list(store.jobs) == [first.id]
    assert queue.calls == [(first.id, 0.0)]


def test_a_request_id_reused_for_another_agent_is_refused(
    jobs: JobService, agents: AgentService, agent: Agent, store: FakeStore
) -> None:
    other = agents.create_agent(ALICE, _agent_spec("Writer"))
    jobs.execute(ALICE, agent.id, _execution(), request_id="req-1")

    with pytest.raises(AlreadyExists):
        jobs.execute(ALICE, other.id, _execution(), request_id="req-1")

    assert len(store.jobs) == 1


def test_the_same_request_id_in_another_tenant_is_a_new_request(
    jobs: JobService, agents: AgentService, agent: Agent, queue: FakeQueue
) -> None:
    bobs_agent = agents.create_agent(BOB, _agent_spec())
    alices = jobs.execute(ALICE, agent.id, _execution(), request_id="req-1")

    bobs = jobs.execute(BOB, bobs_agent.id, _execution("Bob's own prompt."), request_id="req-1")

    assert bobs.id != alices.id
    assert (bobs.tenant_id, bobs.prompt) == ("globex", "Bob's own prompt.")
    assert queue.calls == [(alices.id, 0.0), (bobs.id, 0.0)]
    assert jobs.execute(ALICE, agent.id, _execution(), request_id="req-1").id == alices.id


def test_a_request_id_older_than_the_retention_period_is_a_new_request(
    store: FakeStore, queue: FakeQueue, clock: FakeClock, agent: Agent
) -> None:
    jobs = JobService(store.unit_of_work, queue, retention_s=3600, clock=clock)
    first = jobs.execute(ALICE, agent.id, _execution(), request_id="req-1")

    clock.advance(3600)
    assert jobs.execute(ALICE, agent.id, _execution(), request_id="req-1").id == first.id
    clock.advance(1)
    fresh = jobs.execute(ALICE, agent.id, _execution("A new question."), request_id="req-1")

    assert fresh.id != first.id
    assert queue.calls == [(first.id, 0.0), (fresh.id, 0.0)]
    assert jobs.execute(ALICE, agent.id, _execution("A new question."), request_id="req-1").id == (
        fresh.id
    )


def test_a_concurrent_duplicate_execute_gets_the_job_of_the_one_that_committed_first(
    jobs: JobService, agent: Agent, store: FakeStore, queue: FakeQueue
) -> None:
    winner: list[Job] = []

    def twin_commits_first() -> None:
        # Another server handles a retry of the same request and commits before us.
        winner.append(jobs.execute(ALICE, agent.id, _execution(), request_id="req-1"))

    store.before_next_commit(twin_commits_first)

    loser = jobs.execute(ALICE, agent.id, _execution(), request_id="req-1")

    assert loser.id == winner[0].id
    assert list(store.jobs) == [winner[0].id]
    assert [key for (_, key) in store.keys] == ["req-1"]
    assert [e.type for e in store.events.values()] == ["queued"]
    assert queue.calls == [(winner[0].id, 0.0)]


def test_a_concurrent_execute_with_the_same_key_but_another_request_is_refused(
    jobs: JobService, agent: Agent, store: FakeStore, queue: FakeQueue
) -> None:
    store.before_next_commit(
        lambda: jobs.execute(ALICE, agent.id, _execution("The twin's prompt."), request_id="req-1")
    )

    with pytest.raises(AlreadyExists):
        jobs.execute(ALICE, agent.id, _execution(), request_id="req-1")

    assert len(store.jobs) == 1
    assert len(queue.calls) == 1


# Sub-agent executes.


def test_a_sub_agent_job_is_one_level_deeper_than_its_parent(
    jobs: JobService, agent: Agent
) -> None:
    root = jobs.execute(ALICE, agent.id, _execution())
    child = jobs.execute(ALICE, agent.id, _execution(), parent_job_id=root.id)
    grandchild = jobs.execute(ALICE, agent.id, _execution(), parent_job_id=child.id)

    found = [jobs.get_job(ALICE, j.id) for j in (root, child, grandchild)]
    assert [(j.depth, j.parent_job_id) for j in found] == [
        (0, None),
        (1, root.id),
        (2, child.id),
    ]


@pytest.mark.parametrize("max_depth", [0, 1])
def test_a_sub_agent_job_deeper_than_the_agents_max_depth_is_refused(
    jobs: JobService, agents: AgentService, store: FakeStore, queue: FakeQueue, max_depth: int
) -> None:
    shallow = agents.create_agent(
        ALICE,
        agent_spec(name="Shallow", role="Stays shallow.", max_depth=max_depth, spawn_shadow=False),
    )
    parent = jobs.execute(ALICE, shallow.id, _execution())
    for _ in range(max_depth):
        parent = jobs.execute(ALICE, shallow.id, _execution(), parent_job_id=parent.id)
    stored = set(store.jobs)

    with pytest.raises(InvalidArgument) as error:
        jobs.execute(ALICE, shallow.id, _execution(), parent_job_id=parent.id)

    message = f"Execution depth {max_depth + 1} exceeds max_depth {max_depth}"
    assert error.value.message == message
    assert [v.field for v in error.value.violations] == ["parent_job_id"]
    assert set(store.jobs) == stored
    assert len(queue.calls) == len(stored)


@pytest.mark.parametrize("case", ["unknown parent", "another tenant's parent"])
def test_a_sub_agent_job_of_a_parent_the_caller_cannot_see_is_not_found(
    jobs: JobService,
    agents: AgentService,
    agent: Agent,
    store: FakeStore,
    queue: FakeQueue,
    case: str,
) -> None:
    if case == "unknown parent":
        parent_id = str(uuid.uuid4())
    else:
        bobs_agent = agents.create_agent(BOB, _agent_spec())
        parent_id = jobs.execute(BOB, bobs_agent.id, _execution()).id
    stored = set(store.jobs)

    with pytest.raises(NotFound) as error:
        jobs.execute(ALICE, agent.id, _execution(), parent_job_id=parent_id)

    assert error.value.message == f"Job {parent_id} not found"
    assert set(store.jobs) == stored
    assert len(queue.calls) == len(stored)


# Deleting agents.


def test_a_deleted_agent_can_no_longer_be_read_run_or_deleted(
    agents: AgentService, jobs: JobService, agent: Agent, store: FakeStore
) -> None:
    agents.delete_agent(ALICE, agent.id)

    for call in (
        lambda: agents.get_agent(ALICE, agent.id),
        lambda: jobs.execute(ALICE, agent.id, _execution()),
        lambda: agents.delete_agent(ALICE, agent.id),
    ):
        with pytest.raises(NotFound) as error:
            call()
        assert error.value.message == "Agent not found"
    assert store.jobs == {}


def test_deleting_an_agent_cancels_its_pending_jobs_and_keeps_finished_ones_readable(
    agents: AgentService,
    jobs: JobService,
    agent: Agent,
    store: FakeStore,
    queue: FakeQueue,
    clock: FakeClock,
) -> None:
    done = jobs.execute(ALICE, agent.id, _execution("Already answered."))
    provider = ScriptedProvider(Completion(text="42", tokens_used=1))
    runner = attempt_runner(store, provider, queue, RetryPolicy(), clock=clock)
    run_job(runner, done.id)
    waiting = jobs.execute(ALICE, agent.id, _execution("Still waiting."))

    agents.delete_agent(ALICE, agent.id)

    assert jobs.get_job(ALICE, waiting.id).status == JobStatus.CANCELLED
    _, events = jobs.events_after(ALICE, waiting.id, 0)
    assert [e.type for e in events] == ["queued", "cancelled"]
    kept = jobs.get_job(ALICE, done.id)
    assert (kept.status, kept.response) == (JobStatus.COMPLETED, "42")
    assert not run_job(runner, waiting.id)  # its message arrives after the delete
    assert jobs.get_job(ALICE, waiting.id).status == JobStatus.CANCELLED
    assert len(provider.calls) == 1


def test_deleting_an_agent_stops_its_running_job(
    agents: AgentService,
    jobs: JobService,
    agent: Agent,
    store: FakeStore,
    queue: FakeQueue,
    clock: FakeClock,
) -> None:
    job = jobs.execute(ALICE, agent.id, _execution())
    watch = ManualCancelCheck(store.unit_of_work)
    seen: list[bool] = []

    def deleted_midway() -> Completion:
        agents.delete_agent(ALICE, agent.id)
        seen.append(jobs.get_job(ALICE, job.id).cancel_requested)
        watch.check()
        return Completion(text="too late", tokens_used=1)

    provider = ScriptedProvider(deleted_midway)
    runner = attempt_runner(store, provider, queue, RetryPolicy(), clock=clock)
    run_job(runner, job.id, watch.signal(job.id))

    assert seen == [True]
    assert provider.interrupted == 1
    final = jobs.get_job(ALICE, job.id)
    assert (final.status, final.response) == (JobStatus.CANCELLED, None)


def test_a_deleted_agent_disappears_from_the_list_of_agents(
    agents: AgentService, agent: Agent, clock: FakeClock
) -> None:
    clock.advance(1)
    other = agents.create_agent(ALICE, _agent_spec("Writer"))

    agents.delete_agent(ALICE, agent.id)

    page = agents.list_agents(ALICE, size=None, token="")
    assert [a.id for a in page.items] == [other.id]  # type: ignore[attr-defined]


def test_an_agent_cannot_be_deleted_from_another_tenant(
    agents: AgentService, jobs: JobService, agent: Agent
) -> None:
    job = jobs.execute(ALICE, agent.id, _execution())

    with pytest.raises(NotFound) as error:
        agents.delete_agent(BOB, agent.id)

    assert error.value.message == "Agent not found"
    assert agents.get_agent(ALICE, agent.id).id == agent.id
    assert jobs.get_job(ALICE, job.id).status == JobStatus.PENDING
