"""The recovery sweeper gives back lost runs, re-sends lost messages and ends retention."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from server.auth.principal import Principal
from server.errors import NotFound
from server.providers.base import Completion
from server.recovery import Recovery
from server.services import AgentService, JobService
from server.store.events import EventSpec, EventType
from server.store.models import Agent, Job, JobStatus
from server.validation import agent_spec, execution_spec
from server.worker.policy import RetryPolicy
from server.worker.runner import AttemptRunner
from tests.unit.fakes import (
    FakeClock,
    FakeQueue,
    FakeStore,
    FakeUnitOfWork,
    ScriptedProvider,
    attempt_runner,
    make_agent,
    make_job,
    run_job,
    snapshot,
)

POLICY = RetryPolicy(max_attempts=3, time_limit_s=120, lease_grace_s=15)
REQUEUE_AFTER_S = 30.0
JOB_ID = "5d1e8a01-6f0c-4a8e-9a51-0b7c2d562f4e"


@dataclass
class World:
    """One stored agent, the fakes, and a sweeper over them."""

    store: FakeStore
    clock: FakeClock
    queue: FakeQueue
    agent: Agent
    recovery: Recovery

    def seconds_ago(self, seconds: float) -> Any:
        return self.clock.now - timedelta(seconds=seconds)

    def running(
        self, *, attempts: int, lease_left_s: float, job_id: str = JOB_ID, **overrides: Any
    ) -> Job:
        """Store a job whose attempt `attempts` is running, its lease ending in `lease_left_s`."""
        started = self.seconds_ago(POLICY.lease_s - lease_left_s)
        job = make_job(
            self.agent,
            id=job_id,
            at=self.seconds_ago(600),
            status=JobStatus.RUNNING,
            attempts=attempts,
            started_at=started,
            run_token=f"token-of-attempt-{attempts}",
            lease_expires_at=started + timedelta(seconds=POLICY.lease_s),
            **overrides,
        )
        self.store.put(job)
        return job

    def pending(self, *, sent_s_ago: float, job_id: str = JOB_ID) -> Job:
        """Store a pending job whose newest message was due `sent_s_ago` seconds ago."""
        job = make_job(self.agent, id=job_id, at=self.seconds_ago(sent_s_ago))
        self.store.put(job)
        return job


@pytest.fixture
def world() -> World:
    store, clock, queue = FakeStore(), FakeClock(), FakeQueue()
    agent = make_agent()
    store.put(agent)
    recovery = Recovery(
        store.unit_of_work, queue, POLICY, requeue_after_s=REQUEUE_AFTER_S, clock=clock
    )
    return World(store=store, clock=clock, queue=queue, agent=agent, recovery=recovery)


def _lost_message(attempt: int) -> str:
    return f"Attempt {attempt} was lost: its worker stopped or it ran past the time limit of 120s"


# Lost runs.


def test_a_running_job_whose_lease_ran_out_goes_back_to_pending_and_is_sent_again(
    world: World,
) -> None:
    job = world.running(attempts=1, lease_left_s=-1)

    assert world.recovery.sweep() == 1

    row = world.store.jobs[job.id]
    assert row.status == JobStatus.PENDING
    assert row.attempts == 1  # the lost attempt still counts
    assert (row.run_token, row.lease_expires_at) == (None, None)
    assert row.next_run_at == row.enqueued_at == world.clock.now
    assert row.last_error == _lost_message(1)
    assert (row.error, row.completed_at) == (None, None)
    assert world.queue.calls == [(job.id, 0.0)]


def test_a_lost_run_on_its_last_attempt_ends_failed_and_is_not_sent_again(world: World) -> None:
    job = world.running(attempts=3, lease_left_s=-1)

    assert world.recovery.sweep() == 1

    row = world.store.jobs[job.id]
    assert row.status == JobStatus.FAILED
    assert row.error == row.last_error == _lost_message(3)
    assert (row.response, row.attempts, row.completed_at) == ("", 3, world.clock.now)
    assert row.run_token is None
    assert world.queue.calls == []


@pytest.mark.parametrize("lease_left_s", [0, 1, POLICY.lease_s])
def test_a_running_job_whose_lease_has_not_run_out_is_left_alone(
    world: World, lease_left_s: float
) -> None:
    job = world.running(attempts=1, lease_left_s=lease_left_s)
    before = snapshot(world.store.jobs[job.id])

    assert world.recovery.sweep() == 0

    assert snapshot(world.store.jobs[job.id]) == before
    assert world.queue.calls == []


def test_a_lost_run_is_given_back_once_however_often_the_sweeper_runs(world: World) -> None:
    job = world.running(attempts=1, lease_left_s=-1)

    world.recovery.sweep()
    world.clock.advance(1)
    world.recovery.sweep()

    assert world.queue.calls == [(job.id, 0.0)]


def test_a_lost_run_whose_message_could_not_be_sent_is_sent_by_the_next_sweep(
    world: World,
) -> None:
    job = world.running(attempts=1, lease_left_s=-1)
    world.queue.error = ConnectionError("Redis is down")
    world.recovery.sweep()
    assert world.store.jobs[job.id].status == JobStatus.PENDING

    world.queue.error = None
    world.clock.advance(1)
    world.recovery.sweep()

    assert world.queue.calls == [(job.id, 0.0), (job.id, 0.0)]


def test_a_batch_that_could_not_be_sent_is_sent_whole_by_the_next_sweep(world: World) -> None:
    first = world.running(
        attempts=1, lease_left_s=-2, job_id="00000000-0000-4000-8000-00000000000a"
    )
    second = world.running(
        attempts=1, lease_left_s=-1, job_id="00000000-0000-4000-8000-00000000000b"
    )

    def refuse_the_first(job_id: str, delay_s: float) -> None:
        if job_id == first.id:
            raise ConnectionError("Redis is down")

    world.queue.on_enqueue = refuse_the_first
    world.recovery.sweep()
    assert world.queue.calls == []
    assert {world.store.jobs[first.id].status, world.store.jobs[second.id].status} == {
        JobStatus.PENDING
    }

    world.queue.on_enqueue = None
    world.clock.advance(1)
    world.recovery.sweep()

    assert sorted(world.queue.calls) == [(first.id, 0.0), (second.id, 0.0)]


# Lost messages.


def test_a_pending_job_whose_message_is_overdue_is_sent_again_once(world: World) -> None:
    job = world.pending(sent_s_ago=REQUEUE_AFTER_S + 1)

    assert world.recovery.sweep() == 1
    assert world.store.jobs[job.id].enqueued_at == world.clock.now
    assert world.recovery.sweep() == 0

    assert world.queue.calls == [(job.id, 0.0)]
    assert world.store.jobs[job.id].status == JobStatus.PENDING


def test_a_resent_message_that_is_lost_too_is_sent_again_after_another_wait(
    world: World,
) -> None:
    job = world.pending(sent_s_ago=REQUEUE_AFTER_S + 1)
    world.recovery.sweep()

    world.clock.advance(REQUEUE_AFTER_S - 1)
    world.recovery.sweep()
    world.clock.advance(2)
    world.recovery.sweep()

    assert world.queue.calls == [(job.id, 0.0), (job.id, 0.0)]


def _logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "server.recovery"]


def test_a_failed_resend_is_logged_as_failed_and_sent_by_the_next_sweep(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    job = world.pending(sent_s_ago=REQUEUE_AFTER_S + 1)
    world.queue.error = ConnectionError("Redis is down")

    assert world.recovery.sweep() == 0

    assert _logged(caplog) == [
        f"could not send 1 job messages ({job.id}, ...); the next sweep sends them"
    ]
    caplog.clear()
    world.queue.error = None
    assert world.recovery.sweep() == 0  # not twice in the same instant
    world.clock.advance(1)
    assert world.recovery.sweep() == 1
    assert _logged(caplog) == ["re-sent 1 pending jobs whose message was overdue"]
    assert world.queue.calls == [(job.id, 0.0), (job.id, 0.0)]
    assert world.store.jobs[job.id].enqueued_at == world.clock.now


def test_overdue_messages_go_out_in_batches_each_committed_before_it_is_sent(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("server.recovery.BATCH", 2)
    jobs = [
        world.pending(
            sent_s_ago=REQUEUE_AFTER_S + 10 - n, job_id=f"00000000-0000-4000-8000-00000000000{n}"
        )
        for n in range(5)
    ]
    batches: list[list[str]] = []

    def send(job_ids: list[str]) -> None:
        # What a worker given the message would see: the job re-sent, committed.
        assert all(world.store.jobs[job_id].enqueued_at == world.clock.now for job_id in job_ids)
        batches.append(list(job_ids))

    monkeypatch.setattr(world.queue, "enqueue_many", send)

    assert world.recovery.sweep() == 5

    ids = [job.id for job in jobs]
    assert batches == [ids[0:2], ids[2:4], ids[4:]]


@pytest.mark.parametrize("sent_s_ago", [0, REQUEUE_AFTER_S - 1, REQUEUE_AFTER_S, -60])
def test_a_pending_job_whose_message_is_not_overdue_is_not_sent_again(
    world: World, sent_s_ago: float
) -> None:
    # -60: a retry whose delayed message is due in a minute.
    job = world.pending(sent_s_ago=sent_s_ago)
    before = snapshot(world.store.jobs[job.id])

    assert world.recovery.sweep() == 0

    assert snapshot(world.store.jobs[job.id]) == before
    assert world.queue.calls == []


# Finished jobs.


@pytest.mark.parametrize("status", [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED])
def test_finished_jobs_are_never_touched(world: World, status: JobStatus) -> None:
    long_ago = world.seconds_ago(3600)
    job = make_job(
        world.agent,
        at=long_ago,
        status=status,
        attempts=3,
        started_at=long_ago,
        completed_at=long_ago,
        # Leftovers that would match a sweep if status were not checked.
        run_token="stale-token",
        lease_expires_at=long_ago,
    )
    world.store.put(job)
    before = snapshot(world.store.jobs[job.id])

    assert world.recovery.sweep() == 0

    assert snapshot(world.store.jobs[job.id]) == before
    assert world.queue.calls == []


# What a lost run tells its watchers.


def _events(world: World, job_id: str) -> list[tuple[int, str, int, str | None, float | None]]:
    return [
        (e.sequence, e.type, e.attempt, e.error, e.delay_s) for e in world.store.events_of(job_id)
    ]


def test_a_lost_run_that_is_tried_again_tells_so_in_a_retrying_event(world: World) -> None:
    job = world.running(attempts=1, lease_left_s=-1, event_seq=2)  # queued, started

    world.recovery.sweep()

    assert _events(world, job.id) == [(3, "retrying", 1, _lost_message(1), 0.0)]


def test_a_lost_run_on_its_last_attempt_tells_so_in_a_failed_event(world: World) -> None:
    job = world.running(attempts=3, lease_left_s=-1, event_seq=6)

    world.recovery.sweep()

    assert _events(world, job.id) == [(7, "failed", 3, _lost_message(3), None)]


@pytest.mark.parametrize("attempts", [1, POLICY.max_attempts])
def test_a_lost_run_whose_cancel_was_requested_ends_cancelled_not_retried(
    world: World, attempts: int
) -> None:
    job = world.running(attempts=attempts, lease_left_s=-1, cancel_requested=True, event_seq=2)

    assert world.recovery.sweep() == 1

    row = world.store.jobs[job.id]
    assert (row.status, row.completed_at, row.run_token) == (
        JobStatus.CANCELLED,
        world.clock.now,
        None,
    )
    assert row.error is None
    assert _events(world, job.id) == [(3, "cancelled", attempts, None, None)]
    assert world.queue.calls == []


# Retention.

RETENTION_S = 86400.0
ALICE = Principal(subject="alice", role="user", tenant_id="acme")
ANSWER = Completion(text="Revenue grew 12% on strong exports.", tokens_used=42)


@dataclass
class Services:
    """The services and a worker over the world's store, and a sweeper with retention."""

    agents: AgentService
    jobs: JobService
    runner: AttemptRunner
    recovery: Recovery

    def execute(self, agent: Agent, request_id: str | None = None) -> Job:
        spec = execution_spec(
            prompt="Summarise the quarterly report.",
            context_id=None,
            enable_adversarial=False,
            enable_self_correction=False,
            max_debate_rounds=None,
        )
        return self.jobs.execute(ALICE, agent.id, spec, request_id=request_id)

    def completed(self, agent: Agent, request_id: str | None = None) -> Job:
        job = self.execute(agent, request_id)
        run_job(self.runner, job.id)
        return job

    def new_agent(self, name: str) -> Agent:
        spec = agent_spec(name=name, role="Finds things out.", max_depth=3, spawn_shadow=False)
        return self.agents.create_agent(ALICE, spec)


@pytest.fixture
def services(world: World) -> Services:
    uow = world.store.unit_of_work
    return Services(
        agents=AgentService(uow, clock=world.clock),
        jobs=JobService(uow, world.queue, retention_s=RETENTION_S, clock=world.clock),
        runner=attempt_runner(
            world.store,
            ScriptedProvider(*(ANSWER for _ in range(10))),
            world.queue,
            POLICY,
            clock=world.clock,
        ),
        recovery=Recovery(
            uow,
            world.queue,
            POLICY,
            requeue_after_s=REQUEUE_AFTER_S,
            retention_s=RETENTION_S,
            clock=world.clock,
        ),
    )


def test_retention_deletes_finished_jobs_past_it_with_their_events_and_keys(
    world: World, services: Services
) -> None:
    old_done = services.completed(world.agent, "old-done")
    old_cancelled = services.execute(world.agent, "old-cancelled")
    services.jobs.cancel_job(ALICE, old_cancelled.id)
    old_pending = services.execute(world.agent)
    old_running = world.running(attempts=1, lease_left_s=RETENTION_S * 2, job_id=str(uuid.uuid4()))
    world.clock.advance(1)
    just_kept = services.completed(world.agent, "just-kept")
    world.clock.advance(RETENTION_S)
    young = services.completed(world.agent, "young")

    assert services.recovery.expire() == 2

    kept = {old_pending.id, old_running.id, just_kept.id, young.id}
    assert set(world.store.jobs) == kept
    assert {job_id for job_id, _ in world.store.events} == kept - {old_running.id}
    assert sorted(key for _, key in world.store.keys) == ["just-kept", "young"]
    for gone in (old_done, old_cancelled):
        with pytest.raises(NotFound):
            services.jobs.get_job(ALICE, gone.id)
    assert services.jobs.get_job(ALICE, just_kept.id).response == ANSWER.text


def test_a_request_id_whose_job_retention_removed_starts_a_new_job(
    world: World, services: Services
) -> None:
    old = services.completed(world.agent, "req-1")
    world.clock.advance(RETENTION_S + 1)
    services.recovery.expire()

    again = services.execute(world.agent, "req-1")

    assert again.id != old.id
    assert services.jobs.get_job(ALICE, again.id).status == JobStatus.PENDING


def test_retention_deletes_in_batches_each_committed_on_its_own(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("server.recovery.BATCH", 2)
    long_ago = world.seconds_ago(RETENTION_S + 60)
    for n in range(5):
        job_id = f"00000000-0000-4000-8000-00000000000{n}"
        world.store.put(
            make_job(
                world.agent,
                id=job_id,
                at=long_ago,
                status=JobStatus.COMPLETED,
                attempts=1,
                completed_at=long_ago,
                event_seq=1,
            ),
            EventSpec(EventType.COMPLETED).row(job_id, sequence=1, attempt=1, at=long_ago),
        )
    left_at_each_start: list[int] = []

    def unit_of_work() -> FakeUnitOfWork:
        left_at_each_start.append(len(world.store.jobs))
        return world.store.unit_of_work()

    recovery = Recovery(
        unit_of_work,
        world.queue,
        POLICY,
        requeue_after_s=REQUEUE_AFTER_S,
        retention_s=RETENTION_S,
        clock=world.clock,
    )

    assert recovery.expire() == 5

    assert left_at_each_start == [5, 3, 1]
    assert (world.store.jobs, world.store.events) == ({}, {})


def test_retention_removes_deleted_agents_once_their_last_job_is_gone(
    world: World, services: Services
) -> None:
    services.completed(world.agent)
    services.agents.delete_agent(ALICE, world.agent.id)
    jobless = services.new_agent("Jobless")
    services.agents.delete_agent(ALICE, jobless.id)
    live = services.new_agent("Live")
    world.clock.advance(RETENTION_S)
    recent = services.new_agent("Recent")
    recent_job = services.completed(recent)
    services.agents.delete_agent(ALICE, recent.id)
    world.clock.advance(1)

    services.recovery.expire()

    assert set(world.store.agents) == {live.id, recent.id}
    assert services.jobs.get_job(ALICE, recent_job.id).status == JobStatus.COMPLETED

    world.clock.advance(RETENTION_S)
    services.recovery.expire()

    assert set(world.store.agents) == {live.id}
