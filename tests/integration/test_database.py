"""The persistence layer on real PostgreSQL (and the SQLite file): migrations and CAS claims."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from server.store.events import EventSpec, EventType
from server.store.migrate import MIGRATIONS, create_db_engine, migrate, session_factory
from server.store.models import Agent, Base, Job, JobStatus
from server.unit_of_work import SqlUnitOfWork


def _pending_job(engine: Engine) -> str:
    now = datetime.now(UTC)
    agent = Agent(
        id=str(uuid.uuid4()),
        tenant_id="t",
        name="a",
        role="role",
        max_depth=3,
        spawn_shadow=False,
        generation=0,
        fitness=0.0,
        created_at=now,
    )
    job = Job(
        id=str(uuid.uuid4()),
        tenant_id="t",
        agent_id=agent.id,
        status=JobStatus.PENDING,
        prompt="p",
        context_id=None,
        enable_adversarial=False,
        enable_self_correction=False,
        max_debate_rounds=3,
        attempts=0,
        queued_at=now,
        next_run_at=now,
        enqueued_at=now,
        tokens_used=0,
        verified=False,
    )
    with SqlUnitOfWork(session_factory(engine)) as uow:
        uow.agents.add(agent)
        uow.commit()
        uow.jobs.add(job)
        uow.commit()
    return job.id


def test_the_migrated_schema_matches_the_models(engine: Engine) -> None:
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []
    assert {"agents", "jobs", "alembic_version"} <= set(inspect(engine).get_table_names())


def test_migrating_again_changes_nothing(engine: Engine) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    migrate(engine)
    with engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == head
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_servers_starting_at_once_migrate_a_fresh_postgres_database_once(
    fresh_postgres_url: str,
) -> None:
    engines = [create_db_engine(fresh_postgres_url) for _ in range(4)]
    errors: list[BaseException] = []

    def start(engine: Engine) -> None:
        try:
            migrate(engine)
        except BaseException as error:  # collected for the assertion below
            errors.append(error)

    threads = [threading.Thread(target=start, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for engine in engines:
        engine.dispose()


def test_only_one_of_many_racing_workers_claims_a_job(engine: Engine) -> None:
    job_id = _pending_job(engine)
    sessions = session_factory(engine)
    now = datetime.now(UTC)
    barrier = threading.Barrier(10)
    wins: list[str] = []

    def claim() -> None:
        token = str(uuid.uuid4())
        barrier.wait()
        with SqlUnitOfWork(sessions) as uow:
            if uow.jobs.claim(
                job_id, now=now, token=token, lease_until=now + timedelta(seconds=60)
            ):
                wins.append(token)
            uow.commit()

    threads = [threading.Thread(target=claim) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1
    with SqlUnitOfWork(sessions) as uow:
        job = uow.jobs.get(job_id)
    assert job is not None
    assert (job.status, job.attempts, job.run_token) == (JobStatus.RUNNING, 1, wins[0])


def test_an_attempt_that_lost_its_claim_cannot_record_an_outcome(engine: Engine) -> None:
    job_id = _pending_job(engine)
    sessions = session_factory(engine)
    now = datetime.now(UTC)
    with SqlUnitOfWork(sessions) as uow:
        assert uow.jobs.claim(job_id, now=now, token="first", lease_until=now)
        uow.commit()
    done = {"status": JobStatus.COMPLETED}
    completed = EventSpec(EventType.COMPLETED)
    with SqlUnitOfWork(sessions) as uow:
        assert not uow.jobs.finish_attempt(
            job_id, token="other", values=done, event=completed, at=now
        )
        assert uow.jobs.finish_attempt(job_id, token="first", values=done, event=completed, at=now)
        uow.commit()
    with SqlUnitOfWork(sessions) as uow:
        job = uow.jobs.get(job_id)
    assert job is not None and job.status == JobStatus.COMPLETED and job.run_token is None


def test_a_job_is_not_claimed_before_its_backoff_ends(engine: Engine) -> None:
    job_id = _pending_job(engine)
    sessions = session_factory(engine)
    early = datetime.now(UTC) - timedelta(seconds=5)
    with SqlUnitOfWork(sessions) as uow:
        assert not uow.jobs.claim(job_id, now=early, token="t", lease_until=early)


def test_timestamps_come_back_as_utc(engine: Engine) -> None:
    job_id = _pending_job(engine)
    with SqlUnitOfWork(session_factory(engine)) as uow:
        job = uow.jobs.get(job_id)
    assert job is not None and job.queued_at.tzinfo is not None
    assert job.queued_at.utcoffset() == timedelta(0)


def test_a_pending_job_cancelled_through_a_session_gets_the_next_event_number(
    engine: Engine,
) -> None:
    job_id = _pending_job(engine)
    sessions = session_factory(engine)
    now = datetime.now(UTC)
    with SqlUnitOfWork(sessions) as uow:
        assert uow.jobs.cancel_pending(job_id, at=now)
        # Not pending any more: a second cancel changes nothing.
        assert not uow.jobs.cancel_pending(job_id, at=now)
        uow.commit()
    with SqlUnitOfWork(sessions) as uow:
        job = uow.jobs.get(job_id)
        events = uow.events.after(job_id, 0, limit=10)
    assert job is not None and (job.status, job.completed_at) == (JobStatus.CANCELLED, now)
    assert [(e.sequence, e.type, e.attempt) for e in events] == [(1, "cancelled", 0)]


def test_a_transition_sees_a_job_staged_earlier_in_the_same_session(engine: Engine) -> None:
    job_id = _pending_job(engine)
    sessions = session_factory(engine)
    now = datetime.now(UTC)
    with SqlUnitOfWork(sessions) as uow:
        job = uow.jobs.get(job_id)
        assert job is not None
        job.next_run_at = now + timedelta(hours=1)  # staged, not flushed yet
        assert uow.jobs.claim(job_id, now=now, token="t", lease_until=now) is None
        uow.commit()
