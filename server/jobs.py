"""The job side of the service layer: queue, read, list, cancel and watch jobs."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from sqlalchemy import exc as sa_exc

from server.auth import Principal
from server.clock import Clock, utc_now
from server.errors import AlreadyExists, Conflict, InvalidArgument, NotFound, ResourceExhausted
from server.events import EventSpec, EventType
from server.models import IdempotencyKey, Job, JobEvent, JobStatus
from server.paging import Cursor, Page, PageTokens, page_size
from server.queue import JobQueue
from server.unit_of_work import UnitOfWork
from server.validation import ExecutionSpec

log = logging.getLogger(__name__)

AGENT_NOT_FOUND = "Agent not found"
KEY_REUSED = "Idempotency key reused with a different request"
# A capped tenant is told to come back after this; jobs finish on their own time.
CAP_RETRY_AFTER_S = 5


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
        uow: Callable[[], UnitOfWork],
        queue: JobQueue,
        *,
        retention_s: float = 7 * 86400,
        max_unfinished_jobs: int | None = None,
        clock: Clock = utc_now,
        page_tokens: PageTokens | None = None,
    ) -> None:
        self._uow = uow
        self._queue = queue
        self._tokens = page_tokens or PageTokens()
        self._retention = timedelta(seconds=retention_s)
        self._max_unfinished_jobs = max_unfinished_jobs
        self._clock = clock

    def execute(
        self, principal: Principal, agent_id: str, spec: ExecutionSpec, **extras: str | None
    ) -> Job:
        """Store a pending job, then send its message; the row is committed first.

        With a request_id, a retry of the same request returns the original job,
        also when the retries race: the database's unique key picks one winner.
        """
        submission = Submission(agent_id, spec, **extras)
        try:
            job, created = self._store(principal, submission)
        except sa_exc.IntegrityError:
            # A concurrent twin with the same key committed first: answer with its job.
            job, created = self._store(principal, submission)
        if created:
            self._send(job.id)
        return job

    def _store(self, principal: Principal, submission: Submission) -> tuple[Job, bool]:
        now = self._clock()
        tenant = principal.tenant_id
        with self._uow() as uow:
            if submission.request_id is not None:
                replay = self._replay(uow, tenant, submission)
                if replay is not None:
                    return replay, False
            agent = uow.agents.get(submission.agent_id, tenant_id=tenant)
            if agent is None:
                raise NotFound(AGENT_NOT_FOUND)
            depth = self._depth(uow, tenant, submission.parent_job_id, agent.max_depth)
            cap = self._lock_if_capped(uow, tenant)
            if cap is not None:
                if submission.request_id is not None:
                    # A twin may have committed while this one waited for the lock.
                    replay = self._replay(uow, tenant, submission)
                    if replay is not None:
                        return replay, False
                self._check_cap(uow, tenant, cap)
            job = _new_job(tenant, submission, depth=depth, now=now)
            uow.jobs.add(job)
            uow.events.add(EventSpec(EventType.QUEUED).row(job.id, sequence=1, attempt=0, at=now))
            if submission.request_id is not None:
                key = IdempotencyKey(
                    tenant_id=tenant,
                    key=submission.request_id,
                    request_hash=submission.fingerprint(),
                    job_id=job.id,
                    created_at=now,
                )
                uow.keys.add(key)
            uow.commit()
        return job, True

    def _replay(self, uow: UnitOfWork, tenant: str, submission: Submission) -> Job | None:
        assert submission.request_id is not None
        key = uow.keys.get(tenant, submission.request_id)
        if key is None:
            return None
        if key.created_at < self._clock() - self._retention:
            uow.keys.discard(key)  # expired: the key may be used afresh
            return None
        if key.request_hash != submission.fingerprint():
            raise AlreadyExists(KEY_REUSED)
        job = uow.jobs.get(key.job_id, tenant_id=tenant)
        if job is None:
            uow.keys.discard(key)  # its job is gone with retention
            return None
        return job

    def _depth(
        self, uow: UnitOfWork, tenant: str, parent_job_id: str | None, max_depth: int
    ) -> int:
        if parent_job_id is None:
            return 0
        parent = uow.jobs.get(parent_job_id, tenant_id=tenant)
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

    def _lock_if_capped(self, uow: UnitOfWork, tenant: str) -> int | None:
        """The tenant's cap, holding its row lock so racing submits take turns; None if none."""
        own = uow.limits.get(tenant)
        cap = self._max_unfinished_jobs
        if own is not None and own.max_unfinished_jobs is not None:
            cap = own.max_unfinished_jobs
        if cap is None:
            return None
        locked = uow.limits.lock(tenant)
        if locked.max_unfinished_jobs is not None:
            cap = locked.max_unfinished_jobs  # changed while we waited for the lock
        return cap

    def _check_cap(self, uow: UnitOfWork, tenant: str, cap: int) -> None:
        if uow.limits.unfinished_jobs(tenant) >= cap:
            raise ResourceExhausted(
                f"Too many unfinished jobs: the limit is {cap} per tenant",
                retry_after_s=CAP_RETRY_AFTER_S,
                subject=f"tenant:{tenant}",
                limit=f"at most {cap} pending or running jobs",
            )

    def _send(self, job_id: str) -> None:
        try:
            self._queue.enqueue(job_id)
        except Exception:
            # The job is stored; the recovery sweeper sends it again later.
            log.warning("could not enqueue job %s; recovery will retry", job_id, exc_info=True)

    def get_job(self, principal: Principal, job_id: str) -> Job:
        """The caller's job; NOT_FOUND for unknown ids and other tenants' alike."""
        with self._uow() as uow:
            job = uow.jobs.get(job_id, tenant_id=principal.tenant_id)
        if job is None:
            raise not_found(job_id)
        return job

    def list_jobs(
        self,
        principal: Principal,
        *,
        agent_id: str | None = None,
        status: JobStatus | None = None,
        size: int | None = None,
        token: str = "",
    ) -> Page[Job]:
        """A page of the caller's jobs, newest first, optionally filtered."""
        limit = page_size(size)
        scope = f"jobs:{principal.tenant_id}:{agent_id}:{status}"
        after = self._tokens.decode(token, scope=scope)
        with self._uow() as uow:
            rows = uow.jobs.page(
                principal.tenant_id, agent_id=agent_id, status=status, after=after, limit=limit + 1
            )
        return self._tokens.page_of(
            rows, limit=limit, scope=scope, cursor=lambda j: Cursor(j.queued_at, j.id)
        )

    def cancel_job(self, principal: Principal, job_id: str) -> Job:
        """Cancel a job and its unfinished descendants; CONFLICT if it already finished."""
        with self._uow() as uow:
            job = uow.jobs.get(job_id, tenant_id=principal.tenant_id)
            if job is None:
                raise not_found(job_id)
            if job.job_status in (JobStatus.COMPLETED, JobStatus.FAILED):
                raise Conflict(f"Job {job_id} is already {job.status}")
            cancel_tree(uow, [job], at=self._clock())
            uow.commit()
        return self.get_job(principal, job_id)

    def events_after(
        self, principal: Principal, job_id: str, sequence: int, *, limit: int = 100
    ) -> tuple[Job, Sequence[JobEvent]]:
        """The job and its events numbered above `sequence`, oldest first."""
        with self._uow() as uow:
            # Events first: a terminal event is committed with the job's final
            # state, so the job read after it is never older than its events.
            events = uow.events.after(job_id, sequence, limit=limit)
            job = uow.jobs.get(job_id, tenant_id=principal.tenant_id)
        if job is None:
            raise not_found(job_id)
        return job, events


def cancel_tree(uow: UnitOfWork, roots: Sequence[Job], *, at: datetime) -> None:
    """Cancel these jobs and every unfinished job below them.

    A pending job is cancelled at once; a running one gets a cancel request
    that its worker acts on. The walk goes on below finished jobs too, as a
    finished child may have left unfinished children of its own. A job that
    just changed state under us is read again by its conditional update, so a
    claim racing the cancel still ends up asked to stop.
    """
    level = [job.id for job in roots]
    seen: set[str] = set()
    while level:
        for job_id in level:  # both updates do nothing to a finished job
            if not uow.jobs.cancel_pending(job_id, at=at):
                uow.jobs.request_cancel(job_id)
        seen.update(level)
        level = [child.id for child in uow.jobs.children(level) if child.id not in seen]


def _new_job(tenant: str, submission: Submission, *, depth: int, now: datetime) -> Job:
    spec = submission.spec
    return Job(
        id=str(uuid.uuid4()),
        tenant_id=tenant,
        agent_id=submission.agent_id,
        status=JobStatus.PENDING,
        prompt=spec.prompt,
        context_id=spec.context_id,
        enable_adversarial=spec.enable_adversarial,
        enable_self_correction=spec.enable_self_correction,
        max_debate_rounds=spec.max_debate_rounds,
        attempts=0,
        queued_at=now,
        next_run_at=now,
        enqueued_at=now,
        tokens_used=0,
        verified=False,
        parent_job_id=submission.parent_job_id,
        depth=depth,
        cancel_requested=False,
        event_seq=1,
    )
