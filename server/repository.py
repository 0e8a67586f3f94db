"""Repositories of agents and jobs. They never commit: the unit of work does."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session

from server.events import EventSpec, EventType
from server.models import Agent, IdempotencyKey, Job, JobStatus
from server.paging import Cursor

UNFINISHED = (JobStatus.PENDING, JobStatus.RUNNING)
FINISHED = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class AgentRepository:
    """Agents, always looked up within one tenant."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, agent: Agent) -> None:
        """Stage a new agent."""
        self._session.add(agent)

    def get(
        self, agent_id: str, *, tenant_id: str | None = None, include_deleted: bool = False
    ) -> Agent | None:
        """The agent, or None when it doesn't exist, is deleted or is another tenant's."""
        agent = self._session.get(Agent, agent_id)
        if agent is None or (tenant_id is not None and agent.tenant_id != tenant_id):
            return None
        if agent.deleted_at is not None and not include_deleted:
            return None
        return agent

    def page(self, tenant_id: str, *, after: Cursor | None, limit: int) -> Sequence[Agent]:
        """Up to `limit` live agents of the tenant, newest first, strictly after `after`."""
        query = select(Agent).where(Agent.tenant_id == tenant_id, Agent.deleted_at.is_(None))
        if after is not None:
            query = query.where(
                or_(
                    Agent.created_at < after.at,
                    and_(Agent.created_at == after.at, Agent.id < after.id),
                )
            )
        query = query.order_by(Agent.created_at.desc(), Agent.id.desc()).limit(limit)
        return self._session.scalars(query).all()

    def purge_deleted(self, *, limit: int) -> int:
        """Remove deleted agents that no longer have any job; returns how many."""
        has_jobs = select(Job.id).where(Job.agent_id == Agent.id).exists()
        ids = self._session.scalars(
            select(Agent.id).where(Agent.deleted_at.is_not(None), ~has_jobs).limit(limit)
        ).all()
        if ids:
            self._session.execute(delete(Agent).where(Agent.id.in_(ids)))
        return len(ids)


class JobRepository:
    """Jobs, and the compare-and-set transitions that keep runs exactly-once."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, job: Job) -> None:
        """Stage a new job."""
        self._session.add(job)

    def get(self, job_id: str, *, tenant_id: str | None = None) -> Job | None:
        """The job, or None when it doesn't exist or belongs to another tenant."""
        job = self._session.get(Job, job_id)
        if job is None or (tenant_id is not None and job.tenant_id != tenant_id):
            return None
        return job

    def page(
        self,
        tenant_id: str,
        *,
        agent_id: str | None,
        status: JobStatus | None,
        after: Cursor | None,
        limit: int,
    ) -> Sequence[Job]:
        """Up to `limit` jobs of the tenant, newest first, strictly after `after`."""
        query = select(Job).where(Job.tenant_id == tenant_id)
        if agent_id is not None:
            query = query.where(Job.agent_id == agent_id)
        if status is not None:
            query = query.where(Job.status == status)
        if after is not None:
            query = query.where(
                or_(Job.queued_at < after.at, and_(Job.queued_at == after.at, Job.id < after.id))
            )
        query = query.order_by(Job.queued_at.desc(), Job.id.desc()).limit(limit)
        return self._session.scalars(query).all()

    def children(self, job_ids: Sequence[str]) -> Sequence[Job]:
        """Jobs whose parent is one of `job_ids`, in any state."""
        query = select(Job).where(Job.parent_job_id.in_(job_ids))
        return self._session.scalars(query).all()

    def unfinished_of_agent(self, agent_id: str) -> Sequence[Job]:
        """Pending or running jobs of an agent."""
        query = select(Job).where(Job.agent_id == agent_id, Job.status.in_(UNFINISHED))
        return self._session.scalars(query).all()

    def claim(self, job_id: str, *, now: datetime, token: str, lease_until: datetime) -> bool:
        """Move a due pending job to running for one attempt; False if another got it."""
        return self._transition(
            job_id,
            expect={"status": JobStatus.PENDING},
            due_by=now,
            values={
                "status": JobStatus.RUNNING,
                "attempts": Job.attempts + 1,
                "started_at": now,
                "run_token": token,
                "lease_expires_at": lease_until,
            },
            event=EventSpec(type=EventType.STARTED),
            at=now,
        )

    def finish_attempt(
        self,
        job_id: str,
        *,
        token: str,
        values: dict[str, Any],
        event: EventSpec | None = None,
        at: datetime | None = None,
        unless_cancelled: bool = False,
    ) -> bool:
        """Apply the outcome of the attempt holding `token`; False if it lost the job.

        With `unless_cancelled`, a job whose cancel was requested is left alone
        too, so its attempt can record `cancelled` instead.
        """
        expect: dict[str, Any] = {"status": JobStatus.RUNNING, "run_token": token}
        if unless_cancelled:
            expect["cancel_requested"] = False
        return self._transition(
            job_id,
            expect=expect,
            values={"run_token": None, "lease_expires_at": None, **values},
            event=event,
            at=at,
        )

    def record(self, job_id: str, *, token: str, event: EventSpec, at: datetime) -> bool:
        """Record an event of a running attempt (a token delta) while it holds the job."""
        expect = {"status": JobStatus.RUNNING, "run_token": token}
        return self._transition(job_id, expect=expect, values={}, event=event, at=at)

    def cancel_pending(self, job_id: str, *, at: datetime, event: EventSpec) -> bool:
        """Cancel a job that no worker holds; False if it is not pending any more."""
        values = {"status": JobStatus.CANCELLED, "completed_at": at}
        expect = {"status": JobStatus.PENDING}
        return self._transition(job_id, expect=expect, values=values, event=event, at=at)

    def request_cancel(self, job_id: str) -> bool:
        """Ask the worker of a running job to stop; False if it is not running."""
        expect = {"status": JobStatus.RUNNING}
        return self._transition(job_id, expect=expect, values={"cancel_requested": True})

    def mark_enqueued(self, job_id: str, *, previous: datetime, due: datetime) -> bool:
        """Record a new message for a pending job, unless another process just did."""
        return self._transition(
            job_id,
            expect={"status": JobStatus.PENDING, "enqueued_at": previous},
            values={"enqueued_at": due},
        )

    def lost_runs(self, *, now: datetime, limit: int) -> Sequence[Job]:
        """Running jobs whose lease ran out: their worker died or hung."""
        query = (
            select(Job)
            .where(Job.status == JobStatus.RUNNING, Job.lease_expires_at < now)
            .order_by(Job.lease_expires_at)
            .limit(limit)
        )
        return self._session.scalars(query).all()

    def overdue_pending(self, *, before: datetime, limit: int) -> Sequence[Job]:
        """Pending jobs whose newest message should have been picked up before `before`."""
        query = (
            select(Job)
            .where(Job.status == JobStatus.PENDING, Job.enqueued_at < before)
            .order_by(Job.enqueued_at)
            .limit(limit)
        )
        return self._session.scalars(query).all()

    def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        """Which of these running jobs have a cancel request."""
        query = select(Job.id).where(Job.id.in_(job_ids), Job.cancel_requested.is_(True))
        return set(self._session.scalars(query).all())

    def expired(self, *, finished_before: datetime, limit: int) -> list[str]:
        """Ids of jobs that finished before the cutoff (retention is over)."""
        query = (
            select(Job.id)
            .where(Job.status.in_(FINISHED), Job.completed_at < finished_before)
            .limit(limit)
        )
        return list(self._session.scalars(query).all())

    def delete(self, job_ids: Sequence[str]) -> None:
        """Remove these jobs (their events and keys are removed by their repositories)."""
        self._session.execute(delete(Job).where(Job.id.in_(job_ids)))

    def _transition(
        self,
        job_id: str,
        *,
        expect: dict[str, Any],
        values: dict[str, Any],
        due_by: datetime | None = None,
        event: EventSpec | None = None,
        at: datetime | None = None,
    ) -> bool:
        # One conditional UPDATE: the database decides which of two racing
        # workers (or sweepers) wins, so nothing relies on timing. An event
        # takes its number from the same row update, so numbers never repeat.
        conditions = [Job.id == job_id, *(getattr(Job, k) == v for k, v in expect.items())]
        if due_by is not None:
            conditions.append(Job.next_run_at <= due_by)
        statement = update(Job).where(*conditions)
        options = {"synchronize_session": False}
        if event is None:
            result = self._session.execute(statement.values(**values), execution_options=options)
            return bool(result.rowcount)  # type: ignore[attr-defined]
        statement = statement.values(**values, event_seq=Job.event_seq + 1).returning(
            Job.event_seq, Job.attempts
        )
        row = self._session.execute(statement, execution_options=options).first()
        if row is None:
            return False
        if at is None:
            raise ValueError("an event needs its time")
        self._session.add(event.row(job_id, sequence=row[0], attempt=row[1], at=at))
        return True


class KeyRepository:
    """Idempotency keys per tenant."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def get(self, tenant_id: str, key: str) -> IdempotencyKey | None:
        """The stored key, if any."""
        return self._session.get(IdempotencyKey, (tenant_id, key))

    def add(self, key: IdempotencyKey) -> None:
        """Stage a new key; a concurrent twin makes the commit fail."""
        self._session.add(key)

    def discard(self, key: IdempotencyKey) -> None:
        """Remove a key whose retention is over."""
        self._session.delete(key)

    def delete_for(self, job_ids: Sequence[str]) -> None:
        """Remove the keys of these jobs."""
        self._session.execute(delete(IdempotencyKey).where(IdempotencyKey.job_id.in_(job_ids)))

    def delete_older_than(self, cutoff: datetime) -> None:
        """Remove keys made before the cutoff."""
        self._session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < cutoff))
