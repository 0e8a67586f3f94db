"""Repositories of agents and jobs. They never commit: the unit of work does.

The sweeper's queries lock what they select with FOR UPDATE SKIP LOCKED: a row another
transaction holds is left for a later sweep instead of waited for, so a sweeper never
waits on a row lock and cannot be part of a deadlock. SQLite renders no FOR UPDATE; it
has one writer, and each update re-checks its condition.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, Select, and_, delete, or_, select, tuple_, update
from sqlalchemy.orm import Session

from server.models import Agent, IdempotencyKey, Job, JobStatus
from server.paging import Cursor
from server.transitions import JobTransitions

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
        query = select(Agent.id).where(Agent.deleted_at.is_not(None), ~has_jobs).limit(limit)
        ids = self._session.scalars(query.with_for_update(skip_locked=True)).all()
        if ids:
            self._session.execute(delete(Agent).where(Agent.id.in_(ids)))
        return len(ids)


class JobRepository(JobTransitions):
    """Jobs, and the compare-and-set transitions that keep runs exactly-once.

    The transitions (claim, finish_attempt, the cancels) are the rules of
    `server/transitions.py`, which the worker also runs without a session.
    """

    def __init__(self, session: Session) -> None:
        super().__init__(session)
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

    def lost_runs(self, *, now: datetime, limit: int) -> Sequence[Job]:
        """Running jobs whose lease ran out (their worker died or hung), locked for the sweep."""
        query = (
            select(Job)
            .where(Job.status == JobStatus.RUNNING, Job.lease_expires_at < now)
            .order_by(Job.lease_expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return self._session.scalars(query).all()

    def requeue_overdue(self, *, before: datetime, now: datetime, limit: int) -> list[str]:
        """Record a new message due `now` for up to `limit` pending jobs overdue since `before`.

        Returns the ids of the jobs it requeued, whose messages the caller then sends.
        """
        overdue = (Job.status == JobStatus.PENDING, Job.enqueued_at < before)
        query = select(Job.id).where(*overdue).order_by(Job.enqueued_at).limit(limit)
        return self._set_enqueued_at(self._take(query), expect=overdue, value=now)

    def mark_unsent(
        self, job_ids: Sequence[str], *, sent_at: datetime, overdue_at: datetime
    ) -> list[str]:
        """Make jobs requeued at `sent_at` whose message was not sent overdue since `overdue_at`."""
        requeued = (Job.status == JobStatus.PENDING, Job.enqueued_at == sent_at)
        query = select(Job.id).where(Job.id.in_(job_ids), *requeued)
        return self._set_enqueued_at(self._take(query), expect=requeued, value=overdue_at)

    def expired(self, *, finished_before: datetime, limit: int) -> list[str]:
        """Ids of jobs that finished before the cutoff (retention is over), locked for the sweep."""
        query = (
            select(Job.id)
            .where(Job.status.in_(FINISHED), Job.completed_at < finished_before)
            .limit(limit)
        )
        return self._take(query)

    def delete(self, job_ids: Sequence[str]) -> None:
        """Remove these jobs (their events and keys are removed by their repositories)."""
        self._session.execute(delete(Job).where(Job.id.in_(job_ids)))

    def _take(self, query: Select[str]) -> list[str]:
        """The ids the query selects, locked; rows another transaction holds are skipped."""
        return list(self._session.scalars(query.with_for_update(skip_locked=True)))

    def _set_enqueued_at(
        self, job_ids: list[str], *, expect: Sequence[ColumnElement[bool]], value: datetime
    ) -> list[str]:
        """Set enqueued_at of those of the jobs still matching `expect`; their ids.

        On PostgreSQL the rows are locked and matched already; on SQLite the select
        took no lock, so the condition is checked again as the rows are written.
        """
        if not job_ids:
            return []
        statement = (
            update(Job)
            .where(Job.id.in_(job_ids), *expect)
            .values(enqueued_at=value)
            .returning(Job.id)
            .execution_options(synchronize_session=False)
        )
        return list(self._session.scalars(statement))


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
        """Remove keys made before the cutoff, but for those another transaction holds."""
        key = (IdempotencyKey.tenant_id, IdempotencyKey.key)
        old = select(*key).where(IdempotencyKey.created_at < cutoff)
        statement = delete(IdempotencyKey).where(
            tuple_(*key).in_(old.with_for_update(skip_locked=True))
        )
        self._session.execute(statement.execution_options(synchronize_session=False))
