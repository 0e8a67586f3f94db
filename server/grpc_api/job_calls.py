"""Where the servicers' job reads and plain executions go.

On PostgreSQL the hot ones run on asyncpg on the event loop (`server.pg_jobs`)
and the message is sent from a background thread; every other case, and
SQLite, goes to the service layer through the thread pool.
"""

from __future__ import annotations

import asyncio
import uuid

from server.auth import Principal
from server.clock import Clock, utc_now
from server.errors import NotFound
from server.grpc_api.blocking import Blocking
from server.jobs import AGENT_NOT_FOUND, not_found
from server.models import StoredJob
from server.pg_jobs import NewJob, PgJobStore, Queued
from server.sending import MessageSender
from server.services import Services
from server.validation import ExecutionSpec


class JobCalls:
    """Reads a job and queues an execution for the servicers."""

    def __init__(
        self,
        services: Services,
        blocking: Blocking,
        *,
        store: PgJobStore | None = None,
        sender: MessageSender | None = None,
        capped_by_default: bool = False,
        clock: Clock = utc_now,
    ) -> None:
        self._services = services
        self._blocking = blocking
        self._store = store
        # A cap for every tenant means every submit counts under a lock.
        self._plain: tuple[PgJobStore, MessageSender] | None = None
        if store is not None and sender is not None and not capped_by_default:
            self._plain = (store, sender)
        self._clock = clock

    async def get_job(self, principal: Principal, job_id: str) -> StoredJob:
        """The caller's job; NOT_FOUND for unknown ids and other tenants' alike."""
        if self._store is None:
            return await self._blocking(self._services.jobs.get_job, principal, job_id)
        job = await self._store.get_job(principal.tenant_id, job_id)
        if job is None:
            raise not_found(job_id)
        return job

    async def execute(
        self,
        principal: Principal,
        agent_id: str,
        spec: ExecutionSpec,
        *,
        request_id: str | None,
        parent_job_id: str | None,
    ) -> str:
        """Queue an execution of the caller's agent; returns the job id."""
        if self._plain is not None and request_id is None and parent_job_id is None:
            store, sender = self._plain
            job = NewJob(
                job_id=str(uuid.uuid4()),
                agent_id=agent_id,
                tenant_id=principal.tenant_id,
                spec=spec,
                queued_at=self._clock(),
            )
            # Shielded: once the row is stored, its message is sent even if
            # the caller has gone away meanwhile.
            outcome = await asyncio.shield(_queue_and_send(store, sender, job))
            if outcome is Queued.QUEUED:
                return job.job_id
            if outcome is Queued.NO_AGENT:
                raise NotFound(AGENT_NOT_FOUND)
            # Capped: the service layer counts the tenant's jobs under its lock.
        stored = await self._blocking(
            self._services.jobs.execute,
            principal,
            agent_id,
            spec,
            request_id=request_id,
            parent_job_id=parent_job_id,
        )
        return stored.id


async def _queue_and_send(store: PgJobStore, sender: MessageSender, job: NewJob) -> Queued:
    outcome = await store.queue_job(job)
    if outcome is Queued.QUEUED:
        sender.send(job.job_id)
    return outcome
