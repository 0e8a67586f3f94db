"""The worker's stores on real databases: asyncpg on PostgreSQL, threads on SQLite.

Runs, retries, races of claims, outcomes that lose to a cancel or a lost claim, and cancel
checks, each through the AttemptStore a worker uses on that database.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import psycopg
from sqlalchemy import Engine, select
from sqlalchemy.engine import make_url

from server.providers.base import Completion, ProviderError
from server.store.events import EventSpec, EventType
from server.store.migrate import create_db_engine, migrate, session_factory
from server.store.models import Job, JobEvent, JobStatus
from server.store.transitions import finish_attempt, record
from server.unit_of_work import SqlUnitOfWork
from server.worker.pg_store import PgStore
from server.worker.policy import RetryPolicy
from server.worker.runner import AttemptRunner, CancelSignal
from server.worker.store import CANCEL_CHECK_BATCH, AttemptStore, ThreadStore
from server.worker.units import ConnectionUnitOfWork
from tests.unit.fakes import FakeQueue, ScriptedProvider, Stream, make_agent, make_job

ROLE = "You are a careful research assistant."
T = TypeVar("T")


async def _open(engine: Engine, *, size: int) -> AttemptStore:
    """The store a worker uses on this database."""
    if engine.dialect.name == "postgresql":
        return await PgStore.open(engine.url.render_as_string(hide_password=False), size=size)
    return ThreadStore(lambda: ConnectionUnitOfWork(engine))


def _with_store(
    engine: Engine, work: Callable[[AttemptStore], Awaitable[T]], *, size: int = 4
) -> T:
    """Open the worker's store on one event loop, do `work` with it, close it."""

    async def main() -> T:
        store = await _open(engine, size=size)
        try:
            return await work(store)
        finally:
            await store.aclose()

    return asyncio.run(main())


def _store(engine: Engine, *, agent_deleted: bool = False) -> Job:
    """A stored agent and one pending job of it, due now, with its QUEUED event."""
    now = datetime.now(UTC)
    agent = make_agent(id=str(uuid.uuid4()), role=ROLE, created_at=now)
    if agent_deleted:
        agent.deleted_at = now
    job = make_job(agent, id=str(uuid.uuid4()), at=now - timedelta(seconds=1))
    job.event_seq = 1
    with SqlUnitOfWork(session_factory(engine)) as uow:
        uow.agents.add(agent)
        uow.commit()
        uow.jobs.add(job)
        uow.events.add(EventSpec(EventType.QUEUED).row(job.id, sequence=1, attempt=0, at=now))
        uow.commit()
    return job


def _job(engine: Engine, job_id: str) -> Job:
    with SqlUnitOfWork(session_factory(engine)) as uow:
        job = uow.jobs.get(job_id)
    assert job is not None
    return job


def _events(engine: Engine, job_id: str) -> list[tuple[int, str, int]]:
    """(sequence, type, attempt) of the job's events, in order."""
    return [(sequence, kind, attempt) for sequence, kind, attempt, *_ in _rows(engine, job_id)]


def _rows(engine: Engine, job_id: str) -> list[tuple[Any, ...]]:
    query = (
        select(
            JobEvent.sequence,
            JobEvent.type,
            JobEvent.attempt,
            JobEvent.error,
            JobEvent.delay_s,
            JobEvent.delta,
        )
        .where(JobEvent.job_id == job_id)
        .order_by(JobEvent.sequence)
    )
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(query)]


def _request_cancel(engine: Engine, job_id: str) -> None:
    with SqlUnitOfWork(session_factory(engine)) as api:
        assert api.jobs.request_cancel(job_id)
        api.commit()


async def _run_once(runner: AttemptRunner, job_id: str) -> None:
    attempt = await runner.claim(job_id)
    assert attempt is not None
    await runner.run(attempt, CancelSignal())


# Whole attempts.


def test_a_worker_runs_a_job_to_completion_with_its_events_numbered_in_order(
    engine: Engine,
) -> None:
    job = _store(engine)
    provider = ScriptedProvider(Completion(text="Revenue grew 12%.", tokens_used=7))

    async def work(store: AttemptStore) -> None:
        await _run_once(AttemptRunner(store, provider, FakeQueue(), RetryPolicy()), job.id)

    _with_store(engine, work)

    stored = _job(engine, job.id)
    assert (stored.status, stored.response, stored.tokens_used) == (
        JobStatus.COMPLETED,
        "Revenue grew 12%.",
        7,
    )
    assert (stored.attempts, stored.run_token, stored.lease_expires_at) == (1, None, None)
    assert stored.completed_at is not None and stored.completed_at.tzinfo is not None
    assert stored.context_hash is not None
    assert provider.calls[0].system == ROLE
    assert _events(engine, job.id) == [(1, "queued", 0), (2, "started", 1), (3, "completed", 1)]


def test_a_retried_job_records_each_attempt_its_tokens_and_its_end_in_one_sequence(
    engine: Engine,
) -> None:
    job = _store(engine)
    unavailable = ProviderError("Provider returned HTTP 503", retryable=True, tokens_used=2)
    provider = ScriptedProvider(unavailable, Stream(("Revenue ", "grew 12%."), tokens_used=7))
    queue = FakeQueue()

    async def work(store: AttemptStore) -> None:
        runner = AttemptRunner(store, provider, queue, RetryPolicy(backoff_s=0))
        await _run_once(runner, job.id)
        await _run_once(runner, job.id)  # the retry's message

    _with_store(engine, work)

    stored = _job(engine, job.id)
    assert (stored.status, stored.attempts, stored.tokens_used, stored.response) == (
        JobStatus.COMPLETED,
        2,
        2 + 7,
        "Revenue grew 12%.",
    )
    assert queue.calls == [(job.id, 0.0)]
    rows = _rows(engine, job.id)
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


def test_a_claim_hands_back_the_attempt_and_no_role_once_the_agent_is_deleted(
    engine: Engine,
) -> None:
    live, orphan = _store(engine), _store(engine, agent_deleted=True)
    now = datetime.now(UTC)

    async def work(store: AttemptStore) -> tuple[Any, Any]:
        attempt = await store.claim(live.id, now=now, token="t1", lease_until=now)
        gone = await store.claim(orphan.id, now=now, token="t2", lease_until=now)
        return attempt, gone

    attempt, gone = _with_store(engine, work)

    assert attempt is not None and gone is not None
    assert (attempt.number, attempt.token, attempt.role, attempt.prompt) == (
        1,
        "t1",
        ROLE,
        live.prompt,
    )
    assert (attempt.agent_id, attempt.tokens_used) == (live.agent_id, 0)
    assert gone.role is None
    assert _events(engine, live.id) == [(1, "queued", 0), (2, "started", 1)]


def test_a_job_is_due_when_its_next_run_comes_and_not_once_it_runs(engine: Engine) -> None:
    job = _store(engine)
    now = datetime.now(UTC)

    async def work(store: AttemptStore) -> list[datetime | None]:
        pending = await store.due_at(job.id)
        await store.claim(job.id, now=now, token="t", lease_until=now)
        return [pending, await store.due_at(job.id), await store.due_at(str(uuid.uuid4()))]

    pending, running, unknown = _with_store(engine, work)

    assert pending == job.next_run_at
    assert (running, unknown) == (None, None)


def test_only_one_of_many_racing_claims_wins_a_job(engine: Engine) -> None:
    job = _store(engine)
    now = datetime.now(UTC)

    async def race(store: AttemptStore) -> list[str]:
        claims = [
            store.claim(job.id, now=now, token=f"t{n}", lease_until=now + timedelta(minutes=1))
            for n in range(16)
        ]
        return [won.token for won in await asyncio.gather(*claims) if won is not None]

    wins = _with_store(engine, race, size=16)

    assert len(wins) == 1
    stored = _job(engine, job.id)
    assert (stored.status, stored.run_token, stored.attempts) == (JobStatus.RUNNING, wins[0], 1)
    assert [kind for _, kind, _ in _events(engine, job.id)] == ["queued", "started"]


def test_a_job_not_due_yet_is_not_claimed(engine: Engine) -> None:
    job = _store(engine)
    before_due = job.next_run_at - timedelta(seconds=1)

    async def work(store: AttemptStore) -> Any:
        return await store.claim(job.id, now=before_due, token="t", lease_until=before_due)

    assert _with_store(engine, work) is None
    assert _job(engine, job.id).status == JobStatus.PENDING
    assert _events(engine, job.id) == [(1, "queued", 0)]


# Outcomes.


def test_an_outcome_loses_to_a_cancel_request_and_the_cancel_is_recorded_instead(
    engine: Engine,
) -> None:
    job = _store(engine)
    now = datetime.now(UTC)
    done = {"status": JobStatus.COMPLETED, "completed_at": now, "response": "late"}
    cancelled = {"status": JobStatus.CANCELLED, "completed_at": now}

    async def claim(store: AttemptStore) -> None:
        assert await store.claim(job.id, now=now, token="t", lease_until=now) is not None

    async def finish(store: AttemptStore) -> tuple[bool, bool]:
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
        return won_completed, won_cancelled

    _with_store(engine, claim)
    _request_cancel(engine, job.id)
    assert _with_store(engine, finish) == (False, True)

    stored = _job(engine, job.id)
    assert (stored.status, stored.response, stored.run_token) == (JobStatus.CANCELLED, None, None)
    assert _events(engine, job.id) == [(1, "queued", 0), (2, "started", 1), (3, "cancelled", 1)]


def test_only_the_attempt_holding_the_job_records_events_and_its_outcome_once(
    engine: Engine,
) -> None:
    job = _store(engine)
    now = datetime.now(UTC)
    done = {"status": JobStatus.COMPLETED, "completed_at": now, "response": "Revenue grew."}
    token = EventSpec(EventType.TOKEN, delta="Revenue ")
    completed = EventSpec(EventType.COMPLETED)

    async def work(store: AttemptStore) -> list[bool]:
        assert await store.claim(job.id, now=now, token="holder", lease_until=now) is not None
        changes = [
            record(job.id, token="stale", event=token, at=now),
            finish_attempt(job.id, token="stale", values=done, event=completed, at=now),
            record(job.id, token="holder", event=token, at=now),
            finish_attempt(job.id, token="holder", values=done, event=completed, at=now),
            finish_attempt(job.id, token="holder", values=done, event=completed, at=now),
            record(job.id, token="holder", event=token, at=now),
        ]
        return [await store.apply(change) for change in changes]

    assert _with_store(engine, work) == [False, False, True, True, False, False]

    stored = _job(engine, job.id)
    assert (stored.status, stored.response, stored.run_token) == (
        JobStatus.COMPLETED,
        "Revenue grew.",
        None,
    )
    assert _rows(engine, job.id) == [
        (1, "queued", 0, None, None, None),
        (2, "started", 1, None, None, None),
        (3, "token", 1, None, None, "Revenue "),
        (4, "completed", 1, None, None, None),
    ]


# Cancel checks.


def test_cancel_requests_are_found_among_more_running_jobs_than_one_statement_asks_about(
    engine: Engine,
) -> None:
    jobs = [_store(engine) for _ in range(3)]
    now = datetime.now(UTC)
    ids = [str(uuid.uuid4()) for _ in range(2 * CANCEL_CHECK_BATCH + 200)]
    positions = (3, CANCEL_CHECK_BATCH + 50, 2 * CANCEL_CHECK_BATCH + 100)
    for job, position in zip(jobs, positions, strict=True):
        ids[position] = job.id

    async def claim(store: AttemptStore) -> None:
        for job in jobs:
            assert await store.claim(job.id, now=now, token=job.id, lease_until=now) is not None

    async def check(store: AttemptStore) -> set[str]:
        return await store.cancel_requested(ids)

    _with_store(engine, claim)
    assert _with_store(engine, check) == set()
    _request_cancel(engine, jobs[0].id)
    _request_cancel(engine, jobs[2].id)

    assert _with_store(engine, check) == {jobs[0].id, jobs[2].id}


# One database at a time.


def test_a_unit_left_without_commit_on_sqlite_records_nothing(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'agentq.db'}")
    migrate(engine)
    job = _store(engine)
    now = datetime.now(UTC)
    with ConnectionUnitOfWork(engine) as uow:
        assert uow.jobs.claim(job.id, now=now, token="t", lease_until=now) is not None
    assert _job(engine, job.id).status == JobStatus.PENDING
    assert [kind for _, kind, _ in _events(engine, job.id)] == ["queued"]
    engine.dispose()


def _backends(admin: str, database: str) -> list[int]:
    """The server processes of other clients' sessions on one database."""
    with psycopg.connect(admin, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s"
            " AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
    return [int(pid) for (pid,) in rows]


def _until_gone(admin: str, database: str) -> list[int]:
    """The sessions left on the database once closed ones had a few seconds to end."""
    for _ in range(50):
        left = _backends(admin, database)
        if not left:
            break
        time.sleep(0.1)
    return left


def test_a_worker_whose_connections_the_server_dropped_claims_on_new_ones(
    fresh_postgres_url: str,
) -> None:
    engine = create_db_engine(fresh_postgres_url)
    migrate(engine)
    engine.dispose()
    first, second = _store(engine), _store(engine)
    engine.dispose()
    url = make_url(fresh_postgres_url)
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    now = datetime.now(UTC)
    lost = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, ConnectionError, OSError)

    async def work(store: AttemptStore) -> Any:
        assert await store.claim(first.id, now=now, token="a", lease_until=now) is not None
        dropped = _backends(admin, url.database or "")
        assert dropped
        with psycopg.connect(admin, autocommit=True) as connection:
            for pid in dropped:
                connection.execute("SELECT pg_terminate_backend(%s)", (pid,))
        try:
            # The first statement may still find a dropped connection; none after it does.
            return await store.claim(second.id, now=now, token="b", lease_until=now)
        except lost:
            return await store.claim(second.id, now=now, token="b", lease_until=now)

    attempt = _with_store(engine, work)

    assert attempt is not None and attempt.number == 1
    assert _until_gone(admin, url.database or "") == []  # closing the store let go of them
    engine.dispose()
