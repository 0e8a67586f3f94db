"""Recovery sweepers on separate pools at once on real PostgreSQL: no deadlock, each job once.

The backlog is what a Redis restart leaves: thousands of pending jobs whose messages were
lost, all sent at the same instant, and runs whose workers died. While three sweepers,
each on a store (a pool of connections) of its own as in separate processes, sweep it at
once, a fourth store claims jobs one by one, as workers given the re-sent messages do.

Which rows a sweep picks among jobs sent at the same instant is up to the query plan. The
index gives them in storage order, the same on every connection; a sort (which the planner
picks on other tables and statistics) gives them in an order that depends on which rows
each transaction sees, and the claims make that differ. The sweepers here plan with a
sort, so that nothing relies on the order in which ties come out.
"""

from __future__ import annotations

import asyncio
import logging
import random
import traceback
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import insert, select, text

from server.service.recovery import Recovery
from server.store.connect import open_database
from server.store.events import EventType
from server.store.migrate import create_db_engine
from server.store.models import JobStatus
from server.store.store import Store
from server.store.tables import agents, events, jobs
from server.worker.policy import RetryPolicy
from tests.world import World, job_row

POLICY = RetryPolicy(max_attempts=3, time_limit_s=120, lease_grace_s=15)
REQUEUE_AFTER_S = 30.0
RETENTION_S = 86400.0
SWEEPERS = 3
SWEEPS = 4
OVERDUE = 2000
CLAIMED = 500
# Lost runs: tried again, on their last attempt, and with a cancel requested.
LOST_RETRY, LOST_LAST, LOST_CANCELLED = 60, 20, 20
EXPIRED = 700
# asyncpg passes a query parameter it does not know to the server as a setting.
PLAN_WITH_A_SORT = "?enable_indexscan=off"


@dataclass
class RecordingQueue:
    """Keeps every send, and whether it went out as one batch or one message."""

    calls: list[dict[str, Any]] = field(default_factory=list)

    def enqueue(self, job_id: str, *, delay_s: float = 0.0) -> None:
        self.calls.append({"batch": False, "ids": [job_id]})

    def enqueue_many(self, job_ids: Sequence[str]) -> None:
        self.calls.append({"batch": True, "ids": list(job_ids)})


@dataclass
class Round:
    """What the sweepers of one round sent, and what they raised."""

    sends: Counter[str]
    calls: list[dict[str, Any]]
    errors: list[str]


@asynccontextmanager
async def _stores(url: str, count: int) -> AsyncIterator[list[Store]]:
    """`count` stores of their own on the database, planning with a sort."""
    opened = [Store(await open_database(url + PLAN_WITH_A_SORT, pool_size=2)) for _ in range(count)]
    try:
        yield opened
    finally:
        for store in opened:
            await store.db.close()


async def _sweep(store: Store, at: datetime, queue: RecordingQueue, errors: list[str]) -> None:
    """SWEEPS sweeps at the time `at`; what they raise is kept in `errors`."""
    recovery = Recovery(
        store,
        queue,
        POLICY,
        requeue_after_s=REQUEUE_AFTER_S,
        retention_s=RETENTION_S,
        clock=lambda: at,
    )
    for _ in range(SWEEPS):
        try:
            await recovery.sweep()
        except Exception:
            errors.append(traceback.format_exc())


async def _claim(store: Store, job_ids: list[str], at: datetime) -> None:
    """Claim the pending jobs one by one, each statement on its own, as workers do."""
    for job_id in job_ids:
        await store.jobs.claim(job_id, now=at, token="worker", lease_until=at + timedelta(hours=1))
        await asyncio.sleep(0.002)


async def _sweep_at_once(url: str, at: datetime, claim: list[str]) -> Round:
    """SWEEPS sweeps by each of SWEEPERS sweepers at the time `at`, while `claim` is claimed."""
    queues = [RecordingQueue() for _ in range(SWEEPERS)]
    errors: list[str] = []
    async with _stores(url, SWEEPERS + 1) as stores:
        for store in stores:
            show = await store.db.one(text("SHOW enable_indexscan"))
            assert show is not None and show["enable_indexscan"] == "off"
        sweeps = [_sweep(s, at, q, errors) for s, q in zip(stores, queues, strict=False)]
        await asyncio.gather(*sweeps, _claim(stores[-1], claim, at))
    calls = [call for queue in queues for call in queue.calls]
    sends = Counter(job_id for call in calls for job_id in call["ids"])
    return Round(sends, calls, errors)


def _deadlocks(url: str) -> int:
    """Deadlocks PostgreSQL has detected in the test's database."""
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as db:
        row = db.execute(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


@dataclass
class Backlog:
    """The ids of the jobs stored before the sweeps, by what the sweepers should do."""

    overdue: list[str]
    retry: list[str]
    last: list[str]
    cancelled: list[str]


def _store_backlog(url: str, now: datetime) -> Backlog:
    """Overdue pending jobs all sent at the same instant, lost runs, long finished jobs."""
    agent_id = str(uuid.uuid4())
    hour_ago = now - timedelta(hours=1)
    long_ago = now - timedelta(seconds=RETENTION_S * 2)
    rows: list[dict[str, Any]] = []

    def add(count: int, at: datetime, **values: Any) -> list[str]:
        made = [job_row(agent_id, at, **values) for _ in range(count)]
        rows.extend(made)
        return [row["id"] for row in made]

    lapsed = {
        "status": JobStatus.RUNNING,
        "started_at": hour_ago,
        "run_token": "lost",
        "lease_expires_at": now - timedelta(minutes=1),
    }
    backlog = Backlog(
        overdue=add(OVERDUE, hour_ago),
        retry=add(LOST_RETRY, hour_ago, attempts=1, **lapsed),
        last=add(LOST_LAST, hour_ago, attempts=POLICY.max_attempts, **lapsed),
        cancelled=add(LOST_CANCELLED, hour_ago, attempts=1, cancel_requested=True, **lapsed),
    )
    finished = add(EXPIRED, long_ago, status=JobStatus.COMPLETED, completed_at=long_ago)
    completed = [
        {
            "job_id": job_id,
            "sequence": 1,
            "type": EventType.COMPLETED.value,
            "created_at": long_ago,
            "attempt": 1,
        }
        for job_id in finished
    ]
    engine = create_db_engine(url, pool_size=1)
    try:
        with engine.begin() as db:
            db.execute(insert(agents), _agent_row(agent_id, now - timedelta(days=3)))
            db.execute(insert(jobs), rows)
            db.execute(insert(events), completed)
    finally:
        engine.dispose()
    return backlog


def _agent_row(agent_id: str, at: datetime) -> dict[str, Any]:
    return {
        "id": agent_id,
        "tenant_id": "acme",
        "name": "Researcher",
        "role": "You are a careful research assistant.",
        "max_depth": 3,
        "spawn_shadow": False,
        "generation": 0,
        "fitness": 0.0,
        "created_at": at,
    }


async def _statuses(world: World) -> Counter[str]:
    return Counter(row["status"] for row in await world.store.db.all(select(jobs.c.status)))


async def _jobs_with_status(world: World, status: JobStatus) -> list[str]:
    query = select(jobs.c.id).where(jobs.c.status == status.value)
    return [row["id"] for row in await world.store.db.all(query)]


async def _recovery_events(world: World) -> Counter[str]:
    """How many retrying, failed or cancelled events each job has."""
    kinds = ("retrying", "failed", "cancelled")
    query = select(events.c.job_id).where(events.c.type.in_(kinds))
    return Counter(row["job_id"] for row in await world.store.db.all(query))


@pytest.mark.postgres
async def test_three_sweepers_sweeping_a_backlog_at_once_never_deadlock_and_send_each_job_once(
    pg_world: World, fresh_postgres_url: str
) -> None:
    url = fresh_postgres_url
    now = datetime.now(UTC).replace(microsecond=0)
    backlog = _store_backlog(url, now)
    chance = random.Random(7)
    claim = chance.sample(backlog.overdue, CLAIMED)
    deadlocks_before = _deadlocks(url)

    first = await _sweep_at_once(url, now, claim)

    assert first.errors == []
    assert _deadlocks(url) == deadlocks_before
    # Each job is sent at most once in all; each one still pending exactly once.
    pending = await _jobs_with_status(pg_world, JobStatus.PENDING)
    assert set(first.sends) - set(claim) == set(pending)
    assert max(first.sends.values()) == 1
    assert set(pending) == set(backlog.overdue + backlog.retry) - set(claim)
    assert all(call["batch"] for call in first.calls)
    # Each lost run is recovered exactly once: it has one event saying how.
    assert await _recovery_events(pg_world) == Counter(
        backlog.retry + backlog.last + backlog.cancelled
    )
    assert await _statuses(pg_world) == {
        JobStatus.PENDING: OVERDUE - CLAIMED + LOST_RETRY,
        JobStatus.RUNNING: CLAIMED,
        JobStatus.FAILED: LOST_LAST,
        JobStatus.CANCELLED: LOST_CANCELLED,
    }

    claim_later = chance.sample(pending, CLAIMED)
    later = await _sweep_at_once(url, now + timedelta(seconds=REQUEUE_AFTER_S + 1), claim_later)

    assert later.errors == []
    assert _deadlocks(url) == deadlocks_before
    # A whole requeue period later, each job still pending is sent once more.
    assert max(later.sends.values()) == 1
    assert set(later.sends) - set(claim_later) == set(pending) - set(claim_later)
    assert set(later.sends) <= set(pending)
    assert all(call["batch"] for call in later.calls)


async def test_messages_that_could_not_be_sent_are_logged_so_and_sent_by_the_next_sweep(
    db_world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world, hour_ago = db_world, db_world.clock.now - timedelta(hours=1)
    world.policy = POLICY
    agent = await world.add_agent(created_at=world.clock.now - timedelta(days=1))
    overdue = await world.add_job(
        agent, queued_at=hour_ago, next_run_at=hour_ago, enqueued_at=hour_ago
    )
    lost = await world.add_job(
        agent,
        queued_at=hour_ago,
        next_run_at=hour_ago,
        enqueued_at=hour_ago,
        status=JobStatus.RUNNING.value,
        attempts=1,
        run_token="lost",
        lease_expires_at=world.clock.now - timedelta(minutes=1),
    )
    world.queue.error = ConnectionError("Redis is down")
    recovery = world.recovery(requeue_after_s=REQUEUE_AFTER_S)
    caplog.set_level(logging.WARNING, logger="server.service.recovery")

    await recovery.sweep()

    logged = [r.getMessage() for r in caplog.records if r.name == "server.service.recovery"]
    assert not any(message.startswith("re-sent") for message in logged)
    assert sum(message.startswith("could not send 1 job messages") for message in logged) == 2
    pending = await _jobs_with_status(world, JobStatus.PENDING)
    assert set(pending) == {overdue.id, lost.id}

    world.queue.error = None
    world.queue.calls.clear()
    world.clock.advance(1)
    caplog.clear()

    assert await recovery.sweep() == 2
    assert sorted(job_id for job_id, _ in world.queue.calls) == sorted([overdue.id, lost.id])
    logged = [r.getMessage() for r in caplog.records if r.name == "server.service.recovery"]
    assert logged == ["re-sent 2 pending jobs whose message was overdue"]
    # Sent now, so not again before a whole requeue period has passed.
    world.clock.advance(REQUEUE_AFTER_S)
    assert await recovery.sweep() == 0
