"""The worker's transitions on real PostgreSQL and SQLite: one run, races, cancels, lost links."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.engine import make_url

from server.db import create_db_engine, migrate, session_factory
from server.errors import Unavailable
from server.events import EventSpec, EventType
from server.models import Job, JobEvent, JobStatus
from server.providers.base import Completion
from server.runner import JobRunner, RetryPolicy
from server.unit_of_work import SqlUnitOfWork
from server.worker_uow import WorkerUnits
from tests.unit.fakes import FakeQueue, ScriptedProvider, make_agent, make_job

ROLE = "You are a careful research assistant."


@pytest.fixture
def units(engine: Engine) -> Iterator[WorkerUnits]:
    units = WorkerUnits(engine)
    yield units
    units.close()


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
    query = (
        select(JobEvent.sequence, JobEvent.type, JobEvent.attempt)
        .where(JobEvent.job_id == job_id)
        .order_by(JobEvent.sequence)
    )
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(query)]


def test_a_worker_runs_a_job_to_completion_with_its_events_numbered_in_order(
    engine: Engine, units: WorkerUnits
) -> None:
    job = _store(engine)
    provider = ScriptedProvider(Completion(text="Revenue grew 12%.", tokens_used=7))
    JobRunner(units, provider, FakeQueue(), RetryPolicy()).run(job.id)

    stored = _job(engine, job.id)
    assert (stored.status, stored.response, stored.tokens_used) == (
        JobStatus.COMPLETED,
        "Revenue grew 12%.",
        7,
    )
    assert (stored.attempts, stored.run_token, stored.lease_expires_at) == (1, None, None)
    assert stored.completed_at is not None and stored.completed_at.tzinfo is not None
    assert provider.calls[0].system == ROLE
    assert _events(engine, job.id) == [(1, "queued", 0), (2, "started", 1), (3, "completed", 1)]


def test_a_claim_hands_back_the_attempt_and_no_role_once_the_agent_is_deleted(
    engine: Engine, units: WorkerUnits
) -> None:
    live, orphan = _store(engine), _store(engine, agent_deleted=True)
    now = datetime.now(UTC)
    with units() as uow:
        attempt = uow.jobs.claim(live.id, now=now, token="t1", lease_until=now)
        gone = uow.jobs.claim(orphan.id, now=now, token="t2", lease_until=now)
        uow.commit()
    assert attempt is not None and gone is not None
    assert (attempt.number, attempt.token, attempt.role, attempt.prompt) == (
        1,
        "t1",
        ROLE,
        live.prompt,
    )
    assert (attempt.agent_id, attempt.tokens_used) == (live.agent_id, 0)
    assert gone.role is None


def test_only_one_of_many_racing_worker_threads_claims_a_job(
    engine: Engine, units: WorkerUnits
) -> None:
    job = _store(engine)
    now = datetime.now(UTC)
    barrier = threading.Barrier(8)
    wins: list[str] = []

    def claim(token: str) -> None:
        barrier.wait()
        with units() as uow:
            if uow.jobs.claim(job.id, now=now, token=token, lease_until=now) is not None:
                wins.append(token)
            uow.commit()

    threads = [threading.Thread(target=claim, args=(f"t{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1
    assert _job(engine, job.id).run_token == wins[0]
    assert [kind for _, kind, _ in _events(engine, job.id)] == ["queued", "started"]


def test_an_outcome_loses_to_a_cancel_request_and_the_cancel_is_recorded_instead(
    engine: Engine, units: WorkerUnits
) -> None:
    job = _store(engine)
    now = datetime.now(UTC)
    with units() as uow:
        assert uow.jobs.claim(job.id, now=now, token="t", lease_until=now) is not None
        uow.commit()
    with SqlUnitOfWork(session_factory(engine)) as api:
        assert api.jobs.request_cancel(job.id)
        api.commit()
    done = {"status": JobStatus.COMPLETED, "completed_at": now, "response": "late"}
    cancelled = {"status": JobStatus.CANCELLED, "completed_at": now}
    with units() as uow:
        won_completed = uow.jobs.finish_attempt(
            job.id,
            token="t",
            values=done,
            event=EventSpec(EventType.COMPLETED),
            at=now,
            unless_cancelled=True,
        )
        won_cancelled = uow.jobs.finish_attempt(
            job.id, token="t", values=cancelled, event=EventSpec(EventType.CANCELLED), at=now
        )
        uow.commit()
    assert (won_completed, won_cancelled) == (False, True)
    assert _job(engine, job.id).status == JobStatus.CANCELLED
    assert [kind for _, kind, _ in _events(engine, job.id)] == ["queued", "started", "cancelled"]


def test_a_unit_left_without_commit_on_sqlite_records_nothing(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'agentq.db'}")
    migrate(engine)
    units = WorkerUnits(engine)
    job = _store(engine)
    now = datetime.now(UTC)
    with units() as uow:
        assert uow.jobs.claim(job.id, now=now, token="t", lease_until=now) is not None
    assert _job(engine, job.id).status == JobStatus.PENDING
    assert [kind for _, kind, _ in _events(engine, job.id)] == ["queued"]
    units.close()
    engine.dispose()


def _backend_pid(units: WorkerUnits) -> int:
    """The server process behind this thread's connection."""
    connection = units.take()
    pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    connection.commit()
    units.give_back(connection, healthy=True)
    return int(pid)


def test_a_worker_thread_keeps_its_connection_and_replaces_one_the_server_dropped(
    fresh_postgres_url: str,
) -> None:
    engine = create_db_engine(fresh_postgres_url)
    migrate(engine)
    units = WorkerUnits(engine)
    first, second = _store(engine), _store(engine)
    now = datetime.now(UTC)
    with units() as uow:
        assert uow.jobs.claim(first.id, now=now, token="a", lease_until=now) is not None
        uow.commit()
    pid = _backend_pid(units)
    assert _backend_pid(units) == pid
    admin = make_url(fresh_postgres_url).set(drivername="postgresql")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(Unavailable), units() as uow:
        uow.jobs.claim(second.id, now=now, token="b", lease_until=now)
    with units() as uow:
        attempt = uow.jobs.claim(second.id, now=now, token="b", lease_until=now)
        uow.commit()
    assert attempt is not None and attempt.number == 1
    units.close()
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    engine.dispose()
