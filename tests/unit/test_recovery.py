"""The recovery sweeper gives back runs whose worker was lost and re-sends lost messages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from server.models import Agent, Job, JobStatus
from server.recovery import Recovery
from server.runner import RetryPolicy
from tests.unit.fakes import FakeClock, FakeQueue, FakeStore, make_agent, make_job, snapshot

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

    def running(self, *, attempts: int, lease_left_s: float, job_id: str = JOB_ID) -> Job:
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


def test_a_lost_run_whose_message_could_not_be_sent_is_sent_by_a_later_sweep(
    world: World,
) -> None:
    job = world.running(attempts=1, lease_left_s=-1)
    world.queue.error = ConnectionError("Redis is down")
    world.recovery.sweep()
    assert world.store.jobs[job.id].status == JobStatus.PENDING

    world.queue.error = None
    world.clock.advance(REQUEUE_AFTER_S + 1)
    world.recovery.sweep()

    assert world.queue.calls == [(job.id, 0.0), (job.id, 0.0)]


def test_a_message_that_cannot_be_sent_does_not_hold_back_the_others(world: World) -> None:
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

    assert world.queue.calls == [(second.id, 0.0)]
    assert world.store.jobs[first.id].status == JobStatus.PENDING


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
