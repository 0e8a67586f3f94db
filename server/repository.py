"""Repositories of agents and jobs. They never commit: the unit of work does."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.models import Agent, Job, JobStatus


class AgentRepository:
    """Agents, always looked up within one tenant."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, agent: Agent) -> None:
        """Stage a new agent."""
        self._session.add(agent)

    def get(self, agent_id: str, *, tenant_id: str | None = None) -> Agent | None:
        """The agent, or None when it doesn't exist or belongs to another tenant."""
        agent = self._session.get(Agent, agent_id)
        if agent is None or (tenant_id is not None and agent.tenant_id != tenant_id):
            return None
        return agent


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
        )

    def finish_attempt(self, job_id: str, *, token: str, values: dict[str, Any]) -> bool:
        """Apply the outcome of the attempt holding `token`; False if it lost the job."""
        return self._transition(
            job_id,
            expect={"status": JobStatus.RUNNING, "run_token": token},
            values={"run_token": None, "lease_expires_at": None, **values},
        )

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

    def _transition(
        self,
        job_id: str,
        *,
        expect: dict[str, Any],
        values: dict[str, Any],
        due_by: datetime | None = None,
    ) -> bool:
        # One conditional UPDATE: the database decides which of two racing
        # workers (or sweepers) wins, so nothing relies on timing.
        conditions = [Job.id == job_id, *(getattr(Job, k) == v for k, v in expect.items())]
        if due_by is not None:
            conditions.append(Job.next_run_at <= due_by)
        statement = update(Job).where(*conditions).values(**values)
        result = self._session.execute(statement, execution_options={"synchronize_session": False})
        return bool(result.rowcount)  # type: ignore[attr-defined]
