"""The worker's store beyond one transition: cancel checks, abandoned transactions, lost links.

Each through the store a worker uses (`server/worker/store.py`), on real databases.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import psycopg
import pytest
from sqlalchemy.engine import make_url

from server.errors import Unavailable
from server.store.models import JobStatus
from server.store.records import JobRecord
from server.store.transitions import Attempt
from server.worker.store import CANCEL_CHECK_BATCH, DatabaseAttemptStore
from tests.world import ALICE, World


async def _store(world: World) -> JobRecord:
    """A stored agent and one pending job of it, due now, with its QUEUED event."""
    return await world.add_job(await world.add_agent())


# Cancel checks.


async def test_cancel_requests_are_found_among_more_running_jobs_than_one_statement_asks_about(
    db_world: World,
) -> None:
    jobs = [await _store(db_world) for _ in range(3)]
    store, now = DatabaseAttemptStore(db_world.store), db_world.clock.now
    ids = [str(uuid.uuid4()) for _ in range(2 * CANCEL_CHECK_BATCH + 200)]
    positions = (3, CANCEL_CHECK_BATCH + 50, 2 * CANCEL_CHECK_BATCH + 100)
    for job, position in zip(jobs, positions, strict=True):
        ids[position] = job.id
    for job in jobs:
        assert await store.claim(job.id, now=now, token=job.id, lease_until=now) is not None

    assert await store.cancel_requested(ids) == set()
    await db_world.jobs.cancel_job(ALICE, jobs[0].id)
    await db_world.jobs.cancel_job(ALICE, jobs[2].id)

    assert await store.cancel_requested(ids) == {jobs[0].id, jobs[2].id}


# Transactions.


class _Abandoned(Exception):
    """Raised to leave a transaction without committing it."""


async def test_a_claim_in_a_transaction_left_without_commit_records_nothing(
    db_world: World,
) -> None:
    job = await _store(db_world)
    now = db_world.clock.now

    with pytest.raises(_Abandoned):
        async with db_world.store.transaction() as tx:
            lease = now + timedelta(minutes=1)
            assert await tx.jobs.claim(job.id, now=now, token="t", lease_until=lease)
            raise _Abandoned

    stored = await db_world.job(job.id)
    assert stored is not None and stored.status == JobStatus.PENDING
    assert [e.type for e in await db_world.events(job.id)] == ["queued"]


# Connections.


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


@pytest.mark.postgres
async def test_a_worker_whose_connections_the_server_dropped_claims_on_new_ones(
    pg_world: World, fresh_postgres_url: str
) -> None:
    first, second = await _store(pg_world), await _store(pg_world)
    url = make_url(fresh_postgres_url)
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    store, now = DatabaseAttemptStore(pg_world.store), pg_world.clock.now

    assert await store.claim(first.id, now=now, token="a", lease_until=now) is not None
    dropped = _backends(admin, url.database or "")
    assert dropped
    with psycopg.connect(admin, autocommit=True) as connection:
        for pid in dropped:
            connection.execute("SELECT pg_terminate_backend(%s)", (pid,))
    attempt: Attempt | None
    try:
        # The first statement may still find a dropped connection; none after it does.
        attempt = await store.claim(second.id, now=now, token="b", lease_until=now)
    except Unavailable:
        attempt = await store.claim(second.id, now=now, token="b", lease_until=now)
    await store.aclose()

    assert attempt is not None and attempt.number == 1
    assert _until_gone(admin, url.database or "") == []  # closing the store let go of them
