"""The job side of the service layer: queue, read, list, cancel and watch jobs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from server import metrics, tracing
from server.auth.principal import Principal
from server.clock import Clock, utc_now
from server.errors import AlreadyExists, Conflict, InvalidArgument, NotFound, ResourceExhausted
from server.paging import Cursor, Page, PageTokens, page_size
from server.prompt_guard import PromptGuard
from server.store.database import DuplicateKey
from server.store.jobs import NewJob
from server.store.models import JobStatus
from server.store.records import EventRecord, IdempotencyRecord, JobRecord
from server.store.store import Store, Tables
from server.store.transitions import cancel_pending, request_cancel
from server.validation import ExecutionSpec

AGENT_NOT_FOUND = "Agent not found"
KEY_REUSED = "Idempotency key reused with a different request"
# A capped tenant is told to come back after this; jobs finish on their own time.
CAP_RETRY_AFTER_S = 5


class Sender(Protocol):
    """Hands a committed job's id to the workers; returns at once (`server/sending.py`)."""

    def send(self, job_id: str) -> None: ...


@dataclass(frozen=True)
class Submission:
    """An execution to queue: the checked request and its optional extras."""

    agent_id: str
    spec: ExecutionSpec
    request_id: str | None = None
    parent_job_id: str | None = None

    def fingerprint(self) -> str:
        """SHA-256 of the request, to tell a retry from a different request."""
        document = {"agent_id": self.agent_id, "parent": self.parent_job_id, **asdict(self.spec)}
        return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def not_found(job_id: str) -> NotFound:
    """The message of docs/contract.md §3 for a job the caller cannot see."""
    return NotFound(f"Job {job_id} not found")


class JobService:
    """Queue executions and read, list, cancel and watch jobs of the caller's tenant."""

    def __init__(
        self,
        store: Store,
        sender: Sender,
        *,
        retention_s: float = 7 * 86400,
        max_unfinished_jobs: int | None = None,
        clock: Clock = utc_now,
        page_tokens: PageTokens | None = None,
        context_auto: bool = False,
        prompt_guard: PromptGuard | None = None,
    ) -> None:
        """With `context_auto`, an execution without a context_id starts a new context."""
        self._store = store
        self._sender = sender
        self._guard = prompt_guard or PromptGuard()
        self._tokens = page_tokens or PageTokens()
        self._retention = timedelta(seconds=retention_s)
        self._max_unfinished_jobs = max_unfinished_jobs
        self._clock = clock
        self._context_auto = context_auto

    async def execute(
        self,
        principal: Principal,
        agent_id: str,
        spec: ExecutionSpec,
        *,
        request_id: str | None = None,
        parent_job_id: str | None = None,
    ) -> str:
        """Store a pending job, then send its message; returns the job's id.

        With a request_id, a retry of the same request returns the original job, also
        when the retries race: the database's unique key picks one winner. Shielded:
        once the row is stored, its message is sent even if the caller has gone away.
        The prompt guard reads the prompt first, so a refused prompt stores nothing and
        is refused even for an agent that does not exist, as vex-api refuses it.
        """
        self._guard.check_prompt(spec.prompt)
        submission = Submission(agent_id, spec, request_id, parent_job_id)
        return await asyncio.shield(self._execute(principal.tenant_id, submission))

    async def _execute(self, tenant: str, submission: Submission) -> str:
        try:
            job_id, created = await self._queue(tenant, submission)
        except DuplicateKey:
            # A concurrent twin with the same key committed first: answer with its job.
            job_id, created = await self._queue(tenant, submission)
        if created:
            with tracing.message_span(job_id):
                self._sender.send(job_id)
            metrics.jobs_counted("submitted", tenant)
        return job_id

    async def _queue(self, tenant: str, submission: Submission) -> tuple[str, bool]:
        job = self._new_job(tenant, submission)
        plain = submission.request_id is None and submission.parent_job_id is None
        if plain and self._max_unfinished_jobs is None:
            # Nothing to check first: one statement stores the job, unless the tenant
            # has a cap of its own, which only a count under its lock may check.
            if await self._store.jobs.queue(job, unless_capped=True):
                return job.id, True
            if await self._store.agents.get(job.agent_id, tenant_id=tenant) is None:
                raise NotFound(AGENT_NOT_FOUND)
        async with self._store.transaction() as tx:
            if submission.request_id is not None:
                replay = await self._replay(tx, tenant, submission)
                if replay is not None:
                    return replay, False
            agent = await tx.agents.get(job.agent_id, tenant_id=tenant)
            if agent is None:
                raise NotFound(AGENT_NOT_FOUND)
            depth = await self._depth(tx, tenant, submission.parent_job_id, agent.max_depth)
            cap = await self._lock_if_capped(tx, tenant)
            if cap is not None:
                if submission.request_id is not None:
                    # A twin may have committed while this one waited for the lock.
                    replay = await self._replay(tx, tenant, submission)
                    if replay is not None:
                        return replay, False
                await self._check_cap(tx, tenant, cap)
            job = replace(job, depth=depth)
            if not await tx.jobs.queue(job):  # pragma: no cover - checked above, locked
                raise NotFound(AGENT_NOT_FOUND)
            if submission.request_id is not None:
                key = IdempotencyRecord(
                    tenant_id=tenant,
                    key=submission.request_id,
                    request_hash=submission.fingerprint(),
                    job_id=job.id,
                    created_at=job.queued_at,
                )
                await tx.keys.add(key)
        return job.id, True

    def _new_job(self, tenant: str, submission: Submission) -> NewJob:
        spec = submission.spec
        context_id = spec.context_id
        if context_id is None and self._context_auto:
            # Named now and stored on the job, so whichever attempt completes it stores
            # its turn in this one context; the result names it (new_context_id).
            context_id = str(uuid.uuid4())
        return NewJob(
            id=str(uuid.uuid4()),
            tenant_id=tenant,
            agent_id=submission.agent_id,
            prompt=spec.prompt,
            context_id=context_id,
            enable_adversarial=spec.enable_adversarial,
            enable_self_correction=spec.enable_self_correction,
            max_debate_rounds=spec.max_debate_rounds,
            queued_at=self._clock(),
            parent_job_id=submission.parent_job_id,
            # The worker's spans join this request's trace (README.md, Tracing).
            traceparent=tracing.current_traceparent(),
        )

    async def _replay(self, tx: Tables, tenant: str, submission: Submission) -> str | None:
        assert submission.request_id is not None
        key = await tx.keys.get(tenant, submission.request_id)
        if key is None:
            return None
        if key.created_at < self._clock() - self._retention:
            await tx.keys.discard(key)  # expired: the key may be used afresh
            return None
        if key.request_hash != submission.fingerprint():
            raise AlreadyExists(KEY_REUSED)
        if await tx.jobs.get(key.job_id, tenant_id=tenant) is None:
            await tx.keys.discard(key)  # its job is gone with retention
            return None
        return key.job_id

    async def _depth(
        self, tx: Tables, tenant: str, parent_job_id: str | None, max_depth: int
    ) -> int:
        if parent_job_id is None:
            return 0
        parent = await tx.jobs.get(parent_job_id, tenant_id=tenant)
        if parent is None:
            raise not_found(parent_job_id)
        if parent.job_status is JobStatus.CANCELLED or parent.cancel_requested:
            # Its children are being cancelled; a new one must not slip past.
            raise Conflict(f"Job {parent_job_id} is already cancelled")
        depth = parent.depth + 1
        if depth > max_depth:
            message = f"Execution depth {depth} exceeds max_depth {max_depth}"
            raise InvalidArgument.field("parent_job_id", message)
        return depth

    async def check_capacity(self, tx: Tables, tenant: str) -> None:
        """Refuse (429) one more unfinished job of a tenant at its cap; the tenant's lock is
        held to the end of `tx`, so racing submits take turns (a workflow run's start)."""
        cap = await self._lock_if_capped(tx, tenant)
        if cap is not None:
            await self._check_cap(tx, tenant, cap)

    async def _lock_if_capped(self, tx: Tables, tenant: str) -> int | None:
        """The tenant's cap, holding its row lock so racing submits take turns; None if none."""
        own = await tx.limits.get(tenant)
        cap = self._max_unfinished_jobs
        if own is not None and own.max_unfinished_jobs is not None:
            cap = own.max_unfinished_jobs
        if cap is None:
            return None
        locked = await tx.limits.lock(tenant)
        if locked.max_unfinished_jobs is not None:
            cap = locked.max_unfinished_jobs  # changed while we waited for the lock
        return cap

    async def _check_cap(self, tx: Tables, tenant: str, cap: int) -> None:
        if await tx.jobs.unfinished_count(tenant) >= cap:
            metrics.refused("cap")
            raise ResourceExhausted(
                f"Too many unfinished jobs: the limit is {cap} per tenant",
                retry_after_s=CAP_RETRY_AFTER_S,
                subject=f"tenant:{tenant}",
                limit=f"at most {cap} pending or running jobs",
            )

    async def get_job(self, principal: Principal, job_id: str) -> JobRecord:
        """The caller's job; NOT_FOUND for unknown ids and other tenants' alike."""
        job = await self._store.jobs.get(job_id, tenant_id=principal.tenant_id)
        if job is None:
            raise not_found(job_id)
        return job

    async def list_jobs(
        self,
        principal: Principal,
        *,
        agent_id: str | None = None,
        status: JobStatus | None = None,
        size: int | None = None,
        token: str = "",
    ) -> Page[JobRecord]:
        """A page of the caller's jobs, newest first, optionally filtered."""
        limit = page_size(size)
        scope = f"jobs:{principal.tenant_id}:{agent_id}:{status}"
        after = self._tokens.decode(token, scope=scope)
        rows = await self._store.jobs.page(
            principal.tenant_id, agent_id=agent_id, status=status, after=after, limit=limit + 1
        )
        return self._tokens.page_of(
            rows, limit=limit, scope=scope, cursor=lambda j: Cursor(j.queued_at, j.id)
        )

    async def cancel_job(self, principal: Principal, job_id: str) -> JobRecord:
        """Cancel a job and its unfinished descendants; CONFLICT if it already finished."""
        async with self._store.transaction() as tx:
            job = await tx.jobs.get(job_id, tenant_id=principal.tenant_id)
            if job is None:
                raise not_found(job_id)
            if job.job_status in (JobStatus.COMPLETED, JobStatus.FAILED):
                raise Conflict(f"Job {job_id} is already {job.status}")
            cancelled = await cancel_tree(tx, [job], at=self._clock())
        metrics.jobs_counted("cancelled", principal.tenant_id, cancelled)
        return await self.get_job(principal, job_id)

    async def events_after(
        self, principal: Principal, job_id: str, sequence: int, *, limit: int = 100
    ) -> tuple[JobRecord, Sequence[EventRecord]]:
        """The job and its events numbered above `sequence`, oldest first."""
        # Events first: a terminal event is committed with the job's final state, so
        # the job read after it is never older than its events.
        events = await self._store.events.after(job_id, sequence, limit=limit)
        job = await self._store.jobs.get(job_id, tenant_id=principal.tenant_id)
        if job is None:
            raise not_found(job_id)
        return job, events


async def cancel_tree(tx: Tables, roots: Sequence[JobRecord], *, at: datetime) -> int:
    """Cancel these jobs and every unfinished job below them; the pending ones cancelled.

    A pending job is cancelled at once; a running one gets a cancel request that its
    worker acts on (and counts). The walk goes on below finished jobs too, as a finished child may
    have left unfinished children of its own. A job that just changed state under us is
    read again by its conditional update, so a claim racing the cancel still ends up
    asked to stop.
    """
    level = [job.id for job in roots]
    seen: set[str] = set()
    cancelled = 0
    while level:
        for job_id in level:  # both updates do nothing to a finished job
            if await tx.jobs.apply(cancel_pending(job_id, at=at)):
                cancelled += 1
            else:
                await tx.jobs.apply(request_cancel(job_id))
        seen.update(level)
        level = [child.id for child in await tx.jobs.children(level) if child.id not in seen]
    return cancelled
