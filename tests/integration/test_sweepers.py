"""Recovery sweepers in three processes at once on real PostgreSQL: no deadlock, each job once.

The backlog is what a Redis restart leaves: thousands of pending jobs whose messages were
lost, all sent at the same instant, and runs whose workers died. While three processes
sweep it, a fourth claims jobs one by one, as workers given the re-sent messages do.

Which rows a sweep picks among jobs sent at the same instant is up to the query plan. The
index gives them in storage order, the same in every process; a sort (which the planner
picks on other tables and statistics) gives them in an order that depends on which rows
each process sees, and the claims make that differ. The sweepers here plan with a sort,
so that nothing relies on the order in which ties come out.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import random
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, select

from server.recovery import Recovery
from server.store.events import EventSpec, EventType
from server.store.migrate import create_db_engine, migrate, session_factory
from server.store.models import Agent, Job, JobEvent, JobStatus
from server.unit_of_work import SqlUnitOfWork
from server.worker.policy import RetryPolicy
from tests.unit.fakes import FakeClock, FakeQueue, make_agent, make_job

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
PLAN_WITH_A_SORT = "?options=-c%20enable_indexscan%3Doff"


class RecordingQueue:
    """Keeps every send, and whether it went out as one batch or one message."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def enqueue(self, job_id: str, *, delay_s: float = 0.0) -> None:
        self.calls.append({"batch": False, "ids": [job_id]})

    def enqueue_many(self, job_ids: Sequence[str]) -> None:
        self.calls.append({"batch": True, "ids": list(job_ids)})


def sweep_in_process(url: str, now: str, barrier: Any, out: str) -> None:
    """Run SWEEPS sweeps at the time `now` once all are ready; write what was sent and raised."""
    engine = create_db_engine(url + PLAN_WITH_A_SORT, pool_size=2)
    sessions = session_factory(engine)
    queue = RecordingQueue()
    at = datetime.fromisoformat(now)
    recovery = Recovery(
        lambda: SqlUnitOfWork(sessions),
        queue,
        POLICY,
        requeue_after_s=REQUEUE_AFTER_S,
        retention_s=RETENTION_S,
        clock=lambda: at,
    )
    errors: list[str] = []
    barrier.wait(timeout=60)
    for _ in range(SWEEPS):
        try:
            recovery.sweep()
        except Exception:
            errors.append(traceback.format_exc())
    engine.dispose()
    Path(out).write_text(json.dumps({"calls": queue.calls, "errors": errors}))


def claim_in_process(url: str, job_ids: list[str], barrier: Any) -> None:
    """Claim the pending jobs one by one, each in its own transaction, as workers do."""
    with psycopg.connect(_libpq(url), autocommit=True) as db:
        barrier.wait(timeout=60)
        for job_id in job_ids:
            db.execute(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1,"
                " run_token = 'worker', lease_expires_at = now() + interval '1 hour'"
                " WHERE id = %s AND status = 'pending'",
                (job_id,),
            )
            time.sleep(0.002)


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@dataclass
class Round:
    """What the sweepers of one round sent, and what they raised."""

    sends: Counter[str]
    calls: list[dict[str, Any]]
    errors: list[str]


def _sweep_at_once(url: str, now: datetime, tmp_path: Path, claim: list[str]) -> Round:
    """SWEEPS sweeps in each of SWEEPERS processes at the time `now`, while `claim` is claimed."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(SWEEPERS + 1)
    outs = [tmp_path / f"sweeper-{uuid.uuid4().hex}.json" for _ in range(SWEEPERS)]
    processes = [
        context.Process(target=sweep_in_process, args=(url, now.isoformat(), barrier, str(out)))
        for out in outs
    ]
    processes.append(context.Process(target=claim_in_process, args=(url, claim, barrier)))
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    results = [json.loads(out.read_text()) for out in outs]
    calls = [call for result in results for call in result["calls"]]
    sends = Counter(job_id for call in calls for job_id in call["ids"])
    return Round(sends, calls, [error for result in results for error in result["errors"]])


def _deadlocks(url: str) -> int:
    """Deadlocks PostgreSQL has detected in the test's database."""
    with psycopg.connect(_libpq(url), autocommit=True) as db:
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


def _jobs(agent: Agent, count: int, **values: Any) -> list[Job]:
    return [make_job(agent, id=str(uuid.uuid4()), **values) for _ in range(count)]


def _store_backlog(engine: Engine, now: datetime) -> Backlog:
    """Overdue pending jobs all sent at the same instant, lost runs, long finished jobs."""
    agent = make_agent(id=str(uuid.uuid4()), created_at=now - timedelta(days=3))
    hour_ago = now - timedelta(hours=1)
    lapsed = {
        "status": JobStatus.RUNNING,
        "at": hour_ago,
        "started_at": hour_ago,
        "run_token": "lost",
        "lease_expires_at": now - timedelta(minutes=1),
    }
    overdue = _jobs(agent, OVERDUE, at=hour_ago)
    retry = _jobs(agent, LOST_RETRY, attempts=1, **lapsed)
    last = _jobs(agent, LOST_LAST, attempts=POLICY.max_attempts, **lapsed)
    cancelled = _jobs(agent, LOST_CANCELLED, attempts=1, cancel_requested=True, **lapsed)
    long_ago = now - timedelta(seconds=RETENTION_S * 2)
    finished = _jobs(agent, EXPIRED, at=long_ago, status=JobStatus.COMPLETED, completed_at=long_ago)
    with session_factory(engine)() as session:
        session.add(agent)
        session.flush()
        session.add_all([*overdue, *retry, *last, *cancelled, *finished])
        session.flush()
        session.add_all(
            EventSpec(EventType.COMPLETED).row(job.id, sequence=1, attempt=1, at=long_ago)
            for job in finished
        )
        session.commit()
    return Backlog(*([job.id for job in jobs] for jobs in (overdue, retry, last, cancelled)))


def _statuses(engine: Engine) -> Counter[str]:
    with engine.connect() as db:
        return Counter(db.scalars(select(Job.status)))


def _jobs_with_status(engine: Engine, status: JobStatus) -> list[str]:
    with engine.connect() as db:
        return list(db.scalars(select(Job.id).where(Job.status == status)))


def _recovery_events(engine: Engine) -> Counter[str]:
    """How many retrying, failed or cancelled events each job has."""
    kinds = ("retrying", "failed", "cancelled")
    with engine.connect() as db:
        return Counter(db.scalars(select(JobEvent.job_id).where(JobEvent.type.in_(kinds))))


@pytest.fixture
def database(fresh_postgres_url: str) -> Iterator[tuple[str, Engine]]:
    engine = create_db_engine(fresh_postgres_url, pool_size=2)
    migrate(engine)
    yield fresh_postgres_url, engine
    engine.dispose()


@pytest.mark.postgres
def test_three_processes_sweeping_a_backlog_at_once_never_deadlock_and_send_each_job_once(
    database: tuple[str, Engine], tmp_path: Path
) -> None:
    url, engine = database
    now = datetime.now(UTC).replace(microsecond=0)
    backlog = _store_backlog(engine, now)
    chance = random.Random(7)
    claim = chance.sample(backlog.overdue, CLAIMED)
    deadlocks_before = _deadlocks(url)

    first = _sweep_at_once(url, now, tmp_path, claim)

    assert first.errors == []
    assert _deadlocks(url) == deadlocks_before
    # Each job is sent at most once in all; each one still pending exactly once.
    pending = _jobs_with_status(engine, JobStatus.PENDING)
    assert set(first.sends) - set(claim) == set(pending)
    assert max(first.sends.values()) == 1
    assert set(pending) == set(backlog.overdue + backlog.retry) - set(claim)
    assert all(call["batch"] for call in first.calls)
    # Each lost run is recovered exactly once: it has one event saying how.
    assert _recovery_events(engine) == Counter(backlog.retry + backlog.last + backlog.cancelled)
    assert _statuses(engine) == {
        JobStatus.PENDING: OVERDUE - CLAIMED + LOST_RETRY,
        JobStatus.RUNNING: CLAIMED,
        JobStatus.FAILED: LOST_LAST,
        JobStatus.CANCELLED: LOST_CANCELLED,
    }

    claim_later = chance.sample(pending, CLAIMED)
    later = _sweep_at_once(url, now + timedelta(seconds=REQUEUE_AFTER_S + 1), tmp_path, claim_later)

    assert later.errors == []
    assert _deadlocks(url) == deadlocks_before
    # A whole requeue period later, each job still pending is sent once more.
    assert max(later.sends.values()) == 1
    assert set(later.sends) - set(claim_later) == set(pending) - set(claim_later)
    assert set(later.sends) <= set(pending)
    assert all(call["batch"] for call in later.calls)


def test_messages_that_could_not_be_sent_are_logged_so_and_sent_by_the_next_sweep(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    agent = make_agent(id=str(uuid.uuid4()), created_at=clock.now - timedelta(days=1))
    overdue = make_job(agent, id=str(uuid.uuid4()), at=clock.now - timedelta(hours=1))
    lost = make_job(
        agent,
        id=str(uuid.uuid4()),
        at=clock.now - timedelta(hours=1),
        status=JobStatus.RUNNING,
        attempts=1,
        run_token="lost",
        lease_expires_at=clock.now - timedelta(minutes=1),
    )
    with session_factory(engine)() as session:
        session.add(agent)
        session.flush()
        session.add_all([overdue, lost])
        session.commit()
    queue = FakeQueue(error=ConnectionError("Redis is down"))
    sessions = session_factory(engine)
    recovery = Recovery(
        lambda: SqlUnitOfWork(sessions),
        queue,
        POLICY,
        requeue_after_s=REQUEUE_AFTER_S,
        clock=clock,
    )
    caplog.set_level(logging.WARNING, logger="server.recovery")

    recovery.sweep()

    logged = [r.getMessage() for r in caplog.records if r.name == "server.recovery"]
    assert not any(message.startswith("re-sent") for message in logged)
    assert sum(message.startswith("could not send 1 job messages") for message in logged) == 2
    assert set(_jobs_with_status(engine, JobStatus.PENDING)) == {overdue.id, lost.id}

    queue.error = None
    queue.calls.clear()
    clock.advance(1)
    caplog.clear()

    assert recovery.sweep() == 2
    assert sorted(job_id for job_id, _ in queue.calls) == sorted([overdue.id, lost.id])
    logged = [r.getMessage() for r in caplog.records if r.name == "server.recovery"]
    assert logged == ["re-sent 2 pending jobs whose message was overdue"]
    # Sent now, so not again before a whole requeue period has passed.
    clock.advance(REQUEUE_AFTER_S)
    assert recovery.sweep() == 0
