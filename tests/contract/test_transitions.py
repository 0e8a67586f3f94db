"""The job transitions behave alike on SQLite and PostgreSQL, alone and in a transaction.

Each case applies the same transition values (`server/store/transitions.py`) through the
one store (`server/store/jobs.py`) to each backend and reads back the committed job and
its events.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from server.store.events import EventSpec, EventType
from server.store.models import JobStatus
from server.store.records import JobRecord
from server.store.store import Store
from server.store.transitions import (
    Attempt,
    cancel_pending,
    finish_attempt,
    record,
    request_cancel,
)
from tests.contract.backends import ROLE, Backend

LEASE = timedelta(minutes=1)
QUEUED = (1, "queued", 0, None, None, None)


def _now() -> datetime:
    return datetime.now(UTC)


async def _claimed(backend: Backend, job: JobRecord, token: str, now: datetime) -> Attempt:
    attempt = await backend.claim(job.id, now=now, token=token, lease_until=now + LEASE)
    assert attempt is not None
    return attempt


def _done(now: datetime, response: str = "Revenue grew 12%.") -> dict[str, Any]:
    return {"status": JobStatus.COMPLETED, "completed_at": now, "response": response}


async def _state(backend: Backend, job: JobRecord, *columns: str) -> tuple[Any, ...]:
    row = await backend.job(job.id)
    return tuple(row[column] for column in columns)


COMPLETED = EventSpec(EventType.COMPLETED)
CANCELLED = EventSpec(EventType.CANCELLED)


# Claims.


async def test_a_claim_wins_a_due_pending_job_once_and_hands_back_its_attempt(
    backend: Backend,
) -> None:
    now = _now()
    job = await backend.seed(due=now)

    first = await backend.claim(job.id, now=now, token="a", lease_until=now + LEASE)
    second = await backend.claim(job.id, now=now, token="b", lease_until=now + LEASE)

    assert first == Attempt(
        job_id=job.id,
        number=1,
        token="a",
        agent_id=job.agent_id,
        prompt=job.prompt,
        role=ROLE,
        tokens_used=0,
        context_id=None,
        tenant_id=job.tenant_id,
        due_at=now,
    )
    assert second is None
    columns = ("status", "run_token", "attempts", "started_at", "lease_expires_at", "event_seq")
    assert await _state(backend, job, *columns) == (JobStatus.RUNNING, "a", 1, now, now + LEASE, 2)
    assert await backend.events(job.id) == [QUEUED, (2, "started", 1, None, None, None)]


async def test_a_job_is_not_claimed_before_it_is_due_and_is_claimed_the_moment_it_is(
    backend: Backend,
) -> None:
    due = _now()
    job = await backend.seed(due=due)
    early = due - timedelta(microseconds=1)

    assert await backend.claim(job.id, now=early, token="early", lease_until=due) is None
    assert await _state(backend, job, "status", "attempts", "event_seq") == (
        JobStatus.PENDING,
        0,
        1,
    )
    assert await backend.events(job.id) == [QUEUED]

    assert (await _claimed(backend, job, "on-time", due)).number == 1


async def test_a_claim_hands_back_no_role_once_the_agent_is_deleted(backend: Backend) -> None:
    now = _now()
    job = await backend.seed(due=now, agent_deleted=True)

    attempt = await _claimed(backend, job, "t", now)

    assert (attempt.number, attempt.role, attempt.prompt) == (1, None, job.prompt)


async def test_nothing_is_claimed_or_changed_for_a_job_that_does_not_exist(
    backend: Backend,
) -> None:
    now, missing = _now(), str(uuid.uuid4())

    assert await backend.claim(missing, now=now, token="t", lease_until=now) is None
    assert not await backend.apply(cancel_pending(missing, at=now))
    assert not await backend.apply(request_cancel(missing))


# Outcomes.


async def test_only_the_attempt_holding_the_job_finishes_it_and_only_once(backend: Backend) -> None:
    now = _now()
    job = await backend.seed(due=now)
    await _claimed(backend, job, "holder", now)

    stale = finish_attempt(
        job.id, token="stale", values=_done(now, "late"), event=COMPLETED, at=now
    )
    holder = finish_attempt(job.id, token="holder", values=_done(now), event=COMPLETED, at=now)

    assert not await backend.apply(stale)
    assert await _state(backend, job, "status", "run_token") == (JobStatus.RUNNING, "holder")
    assert await backend.apply(holder)
    assert not await backend.apply(holder)  # not running any more

    columns = ("status", "response", "completed_at", "run_token", "lease_expires_at")
    assert await _state(backend, job, *columns) == (
        JobStatus.COMPLETED,
        "Revenue grew 12%.",
        now,
        None,
        None,
    )
    assert [row[:3] for row in await backend.events(job.id)] == [
        (1, "queued", 0),
        (2, "started", 1),
        (3, "completed", 1),
    ]


async def test_an_outcome_unless_cancelled_yields_to_a_cancel_request_and_the_cancel_is_recorded(
    backend: Backend,
) -> None:
    now = _now()
    job = await backend.seed(due=now)
    await _claimed(backend, job, "t", now)
    done = finish_attempt(
        job.id, token="t", values=_done(now), event=COMPLETED, at=now, unless_cancelled=True
    )
    cancelled = {"status": JobStatus.CANCELLED, "completed_at": now}

    assert await backend.apply(request_cancel(job.id))
    assert not await backend.apply(done)
    assert await backend.apply(
        finish_attempt(job.id, token="t", values=cancelled, event=CANCELLED, at=now)
    )

    assert await _state(backend, job, "status", "response", "run_token") == (
        JobStatus.CANCELLED,
        None,
        None,
    )
    assert [row[:3] for row in await backend.events(job.id)] == [
        (1, "queued", 0),
        (2, "started", 1),
        (3, "cancelled", 1),
    ]


async def test_an_outcome_unless_cancelled_is_recorded_when_no_cancel_was_requested(
    backend: Backend,
) -> None:
    now = _now()
    job = await backend.seed(due=now)
    await _claimed(backend, job, "t", now)

    assert await backend.apply(
        finish_attempt(
            job.id, token="t", values=_done(now), event=COMPLETED, at=now, unless_cancelled=True
        )
    )
    assert (await _state(backend, job, "status"))[0] == JobStatus.COMPLETED


# Events of a running attempt.


async def test_an_attempt_records_events_while_it_holds_the_job_and_none_once_it_lost_it(
    backend: Backend,
) -> None:
    now = _now()
    job = await backend.seed(due=now)
    await _claimed(backend, job, "first", now)

    async def delta(token: str, text: str) -> bool:
        event = EventSpec(EventType.TOKEN, delta=text)
        return await backend.apply(record(job.id, token=token, event=event, at=now))

    assert await delta("first", "Revenue ")
    assert not await delta("other", "(not held)")
    retry = {"status": JobStatus.PENDING, "next_run_at": now, "last_error": "HTTP 503"}
    retrying = EventSpec(EventType.RETRYING, error="HTTP 503", delay_s=0.0)
    assert await backend.apply(
        finish_attempt(job.id, token="first", values=retry, event=retrying, at=now)
    )
    assert not await delta("first", "(pending)")
    await _claimed(backend, job, "second", now)
    assert not await delta("first", "(lost)")
    assert await delta("second", "grew 12%.")

    assert await backend.events(job.id) == [
        QUEUED,
        (2, "started", 1, None, None, None),
        (3, "token", 1, None, None, "Revenue "),
        (4, "retrying", 1, "HTTP 503", 0.0, None),
        (5, "started", 2, None, None, None),
        (6, "token", 2, None, None, "grew 12%."),
    ]


# Cancels.


async def test_a_pending_job_is_cancelled_at_once_and_a_running_one_is_not(
    backend: Backend,
) -> None:
    now = _now()
    pending, running = await backend.seed(due=now), await backend.seed(due=now)
    await _claimed(backend, running, "t", now)

    assert await backend.apply(cancel_pending(pending.id, at=now))
    assert not await backend.apply(cancel_pending(pending.id, at=now))  # not pending any more
    assert not await backend.apply(cancel_pending(running.id, at=now))

    assert await _state(backend, pending, "status", "completed_at", "event_seq") == (
        JobStatus.CANCELLED,
        now,
        2,
    )
    assert await backend.events(pending.id) == [QUEUED, (2, "cancelled", 0, None, None, None)]
    assert await _state(backend, running, "status", "run_token", "cancel_requested") == (
        JobStatus.RUNNING,
        "t",
        False,
    )
    assert [row[1] for row in await backend.events(running.id)] == ["queued", "started"]


async def test_a_cancel_is_requested_of_a_running_job_only_and_records_no_event(
    backend: Backend,
) -> None:
    now = _now()
    pending, running, finished = [await backend.seed(due=now) for _ in range(3)]
    await _claimed(backend, running, "t", now)
    await _claimed(backend, finished, "f", now)
    await backend.apply(
        finish_attempt(finished.id, token="f", values=_done(now), event=COMPLETED, at=now)
    )

    assert not await backend.apply(request_cancel(pending.id))
    assert await backend.apply(request_cancel(running.id))
    assert not await backend.apply(request_cancel(finished.id))

    assert await _state(backend, pending, "status", "cancel_requested") == (
        JobStatus.PENDING,
        False,
    )
    assert await _state(backend, running, "status", "cancel_requested", "event_seq") == (
        JobStatus.RUNNING,
        True,
        2,
    )
    assert (await _state(backend, finished, "cancel_requested"))[0] is False
    assert [row[1] for row in await backend.events(running.id)] == ["queued", "started"]


# Numbering.


async def test_events_are_numbered_from_one_without_gaps_across_attempts_and_outcomes(
    backend: Backend,
) -> None:
    now = _now()
    job = await backend.seed(due=now)
    unavailable = "Provider returned HTTP 503"
    retry = {"status": JobStatus.PENDING, "next_run_at": now, "last_error": unavailable}
    retrying = EventSpec(EventType.RETRYING, error=unavailable, delay_s=1.5)

    await _claimed(backend, job, "a", now)
    piece = EventSpec(EventType.TOKEN, delta="Revenue")
    assert await backend.apply(record(job.id, token="a", event=piece, at=now))
    assert await backend.apply(
        finish_attempt(job.id, token="a", values=retry, event=retrying, at=now)
    )
    assert not await backend.claim(
        job.id, now=now - timedelta(seconds=1), token="b", lease_until=now
    )
    assert (await _claimed(backend, job, "b", now)).number == 2
    for text in ("Revenue ", "grew 12%."):
        event = EventSpec(EventType.TOKEN, delta=text)
        assert await backend.apply(record(job.id, token="b", event=event, at=now))
    assert await backend.apply(
        finish_attempt(job.id, token="b", values=_done(now), event=COMPLETED, at=now)
    )

    rows = await backend.events(job.id)
    assert [row[0] for row in rows] == list(range(1, 9))
    assert [(kind, attempt) for _, kind, attempt, *_ in rows] == [
        ("queued", 0),
        ("started", 1),
        ("token", 1),
        ("retrying", 1),
        ("started", 2),
        ("token", 2),
        ("token", 2),
        ("completed", 2),
    ]
    assert rows[3][3:5] == (unavailable, 1.5)
    assert await _state(backend, job, "event_seq", "attempts", "status") == (
        8,
        2,
        JobStatus.COMPLETED,
    )


# Transactions.


class _Abandoned(Exception):
    """Raised to leave a transaction without committing it."""


async def test_transitions_in_a_transaction_left_without_commit_record_nothing(
    backend: Backend, store: Store
) -> None:
    # SQLite records an event with a second statement, under the caller's transaction.
    now = _now()
    job = await backend.seed(due=now)

    with pytest.raises(_Abandoned):
        async with store.transaction() as tx:
            assert await tx.jobs.claim(job.id, now=now, token="t", lease_until=now + LEASE)
            piece = EventSpec(EventType.TOKEN, delta="Revenue")
            assert await tx.jobs.apply(record(job.id, token="t", event=piece, at=now))
            raise _Abandoned

    assert await _state(backend, job, "status", "attempts", "run_token", "event_seq") == (
        JobStatus.PENDING,
        0,
        None,
        1,
    )
    assert await backend.events(job.id) == [QUEUED]
    assert (await _claimed(backend, job, "after", now)).number == 1
    assert await backend.events(job.id) == [QUEUED, (2, "started", 1, None, None, None)]
