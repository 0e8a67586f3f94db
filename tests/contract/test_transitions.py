"""The job transitions behave alike on every store: the fake, SQLite and PostgreSQL.

Each case applies the same transition values (`server/store/transitions.py`) to each backend
and reads back the committed job and its events.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from server.store.events import EventSpec, EventType
from server.store.models import Job, JobStatus
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


def _claimed(backend: Backend, job: Job, token: str, now: datetime) -> Attempt:
    attempt = backend.claim(job.id, now=now, token=token, lease_until=now + LEASE)
    assert attempt is not None
    return attempt


def _done(now: datetime, response: str = "Revenue grew 12%.") -> dict[str, Any]:
    return {"status": JobStatus.COMPLETED, "completed_at": now, "response": response}


def _state(backend: Backend, job: Job, *columns: str) -> tuple[Any, ...]:
    row = backend.job(job.id)
    return tuple(row[column] for column in columns)


COMPLETED = EventSpec(EventType.COMPLETED)
CANCELLED = EventSpec(EventType.CANCELLED)


# Claims.


def test_a_claim_wins_a_due_pending_job_once_and_hands_back_its_attempt(
    backend: Backend,
) -> None:
    now = _now()
    job = backend.seed(due=now)

    first = backend.claim(job.id, now=now, token="a", lease_until=now + LEASE)
    second = backend.claim(job.id, now=now, token="b", lease_until=now + LEASE)

    assert first == Attempt(
        job_id=job.id,
        number=1,
        token="a",
        agent_id=job.agent_id,
        prompt=job.prompt,
        role=ROLE,
        tokens_used=0,
    )
    assert second is None
    columns = ("status", "run_token", "attempts", "started_at", "lease_expires_at", "event_seq")
    assert _state(backend, job, *columns) == (JobStatus.RUNNING, "a", 1, now, now + LEASE, 2)
    assert backend.events(job.id) == [QUEUED, (2, "started", 1, None, None, None)]


def test_a_job_is_not_claimed_before_it_is_due_and_is_claimed_the_moment_it_is(
    backend: Backend,
) -> None:
    due = _now()
    job = backend.seed(due=due)
    early = due - timedelta(microseconds=1)

    assert backend.claim(job.id, now=early, token="early", lease_until=due) is None
    assert _state(backend, job, "status", "attempts", "event_seq") == (JobStatus.PENDING, 0, 1)
    assert backend.events(job.id) == [QUEUED]

    assert _claimed(backend, job, "on-time", due).number == 1


def test_a_claim_hands_back_no_role_once_the_agent_is_deleted(backend: Backend) -> None:
    now = _now()
    job = backend.seed(due=now, agent_deleted=True)

    attempt = _claimed(backend, job, "t", now)

    assert (attempt.number, attempt.role, attempt.prompt) == (1, None, job.prompt)


def test_nothing_is_claimed_or_changed_for_a_job_that_does_not_exist(backend: Backend) -> None:
    now, missing = _now(), str(uuid.uuid4())

    assert backend.claim(missing, now=now, token="t", lease_until=now) is None
    assert not backend.apply(cancel_pending(missing, at=now))
    assert not backend.apply(request_cancel(missing))


# Outcomes.


def test_only_the_attempt_holding_the_job_finishes_it_and_only_once(backend: Backend) -> None:
    now = _now()
    job = backend.seed(due=now)
    _claimed(backend, job, "holder", now)

    stale = finish_attempt(
        job.id, token="stale", values=_done(now, "late"), event=COMPLETED, at=now
    )
    holder = finish_attempt(job.id, token="holder", values=_done(now), event=COMPLETED, at=now)

    assert not backend.apply(stale)
    assert _state(backend, job, "status", "run_token") == (JobStatus.RUNNING, "holder")
    assert backend.apply(holder)
    assert not backend.apply(holder)  # not running any more

    columns = ("status", "response", "completed_at", "run_token", "lease_expires_at")
    assert _state(backend, job, *columns) == (
        JobStatus.COMPLETED,
        "Revenue grew 12%.",
        now,
        None,
        None,
    )
    assert [row[:3] for row in backend.events(job.id)] == [
        (1, "queued", 0),
        (2, "started", 1),
        (3, "completed", 1),
    ]


def test_an_outcome_unless_cancelled_yields_to_a_cancel_request_and_the_cancel_is_recorded(
    backend: Backend,
) -> None:
    now = _now()
    job = backend.seed(due=now)
    _claimed(backend, job, "t", now)
    done = finish_attempt(
        job.id, token="t", values=_done(now), event=COMPLETED, at=now, unless_cancelled=True
    )
    cancelled = {"status": JobStatus.CANCELLED, "completed_at": now}

    assert backend.apply(request_cancel(job.id))
    assert not backend.apply(done)
    assert backend.apply(
        finish_attempt(job.id, token="t", values=cancelled, event=CANCELLED, at=now)
    )

    assert _state(backend, job, "status", "response", "run_token") == (
        JobStatus.CANCELLED,
        None,
        None,
    )
    assert [row[:3] for row in backend.events(job.id)] == [
        (1, "queued", 0),
        (2, "started", 1),
        (3, "cancelled", 1),
    ]


def test_an_outcome_unless_cancelled_is_recorded_when_no_cancel_was_requested(
    backend: Backend,
) -> None:
    now = _now()
    job = backend.seed(due=now)
    _claimed(backend, job, "t", now)

    assert backend.apply(
        finish_attempt(
            job.id, token="t", values=_done(now), event=COMPLETED, at=now, unless_cancelled=True
        )
    )
    assert _state(backend, job, "status")[0] == JobStatus.COMPLETED


# Events of a running attempt.


def test_an_attempt_records_events_while_it_holds_the_job_and_none_once_it_lost_it(
    backend: Backend,
) -> None:
    now = _now()
    job = backend.seed(due=now)
    _claimed(backend, job, "first", now)

    def delta(token: str, text: str) -> bool:
        event = EventSpec(EventType.TOKEN, delta=text)
        return backend.apply(record(job.id, token=token, event=event, at=now))

    assert delta("first", "Revenue ")
    assert not delta("other", "(not held)")
    retry = {"status": JobStatus.PENDING, "next_run_at": now, "last_error": "HTTP 503"}
    retrying = EventSpec(EventType.RETRYING, error="HTTP 503", delay_s=0.0)
    assert backend.apply(
        finish_attempt(job.id, token="first", values=retry, event=retrying, at=now)
    )
    assert not delta("first", "(pending)")
    _claimed(backend, job, "second", now)
    assert not delta("first", "(lost)")
    assert delta("second", "grew 12%.")

    assert backend.events(job.id) == [
        QUEUED,
        (2, "started", 1, None, None, None),
        (3, "token", 1, None, None, "Revenue "),
        (4, "retrying", 1, "HTTP 503", 0.0, None),
        (5, "started", 2, None, None, None),
        (6, "token", 2, None, None, "grew 12%."),
    ]


# Cancels.


def test_a_pending_job_is_cancelled_at_once_and_a_running_one_is_not(backend: Backend) -> None:
    now = _now()
    pending, running = backend.seed(due=now), backend.seed(due=now)
    _claimed(backend, running, "t", now)

    assert backend.apply(cancel_pending(pending.id, at=now))
    assert not backend.apply(cancel_pending(pending.id, at=now))  # not pending any more
    assert not backend.apply(cancel_pending(running.id, at=now))

    assert _state(backend, pending, "status", "completed_at", "event_seq") == (
        JobStatus.CANCELLED,
        now,
        2,
    )
    assert backend.events(pending.id) == [QUEUED, (2, "cancelled", 0, None, None, None)]
    assert _state(backend, running, "status", "run_token", "cancel_requested") == (
        JobStatus.RUNNING,
        "t",
        False,
    )
    assert [row[1] for row in backend.events(running.id)] == ["queued", "started"]


def test_a_cancel_is_requested_of_a_running_job_only_and_records_no_event(
    backend: Backend,
) -> None:
    now = _now()
    pending, running, finished = (backend.seed(due=now) for _ in range(3))
    _claimed(backend, running, "t", now)
    _claimed(backend, finished, "f", now)
    backend.apply(
        finish_attempt(finished.id, token="f", values=_done(now), event=COMPLETED, at=now)
    )

    assert not backend.apply(request_cancel(pending.id))
    assert backend.apply(request_cancel(running.id))
    assert not backend.apply(request_cancel(finished.id))

    assert _state(backend, pending, "status", "cancel_requested") == (JobStatus.PENDING, False)
    assert _state(backend, running, "status", "cancel_requested", "event_seq") == (
        JobStatus.RUNNING,
        True,
        2,
    )
    assert _state(backend, finished, "cancel_requested")[0] is False
    assert [row[1] for row in backend.events(running.id)] == ["queued", "started"]


# Numbering.


def test_events_are_numbered_from_one_without_gaps_across_attempts_and_outcomes(
    backend: Backend,
) -> None:
    now = _now()
    job = backend.seed(due=now)
    unavailable = "Provider returned HTTP 503"
    retry = {"status": JobStatus.PENDING, "next_run_at": now, "last_error": unavailable}
    retrying = EventSpec(EventType.RETRYING, error=unavailable, delay_s=1.5)

    _claimed(backend, job, "a", now)
    piece = EventSpec(EventType.TOKEN, delta="Revenue")
    assert backend.apply(record(job.id, token="a", event=piece, at=now))
    assert backend.apply(finish_attempt(job.id, token="a", values=retry, event=retrying, at=now))
    assert not backend.claim(job.id, now=now - timedelta(seconds=1), token="b", lease_until=now)
    assert _claimed(backend, job, "b", now).number == 2
    for piece in ("Revenue ", "grew 12%."):
        event = EventSpec(EventType.TOKEN, delta=piece)
        assert backend.apply(record(job.id, token="b", event=event, at=now))
    assert backend.apply(
        finish_attempt(job.id, token="b", values=_done(now), event=COMPLETED, at=now)
    )

    rows = backend.events(job.id)
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
    assert _state(backend, job, "event_seq", "attempts", "status") == (
        8,
        2,
        JobStatus.COMPLETED,
    )
