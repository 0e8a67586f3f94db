"""The database on real PostgreSQL (and the SQLite file): migrations, and the store on them.

The migration runner (`server/store/migrate.py`) brings a new database to the models'
schema, once however many servers start together; the store (`server/store/`) then
claims and changes jobs on it with compare-and-set updates, alone or in a transaction.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import timedelta

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, update

from server.store.events import EventSpec, EventType
from server.store.migrate import MIGRATIONS, create_db_engine, migrate
from server.store.models import Base, JobStatus
from server.store.records import JobRecord
from server.store.store import Tables
from server.store.tables import jobs
from server.store.transitions import cancel_pending, finish_attempt
from tests.integration.conftest import Stores
from tests.world import World

RACERS = 10


async def _pending_job(world: World) -> JobRecord:
    """A stored agent and one pending job of it, due now, with its QUEUED event."""
    return await world.add_job(await world.add_agent(tenant_id="t"))


async def _stored(world: World, job_id: str) -> JobRecord:
    job = await world.job(job_id)
    assert job is not None
    return job


# Migrations.


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


# The store on the migrated database.


async def test_only_one_of_many_racing_workers_claims_a_job(
    db_world: World, stores: Stores
) -> None:
    job = await _pending_job(db_world)
    now = db_world.clock.now
    racers = [await stores.open(pool_size=1) for _ in range(RACERS)]

    async def claim(token: str, store_index: int) -> str | None:
        async with racers[store_index].transaction() as tx:
            attempt = await tx.jobs.claim(
                job.id, now=now, token=token, lease_until=now + timedelta(seconds=60)
            )
        return None if attempt is None else token

    tokens = [str(uuid.uuid4()) for _ in range(RACERS)]
    results = await asyncio.gather(*(claim(token, n) for n, token in enumerate(tokens)))
    wins = [token for token in results if token is not None]

    assert len(wins) == 1
    stored = await _stored(db_world, job.id)
    assert (stored.status, stored.attempts, stored.run_token) == (JobStatus.RUNNING, 1, wins[0])


async def test_an_attempt_that_lost_its_claim_cannot_record_an_outcome(db_world: World) -> None:
    job = await _pending_job(db_world)
    store, now = db_world.store, db_world.clock.now
    async with store.transaction() as tx:
        assert await tx.jobs.claim(job.id, now=now, token="first", lease_until=now)
    done = {"status": JobStatus.COMPLETED}
    completed = EventSpec(EventType.COMPLETED)
    async with store.transaction() as tx:
        assert not await tx.jobs.apply(
            finish_attempt(job.id, token="other", values=done, event=completed, at=now)
        )
        assert await tx.jobs.apply(
            finish_attempt(job.id, token="first", values=done, event=completed, at=now)
        )
    stored = await _stored(db_world, job.id)
    assert stored.status == JobStatus.COMPLETED and stored.run_token is None


async def test_a_job_is_not_claimed_before_its_backoff_ends(db_world: World) -> None:
    job = await _pending_job(db_world)
    early = db_world.clock.now - timedelta(seconds=5)
    async with db_world.store.transaction() as tx:
        assert not await tx.jobs.claim(job.id, now=early, token="t", lease_until=early)


async def test_timestamps_come_back_as_utc(db_world: World) -> None:
    job = await _pending_job(db_world)
    stored = await db_world.store.jobs.get(job.id, tenant_id="t")
    assert stored is not None and stored.queued_at.tzinfo is not None
    assert stored.queued_at.utcoffset() == timedelta(0)


async def test_a_pending_job_cancelled_in_a_transaction_gets_the_next_event_number(
    db_world: World,
) -> None:
    job = await _pending_job(db_world)
    now = db_world.clock.advance(1)
    async with db_world.store.transaction() as tx:
        assert await tx.jobs.apply(cancel_pending(job.id, at=now))
        # Not pending any more: a second cancel changes nothing.
        assert not await tx.jobs.apply(cancel_pending(job.id, at=now))
    stored = await _stored(db_world, job.id)
    events = await db_world.events(job.id)
    assert (stored.status, stored.completed_at) == (JobStatus.CANCELLED, now)
    assert [(e.sequence, e.type, e.attempt) for e in events] == [
        (1, "queued", 0),
        (2, "cancelled", 0),
    ]


async def test_a_transition_sees_a_change_made_earlier_in_the_same_transaction(
    db_world: World,
) -> None:
    job = await _pending_job(db_world)
    now = db_world.clock.now
    later = update(jobs).where(jobs.c.id == job.id).values(next_run_at=now + timedelta(hours=1))
    async with db_world.store.db.transaction() as run:
        await run.run(later)
        tx = Tables(run)
        assert await tx.jobs.claim(job.id, now=now, token="t", lease_until=now) is None
    assert (await _stored(db_world, job.id)).next_run_at == now + timedelta(hours=1)
