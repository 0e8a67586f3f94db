"""The two hottest calls, reading a job and queueing a plain one, straight on asyncpg.

Polling jobs and queueing them are most of an API server's traffic. Through the
ORM and the thread pool each cost milliseconds of CPU; here each is one
statement awaited on the event loop. The rows written are the ones the service
layer writes (`JobService`), which still handles everything else: idempotent
retries, sub-agents, capped tenants, and SQLite.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

import asyncpg
from sqlalchemy.engine import make_url

from server.errors import DATABASE_UNAVAILABLE, Unavailable
from server.models import StoredJob
from server.validation import ExecutionSpec

# What a connection lost mid-call raises (class 08, or 57 as when an operator
# ends the backend; asyncpg may also notice the loss only as a protocol state
# error); any other error of a statement is a bug to report.
_LOST = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

_GET_JOB = """
SELECT id, agent_id, status, queued_at, started_at, completed_at, attempts, error,
       response, tokens_used, prompt, context_hash, merkle_root, verified, confidence,
       parent_job_id, depth
FROM jobs WHERE id = $1 AND tenant_id = $2
"""

# One statement, so one round trip and one implicit transaction: the job and its
# QUEUED event (sequence 1) are stored together or not at all. A tenant with a
# cap of its own is left to the service layer, which counts under a row lock.
_QUEUE_JOB = """
WITH agent AS (
    SELECT id FROM agents WHERE id = $2 AND tenant_id = $3 AND deleted_at IS NULL
), capped AS (
    SELECT 1 FROM tenant_limits WHERE tenant_id = $3 AND max_unfinished_jobs IS NOT NULL
), job AS (
    INSERT INTO jobs (
        id, tenant_id, agent_id, status, prompt, context_id, enable_adversarial,
        enable_self_correction, max_debate_rounds, attempts, queued_at, next_run_at,
        enqueued_at, tokens_used, verified, depth, cancel_requested, event_seq
    )
    SELECT $1, $3, agent.id, 'pending', $4, $5, $6, $7, $8, 0, $9, $9, $9, 0, false, 0,
           false, 1
    FROM agent WHERE NOT EXISTS (SELECT 1 FROM capped)
    RETURNING id
), queued AS (
    INSERT INTO job_events (job_id, sequence, type, created_at, attempt)
    SELECT id, 1, 'queued', $9, 0 FROM job
)
SELECT EXISTS (SELECT 1 FROM job) AS queued, EXISTS (SELECT 1 FROM agent) AS agent_found
"""


class Queued(Enum):
    """What became of a plain execution."""

    QUEUED = "queued"
    NO_AGENT = "no agent"  # unknown, deleted or another tenant's
    CAPPED = "capped"  # the tenant has a cap: the service layer must decide


@dataclass(frozen=True, slots=True)
class JobRow:
    """A job as _GET_JOB reads it, columns in its order: a StoredJob.

    Plain attributes: a record read through __getattr__ cost more than the
    rest of building the Job message.
    """

    id: str
    agent_id: str
    status: str
    queued_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    attempts: int
    error: str | None
    response: str | None
    tokens_used: int
    prompt: str
    context_hash: str | None
    merkle_root: str | None
    verified: bool
    confidence: float | None
    parent_job_id: str | None
    depth: int


@dataclass(frozen=True)
class NewJob:
    """A plain execution to store: no request id, no parent."""

    job_id: str
    agent_id: str
    tenant_id: str
    spec: ExecutionSpec
    queued_at: datetime


async def _nothing_to_reset(connection: asyncpg.Connection[asyncpg.Record]) -> None:
    """Stands in for the pool's reset query, which costs a round trip per release.

    The statements on these pools are single autocommitted statements that change no
    session state (no SET, LISTEN, advisory lock or cursor), so there is none to reset;
    asyncpg still rolls back a transaction left open.
    """


async def open_pool(database_url: str, *, size: int) -> asyncpg.Pool[asyncpg.Record]:
    """A pool of up to `size` connections (one opened now) for one-statement calls."""
    return await asyncpg.create_pool(
        asyncpg_dsn(database_url),
        min_size=1,
        max_size=size,
        command_timeout=30,
        reset=_nothing_to_reset,
    )


def asyncpg_dsn(database_url: str) -> str:
    """The URL asyncpg takes for a SQLAlchemy PostgreSQL URL of any driver."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


async def close_pool(pool: asyncpg.Pool[asyncpg.Record], *, timeout_s: float = 10.0) -> None:
    """Close every connection once released; after `timeout_s`, drop them."""
    try:
        await asyncio.wait_for(pool.close(), timeout_s)
    except TimeoutError:
        pool.terminate()


class PgJobStore:
    """Reads a job and queues a plain one, each with one statement on a pool."""

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, database_url: str, *, size: int) -> PgJobStore:
        """A store with a pool of up to `size` connections (one opened now)."""
        return cls(await open_pool(database_url, size=size))

    async def get_job(self, tenant_id: str, job_id: str) -> StoredJob | None:
        """The tenant's job, or None when it doesn't exist or is another tenant's."""
        row = await self._fetchrow(_GET_JOB, job_id, tenant_id)
        return None if row is None else JobRow(*row)

    async def queue_job(self, job: NewJob) -> Queued:
        """Store a pending job with its QUEUED event, unless its agent or a cap says no."""
        spec = job.spec
        row = await self._fetchrow(
            _QUEUE_JOB,
            job.job_id,
            job.agent_id,
            job.tenant_id,
            spec.prompt,
            spec.context_id,
            spec.enable_adversarial,
            spec.enable_self_correction,
            spec.max_debate_rounds,
            job.queued_at,
        )
        if row is None:  # pragma: no cover - its final SELECT always answers one row
            raise RuntimeError("queueing a job returned no row")
        if row["queued"]:
            return Queued.QUEUED
        return Queued.CAPPED if row["agent_found"] else Queued.NO_AGENT

    async def _fetchrow(self, query: str, *args: object) -> asyncpg.Record | None:
        # A call cancelled mid-statement (its client went away) would cost the
        # pool that connection; shielded, the statement ends and it goes back.
        return await asyncio.shield(self._fetchrow_on_a_connection(query, *args))

    async def _fetchrow_on_a_connection(self, query: str, *args: object) -> asyncpg.Record | None:
        # Whatever stops a connection being had (refused, a database closed to
        # connections, a full server) means the database is unavailable.
        try:
            connection = await self._pool.acquire()
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            raise Unavailable(DATABASE_UNAVAILABLE) from error
        try:
            return await connection.fetchrow(query, *args)
        except _LOST as error:
            raise Unavailable(DATABASE_UNAVAILABLE) from error
        finally:
            await self._pool.release(connection)

    async def close(self, *, timeout_s: float = 10.0) -> None:
        """Close every connection once released; after `timeout_s`, drop them."""
        await close_pool(self._pool, timeout_s=timeout_s)
