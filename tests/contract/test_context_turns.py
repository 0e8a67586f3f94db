"""A completion stores its job's turn of its context with its completed state or not at all,
and an attempt reads its context's earlier turns, alike on SQLite and PostgreSQL, alone and
in a transaction."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from server.store.events import EventSpec, EventType
from server.store.models import JobStatus
from server.store.records import JobRecord, TurnRecord
from server.store.store import Store
from server.store.transitions import Transition, finish_attempt, request_cancel
from tests.contract.backends import TENANT, Backend

LEASE = timedelta(minutes=1)
ANSWER = "Revenue grew 12%."


def _context() -> str:
    # The databases are shared by the session: each test names contexts of its own.
    return f"ctx-{uuid.uuid4().hex}"


def _completion(job: JobRecord, at: datetime, response: str = ANSWER) -> Transition:
    values = {"status": JobStatus.COMPLETED, "completed_at": at, "response": response}
    event = EventSpec(EventType.COMPLETED)
    return finish_attempt(
        job.id, token=job.id, values=values, event=event, at=at, unless_cancelled=True, turn=True
    )


async def _completed(
    backend: Backend,
    at: datetime,
    context_id: str | None,
    *,
    tenant: str = TENANT,
    prompt: str = "Summarise the quarterly report.",
) -> JobRecord:
    """A job of the context, claimed and completed at `at`, its turn stored."""
    job = await backend.seed(due=at, context_id=context_id, tenant=tenant, prompt=prompt)
    assert await backend.claim(job.id, now=at, token=job.id, lease_until=at + LEASE)
    assert await backend.apply(_completion(job, at, f"answer to {job.prompt}"))
    return job


async def test_a_completion_stores_the_jobs_prompt_and_answer_as_a_turn_of_its_context(
    backend: Backend,
) -> None:
    now, context_id = datetime.now(UTC), _context()
    job = await backend.seed(due=now, context_id=context_id)

    attempt = await backend.claim(job.id, now=now, token=job.id, lease_until=now + LEASE)
    assert attempt is not None and attempt.context_id == context_id
    assert await backend.apply(_completion(job, now))

    assert await backend.turns(job.id) == [
        TurnRecord(job.id, TENANT, context_id, job.prompt, ANSWER, now)
    ]
    assert [row[1] for row in await backend.events(job.id)] == ["queued", "started", "completed"]
    assert (await backend.job(job.id))["status"] == JobStatus.COMPLETED


async def test_a_completion_of_a_job_without_a_context_stores_no_turn(backend: Backend) -> None:
    now = datetime.now(UTC)
    job = await backend.seed(due=now)
    assert await backend.claim(job.id, now=now, token=job.id, lease_until=now + LEASE)

    assert await backend.apply(_completion(job, now))

    assert await backend.turns(job.id) == []
    assert (await backend.job(job.id))["status"] == JobStatus.COMPLETED


async def test_a_completion_that_yields_to_a_cancel_request_stores_no_turn(
    backend: Backend,
) -> None:
    now = datetime.now(UTC)
    job = await backend.seed(due=now, context_id=_context())
    assert await backend.claim(job.id, now=now, token=job.id, lease_until=now + LEASE)
    assert await backend.apply(request_cancel(job.id))

    assert not await backend.apply(_completion(job, now))

    assert await backend.turns(job.id) == []
    assert (await backend.job(job.id))["status"] == JobStatus.RUNNING


class _Abandoned(Exception):
    """Raised to leave a transaction without committing it."""


async def test_a_completion_in_a_transaction_left_without_commit_stores_no_turn(
    backend: Backend, store: Store
) -> None:
    now = datetime.now(UTC)
    job = await backend.seed(due=now, context_id=_context())
    assert await backend.claim(job.id, now=now, token=job.id, lease_until=now + LEASE)

    with pytest.raises(_Abandoned):
        async with store.transaction() as tx:
            assert await tx.jobs.apply(_completion(job, now))
            raise _Abandoned

    assert await backend.turns(job.id) == []
    assert (await backend.job(job.id))["status"] == JobStatus.RUNNING


async def test_an_attempt_reads_its_own_contexts_turns_completed_by_its_claim_newest_first(
    backend: Backend,
) -> None:
    start, context_id = datetime.now(UTC) - timedelta(minutes=5), _context()
    first = await _completed(backend, start, context_id, prompt="first")
    second = await _completed(backend, start + timedelta(seconds=1), context_id, prompt="second")
    # The same name in another tenant, and another context of the tenant.
    await _completed(backend, start, context_id, tenant="globex")
    await _completed(backend, start, _context())
    claimed_at = start + timedelta(seconds=2)
    reader = await backend.seed(due=claimed_at, context_id=context_id)
    assert await backend.claim(reader.id, now=claimed_at, token="r", lease_until=claimed_at + LEASE)
    # Completed after the reader's claim: a later execution's history, not this one's.
    await _completed(backend, claimed_at + timedelta(seconds=1), context_id, prompt="later")

    seen = await backend.history(reader.id, limit=10)

    assert [(t.job_id, t.prompt, t.response) for t in seen] == [
        (second.id, "second", "answer to second"),
        (first.id, "first", "answer to first"),
    ]
    assert [t.job_id for t in await backend.history(reader.id, limit=1)] == [second.id]
