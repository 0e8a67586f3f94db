"""The recovery sweeper gives back lost runs and re-sends lost messages."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest

from server.service.recovery import Recovery
from server.store.models import JobStatus
from server.store.records import AgentRecord, EventRecord, JobRecord
from server.worker.policy import RetryPolicy
from tests.world import World

POLICY = RetryPolicy(max_attempts=3, time_limit_s=120, lease_grace_s=15)
REQUEUE_AFTER_S = 30.0
JOB_ID = "5d1e8a01-6f0c-4a8e-9a51-0b7c2d562f4e"


def _ago(world: World, seconds: float) -> datetime:
    return world.clock.now - timedelta(seconds=seconds)


async def _running(
    world: World,
    agent: AgentRecord,
    *,
    attempts: int,
    lease_left_s: float,
    job_id: str = JOB_ID,
    **overrides: Any,
) -> JobRecord:
    """Store a job whose attempt `attempts` is running, its lease ending in `lease_left_s`."""
    queued = _ago(world, 600)
    started = _ago(world, POLICY.lease_s - lease_left_s)
    return await world.add_job(
        agent,
        id=job_id,
        queued_at=queued,
        next_run_at=queued,
        enqueued_at=queued,
        status=JobStatus.RUNNING.value,
        attempts=attempts,
        started_at=started,
        run_token=f"token-of-attempt-{attempts}",
        lease_expires_at=started + timedelta(seconds=POLICY.lease_s),
        **overrides,
    )


async def _pending(
    world: World, agent: AgentRecord, *, sent_s_ago: float, job_id: str = JOB_ID
) -> JobRecord:
    """Store a pending job whose newest message was due `sent_s_ago` seconds ago."""
    sent = _ago(world, sent_s_ago)
    return await world.add_job(agent, id=job_id, queued_at=sent, next_run_at=sent, enqueued_at=sent)


async def _row(world: World, job_id: str) -> JobRecord:
    job = await world.job(job_id)
    assert job is not None
    return job


@pytest.fixture
async def agent(world: World) -> AgentRecord:
    """The one stored agent; the world sweeps with POLICY."""
    world.policy = POLICY
    return await world.add_agent()


@pytest.fixture
def recovery(world: World, agent: AgentRecord) -> Recovery:
    return world.recovery(requeue_after_s=REQUEUE_AFTER_S)


def _lost_message(attempt: int) -> str:
    return f"Attempt {attempt} was lost: its worker stopped or it ran past the time limit of 120s"


async def _swept_once(world: World, recovery: Recovery, job: JobRecord) -> JobRecord:
    """Sweep, finding exactly one job to recover; the job's row after."""
    assert await recovery.sweep() == 1
    return await _row(world, job.id)


# Lost runs.


async def test_a_running_job_whose_lease_ran_out_goes_back_to_pending_and_is_sent_again(
    world: World, agent: AgentRecord, recovery: Recovery
) -> None:
    job = await _running(world, agent, attempts=1, lease_left_s=-1)

    row = await _swept_once(world, recovery, job)
    assert row.status == JobStatus.PENDING
    assert row.attempts == 1  # the lost attempt still counts
    assert (row.run_token, row.lease_expires_at) == (None, None)
    assert row.next_run_at == row.enqueued_at == world.clock.now
    assert row.last_error == _lost_message(1)
    assert (row.error, row.completed_at) == (None, None)
    assert world.queue.calls == [(job.id, 0.0)]


async def test_a_lost_run_on_its_last_attempt_ends_failed_and_is_not_sent_again(
    world: World, agent: AgentRecord, recovery: Recovery
) -> None:
    job = await _running(world, agent, attempts=3, lease_left_s=-1)

    row = await _swept_once(world, recovery, job)
    assert row.status == JobStatus.FAILED
    assert row.error == row.last_error == _lost_message(3)
    assert (row.response, row.attempts, row.completed_at) == ("", 3, world.clock.now)
    assert row.run_token is None
    assert world.queue.calls == []


@pytest.mark.parametrize("lease_left_s", [0, 1, POLICY.lease_s])
async def test_a_running_job_whose_lease_has_not_run_out_is_left_alone(
    world: World, agent: AgentRecord, recovery: Recovery, lease_left_s: float
) -> None:
    job = await _running(world, agent, attempts=1, lease_left_s=lease_left_s)
    before = await _row(world, job.id)

    assert await recovery.sweep() == 0

    assert await _row(world, job.id) == before
    assert world.queue.calls == []


async def test_a_lost_run_is_given_back_once_however_often_the_sweeper_runs(
    world: World, agent: AgentRecord, recovery: Recovery
) -> None:
    job = await _running(world, agent, attempts=1, lease_left_s=-1)

    await recovery.sweep()
    world.clock.advance(1)
    await recovery.sweep()

    assert world.queue.calls == [(job.id, 0.0)]


async def test_a_lost_run_whose_message_could_not_be_sent_is_sent_by_the_next_sweep(
    world: World, agent: AgentRecord, recovery: Recovery
) -> None:
    job = await _running(world, agent, attempts=1, lease_left_s=-1)
    world.queue.error = ConnectionError("Redis is down")
    await recovery.sweep()
    assert (await _row(world, job.id)).status == JobStatus.PENDING

    world.queue.error = None
    world.clock.advance(1)
    await recovery.sweep()

    assert world.queue.calls == [(job.id, 0.0), (job.id, 0.0)]


async def test_a_batch_that_could_not_be_sent_is_sent_whole_by_the_next_sweep(
    world: World, agent: AgentRecord, recovery: Recovery
) -> None:
    first = await _running(
        world, agent, attempts=1, lease_left_s=-2, job_id="00000000-0000-4000-8000-00000000000a"
    )
    second = await _running(
        world, agent, attempts=1, lease_left_s=-1, job_id="00000000-0000-4000-8000-00000000000b"
    )

    def refuse_the_first(job_id: str, delay_s: float) -> None:
        if job_id == first.id:
            raise ConnectionError("Redis is down")

    world.queue.on_enqueue = refuse_the_first
    await recovery.sweep()
    assert world.queue.calls == []
    statuses = {(await _row(world, first.id)).status, (await _row(world, second.id)).status}
    assert statuses == {JobStatus.PENDING}

    world.queue.on_enqueue = None
    world.clock.advance(1)
    await recovery.sweep()

    assert sorted(world.queue.calls) == [(first.id, 0.0), (second.id, 0.0)]


# Lost messages.


async def test_a_pending_job_whose_message_is_overdue_is_sent_again_once(
    world: World, agent: AgentRecord, recovery: Recovery
) -> None:
    job = await _pending(world, agent, sent_s_ago=REQUEUE_AFTER_S + 1)

    assert await recovery.sweep() == 1
    assert (await _row(world, job.id)).enqueued_at == world.clock.now
    assert await recovery.sweep() == 0

    assert world.queue.calls == [(job.id, 0.0)]
    assert (await _row(world, job.id)).status == JobStatus.PENDING


async def test_a_resent_message_that_is_lost_too_is_sent_again_after_another_wait(
    world: World, agent: AgentRecord, recovery: Recovery
) -> None:
    job = await _pending(world, agent, sent_s_ago=REQUEUE_AFTER_S + 1)
    await recovery.sweep()

    world.clock.advance(REQUEUE_AFTER_S - 1)
    await recovery.sweep()
    world.clock.advance(2)
    await recovery.sweep()

    assert world.queue.calls == [(job.id, 0.0), (job.id, 0.0)]


def _logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "server.service.recovery"]


async def test_a_failed_resend_is_logged_as_failed_and_sent_by_the_next_sweep(
    world: World, agent: AgentRecord, recovery: Recovery, caplog: pytest.LogCaptureFixture
) -> None:
    job = await _pending(world, agent, sent_s_ago=REQUEUE_AFTER_S + 1)
    world.queue.error = ConnectionError("Redis is down")

    assert await recovery.sweep() == 0

    assert _logged(caplog) == [
        f"could not send 1 job messages ({job.id}, ...); the next sweep sends them"
    ]
    caplog.clear()
    world.queue.error = None
    assert await recovery.sweep() == 0  # not twice in the same instant
    world.clock.advance(1)
    assert await recovery.sweep() == 1
    assert _logged(caplog) == ["re-sent 1 pending jobs whose message was overdue"]
    assert world.queue.calls == [(job.id, 0.0), (job.id, 0.0)]
    assert (await _row(world, job.id)).enqueued_at == world.clock.now


async def test_overdue_messages_go_out_in_batches_each_committed_before_it_is_sent(
    world: World, agent: AgentRecord, recovery: Recovery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("server.service.recovery.BATCH", 2)
    jobs = [
        await _pending(
            world,
            agent,
            sent_s_ago=REQUEUE_AFTER_S + 10 - n,
            job_id=f"00000000-0000-4000-8000-00000000000{n}",
        )
        for n in range(5)
    ]
    loop = asyncio.get_running_loop()
    batches: list[list[str]] = []

    async def sent_at(job_ids: Sequence[str]) -> list[datetime]:
        return [(await _row(world, job_id)).enqueued_at for job_id in job_ids]

    def send(job_ids: Sequence[str]) -> None:
        # What a worker given the message would see: the job re-sent, committed. The
        # sweeper sends from a thread of its own, while the loop reads the store.
        seen = asyncio.run_coroutine_threadsafe(sent_at(job_ids), loop).result(timeout=10)
        assert seen == [world.clock.now] * len(job_ids)
        batches.append(list(job_ids))

    monkeypatch.setattr(world.queue, "enqueue_many", send)

    assert await recovery.sweep() == 5

    ids = [job.id for job in jobs]
    assert batches == [ids[0:2], ids[2:4], ids[4:]]


@pytest.mark.parametrize("sent_s_ago", [0, REQUEUE_AFTER_S - 1, REQUEUE_AFTER_S, -60])
async def test_a_pending_job_whose_message_is_not_overdue_is_not_sent_again(
    world: World, agent: AgentRecord, recovery: Recovery, sent_s_ago: float
) -> None:
    # -60: a retry whose delayed message is due in a minute.
    job = await _pending(world, agent, sent_s_ago=sent_s_ago)
    before = await _row(world, job.id)

    assert await recovery.sweep() == 0

    assert await _row(world, job.id) == before
    assert world.queue.calls == []


# Finished jobs.


@pytest.mark.parametrize("status", [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED])
async def test_finished_jobs_are_never_touched(
    world: World, agent: AgentRecord, recovery: Recovery, status: JobStatus
) -> None:
    long_ago = _ago(world, 3600)
    job = await world.add_job(
        agent,
        id=JOB_ID,
        queued_at=long_ago,
        next_run_at=long_ago,
        enqueued_at=long_ago,
        status=status.value,
        attempts=3,
        started_at=long_ago,
        completed_at=long_ago,
        # Leftovers that would match a sweep if status were not checked.
        run_token="stale-token",
        lease_expires_at=long_ago,
    )
    before = await _row(world, job.id)

    assert await recovery.sweep() == 0

    assert await _row(world, job.id) == before
    assert world.queue.calls == []


# What a lost run tells its watchers.


async def _events(
    world: World, job_id: str
) -> list[tuple[int, str, int, str | None, float | None]]:
    """The job's events after the QUEUED one it was stored with."""
    stored: list[EventRecord] = await world.events(job_id)
    assert stored[0].type == "queued"
    return [(e.sequence, e.type, e.attempt, e.error, e.delay_s) for e in stored[1:]]


async def test_a_lost_run_that_is_tried_again_tells_so_in_a_retrying_event(
    world: World, agent: AgentRecord, recovery: Recovery
) -> None:
    job = await _running(world, agent, attempts=1, lease_left_s=-1, event_seq=2)  # queued, started

    await recovery.sweep()

    assert await _events(world, job.id) == [(3, "retrying", 1, _lost_message(1), 0.0)]


async def test_a_lost_run_on_its_last_attempt_tells_so_in_a_failed_event(
    world: World, agent: AgentRecord, recovery: Recovery
) -> None:
    job = await _running(world, agent, attempts=3, lease_left_s=-1, event_seq=6)

    await recovery.sweep()

    assert await _events(world, job.id) == [(7, "failed", 3, _lost_message(3), None)]


@pytest.mark.parametrize("attempts", [1, POLICY.max_attempts])
async def test_a_lost_run_whose_cancel_was_requested_ends_cancelled_not_retried(
    world: World, agent: AgentRecord, recovery: Recovery, attempts: int
) -> None:
    job = await _running(
        world, agent, attempts=attempts, lease_left_s=-1, cancel_requested=True, event_seq=2
    )

    row = await _swept_once(world, recovery, job)
    assert (row.status, row.completed_at, row.run_token) == (
        JobStatus.CANCELLED,
        world.clock.now,
        None,
    )
    assert row.error is None
    assert await _events(world, job.id) == [(3, "cancelled", attempts, None, None)]
    assert world.queue.calls == []
