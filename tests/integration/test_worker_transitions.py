"""The worker's store on real databases: the one store, on PostgreSQL and on SQLite.

Runs, retries, races of claims and outcomes that lose to a cancel or a lost claim, each
through the AttemptStore a worker uses (`server/worker/store.py`) over the store.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

from server.providers.base import Completion, ProviderError
from server.store.events import EventSpec, EventType
from server.store.models import JobStatus
from server.store.records import JobRecord
from server.store.transitions import Attempt, finish_attempt, record
from server.worker.policy import RetryPolicy
from server.worker.store import DatabaseAttemptStore
from tests.fakes.provider import ScriptedProvider, Stream
from tests.integration.conftest import Stores
from tests.world import ALICE, World

ROLE = "You are a careful research assistant."
RACERS = 16


async def _store(world: World, *, agent_deleted: bool = False) -> JobRecord:
    """A stored agent and one pending job of it, due a second ago, with its QUEUED event."""
    now = world.clock.now
    agent = await world.add_agent(role=ROLE, deleted_at=now if agent_deleted else None)
    due = now - timedelta(seconds=1)
    return await world.add_job(agent, queued_at=due, next_run_at=due, enqueued_at=due)


async def _job(world: World, job_id: str) -> JobRecord:
    job = await world.job(job_id)
    assert job is not None
    return job


async def _events(world: World, job_id: str) -> list[tuple[int, str, int]]:
    """(sequence, type, attempt) of the job's events, in order."""
    return [(e.sequence, e.type, e.attempt) for e in await world.events(job_id)]


async def _rows(world: World, job_id: str) -> list[tuple[Any, ...]]:
    return [
        (e.sequence, e.type, e.attempt, e.error, e.delay_s, e.delta)
        for e in await world.events(job_id)
    ]


async def _request_cancel(world: World, job_id: str) -> None:
    """Cancel the job as the API does: a running one is asked to stop."""
    assert (await world.jobs.cancel_job(ALICE, job_id)).cancel_requested


# Whole attempts.


async def test_a_worker_runs_a_job_to_completion_with_its_events_numbered_in_order(
    db_world: World,
) -> None:
    job = await _store(db_world)
    provider = ScriptedProvider(Completion(text="Revenue grew 12%.", tokens_used=7))

    assert await db_world.run_job(db_world.runner(provider), job.id)

    stored = await _job(db_world, job.id)
    assert (stored.status, stored.response, stored.tokens_used) == (
        JobStatus.COMPLETED,
        "Revenue grew 12%.",
        7,
    )
    assert (stored.attempts, stored.run_token, stored.lease_expires_at) == (1, None, None)
    assert stored.completed_at is not None and stored.completed_at.tzinfo is not None
    assert stored.context_hash is not None
    assert provider.calls[0].system == ROLE
    assert await _events(db_world, job.id) == [
        (1, "queued", 0),
        (2, "started", 1),
        (3, "completed", 1),
    ]


async def test_a_retried_job_records_each_attempt_its_tokens_and_its_end_in_one_sequence(
    db_world: World,
) -> None:
    job = await _store(db_world)
    unavailable = ProviderError("Provider returned HTTP 503", retryable=True, tokens_used=2)
    provider = ScriptedProvider(unavailable, Stream(("Revenue ", "grew 12%."), tokens_used=7))
    runner = db_world.runner(provider, policy=RetryPolicy(backoff_s=0))

    assert await db_world.run_job(runner, job.id)
    assert await db_world.run_job(runner, job.id)  # the retry's message

    stored = await _job(db_world, job.id)
    assert (stored.status, stored.attempts, stored.tokens_used, stored.response) == (
        JobStatus.COMPLETED,
        2,
        2 + 7,
        "Revenue grew 12%.",
    )
    assert db_world.queue.calls == [(job.id, 0.0)]
    rows = await _rows(db_world, job.id)
    assert [row[0] for row in rows] == list(range(1, len(rows) + 1))
    assert rows[:4] == [
        (1, "queued", 0, None, None, None),
        (2, "started", 1, None, None, None),
        (3, "retrying", 1, "Provider returned HTTP 503", 0.0, None),
        (4, "started", 2, None, None, None),
    ]
    tokens = rows[4:-1]
    assert {(kind, attempt) for _, kind, attempt, *_ in tokens} == {("token", 2)}
    assert "".join(row[5] for row in tokens) == "Revenue grew 12%."
    assert rows[-1][1:3] == ("completed", 2)


# Claims.


async def test_a_claim_hands_back_the_attempt_and_no_role_once_the_agent_is_deleted(
    db_world: World,
) -> None:
    live, orphan = await _store(db_world), await _store(db_world, agent_deleted=True)
    store, now = DatabaseAttemptStore(db_world.store), db_world.clock.now

    attempt = await store.claim(live.id, now=now, token="t1", lease_until=now)
    gone = await store.claim(orphan.id, now=now, token="t2", lease_until=now)

    assert attempt is not None and gone is not None
    assert (attempt.number, attempt.token, attempt.role, attempt.prompt) == (
        1,
        "t1",
        ROLE,
        live.prompt,
    )
    assert (attempt.agent_id, attempt.tokens_used) == (live.agent_id, 0)
    assert gone.role is None
    assert await _events(db_world, live.id) == [(1, "queued", 0), (2, "started", 1)]


async def test_a_job_is_due_when_its_next_run_comes_and_not_once_it_runs(
    db_world: World,
) -> None:
    job = await _store(db_world)
    store, now = DatabaseAttemptStore(db_world.store), db_world.clock.now

    pending = await store.due_at(job.id)
    await store.claim(job.id, now=now, token="t", lease_until=now)
    running, unknown = await store.due_at(job.id), await store.due_at(str(uuid.uuid4()))

    assert pending == job.next_run_at
    assert (running, unknown) == (None, None)


async def test_only_one_of_many_racing_claims_wins_a_job(db_world: World, stores: Stores) -> None:
    job = await _store(db_world)
    now = db_world.clock.now
    # Workers in as many processes: each a store with a pool of its own.
    workers = [DatabaseAttemptStore(await stores.open(pool_size=1)) for _ in range(RACERS)]

    async def claim(worker: DatabaseAttemptStore, token: str) -> Attempt | None:
        return await worker.claim(
            job.id, now=now, token=token, lease_until=now + timedelta(minutes=1)
        )

    claims = [claim(worker, f"t{n}") for n, worker in enumerate(workers)]
    wins = [won.token for won in await asyncio.gather(*claims) if won is not None]

    assert len(wins) == 1
    stored = await _job(db_world, job.id)
    assert (stored.status, stored.run_token, stored.attempts) == (JobStatus.RUNNING, wins[0], 1)
    assert [kind for _, kind, _ in await _events(db_world, job.id)] == ["queued", "started"]


async def test_a_job_not_due_yet_is_not_claimed(db_world: World) -> None:
    job = await _store(db_world)
    before_due = job.next_run_at - timedelta(seconds=1)
    store = DatabaseAttemptStore(db_world.store)

    assert await store.claim(job.id, now=before_due, token="t", lease_until=before_due) is None
    assert (await _job(db_world, job.id)).status == JobStatus.PENDING
    assert await _events(db_world, job.id) == [(1, "queued", 0)]


# Outcomes.


async def test_an_outcome_loses_to_a_cancel_request_and_the_cancel_is_recorded_instead(
    db_world: World,
) -> None:
    job = await _store(db_world)
    store, now = DatabaseAttemptStore(db_world.store), db_world.clock.now
    done = {"status": JobStatus.COMPLETED, "completed_at": now, "response": "late"}
    cancelled = {"status": JobStatus.CANCELLED, "completed_at": now}
    assert await store.claim(job.id, now=now, token="t", lease_until=now) is not None

    await _request_cancel(db_world, job.id)
    won_completed = await store.apply(
        finish_attempt(
            job.id,
            token="t",
            values=done,
            event=EventSpec(EventType.COMPLETED),
            at=now,
            unless_cancelled=True,
        )
    )
    won_cancelled = await store.apply(
        finish_attempt(
            job.id, token="t", values=cancelled, event=EventSpec(EventType.CANCELLED), at=now
        )
    )

    assert (won_completed, won_cancelled) == (False, True)
    stored = await _job(db_world, job.id)
    assert (stored.status, stored.response, stored.run_token) == (JobStatus.CANCELLED, None, None)
    assert await _events(db_world, job.id) == [
        (1, "queued", 0),
        (2, "started", 1),
        (3, "cancelled", 1),
    ]


async def test_only_the_attempt_holding_the_job_records_events_and_its_outcome_once(
    db_world: World,
) -> None:
    job = await _store(db_world)
    store, now = DatabaseAttemptStore(db_world.store), db_world.clock.now
    done = {"status": JobStatus.COMPLETED, "completed_at": now, "response": "Revenue grew."}
    token = EventSpec(EventType.TOKEN, delta="Revenue ")
    completed = EventSpec(EventType.COMPLETED)
    assert await store.claim(job.id, now=now, token="holder", lease_until=now) is not None
    changes = [
        record(job.id, token="stale", event=token, at=now),
        finish_attempt(job.id, token="stale", values=done, event=completed, at=now),
        record(job.id, token="holder", event=token, at=now),
        finish_attempt(job.id, token="holder", values=done, event=completed, at=now),
        finish_attempt(job.id, token="holder", values=done, event=completed, at=now),
        record(job.id, token="holder", event=token, at=now),
    ]

    assert [await store.apply(change) for change in changes] == [
        False,
        False,
        True,
        True,
        False,
        False,
    ]

    stored = await _job(db_world, job.id)
    assert (stored.status, stored.response, stored.run_token) == (
        JobStatus.COMPLETED,
        "Revenue grew.",
        None,
    )
    assert await _rows(db_world, job.id) == [
        (1, "queued", 0, None, None, None),
        (2, "started", 1, None, None, None),
        (3, "token", 1, None, None, "Revenue "),
        (4, "completed", 1, None, None, None),
    ]
