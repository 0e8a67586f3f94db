"""The service layer of the API: one unit of work per call, tenant checks, enqueueing."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata

from server.auth import Principal
from server.clock import Clock, utc_now
from server.errors import NotFound
from server.models import Agent, Job, JobStatus
from server.queue import JobQueue
from server.unit_of_work import UnitOfWork
from server.validation import AgentSpec, ExecutionSpec

log = logging.getLogger(__name__)

AGENT_NOT_FOUND = "Agent not found"


@dataclass(frozen=True)
class Health:
    """What the health check reports."""

    version: str
    checked_at: datetime
    db_type: str


@dataclass(frozen=True)
class Services:
    """What the gRPC servicers call."""

    agents: AgentService
    jobs: JobService
    system: SystemService


class SystemService:
    """Reports on the service itself."""

    def __init__(
        self, check_database: Callable[[], None], *, db_type: str, clock: Clock = utc_now
    ) -> None:
        self._check_database = check_database
        self._db_type = db_type
        self._clock = clock

    def health(self) -> Health:
        """Healthy when the database answers; raises Unavailable otherwise."""
        self._check_database()
        return Health(version=agentq_version(), checked_at=self._clock(), db_type=self._db_type)


def agentq_version() -> str:
    """The installed agentq version."""
    try:
        return metadata.version("agentq")
    except metadata.PackageNotFoundError:  # running from a source tree without install
        return "0+unknown"


class AgentService:
    """Create and read agents within the caller's tenant."""

    def __init__(self, uow: Callable[[], UnitOfWork], *, clock: Clock = utc_now) -> None:
        self._uow = uow
        self._clock = clock

    def create_agent(self, principal: Principal, spec: AgentSpec) -> Agent:
        """Store a new agent for the caller's tenant."""
        agent = Agent(
            id=str(uuid.uuid4()),
            tenant_id=principal.tenant_id,
            name=spec.name,
            role=spec.role,
            max_depth=spec.max_depth,
            spawn_shadow=spec.spawn_shadow,
            generation=0,
            fitness=0.0,
            created_at=self._clock(),
        )
        with self._uow() as uow:
            uow.agents.add(agent)
            uow.commit()
        return agent

    def get_agent(self, principal: Principal, agent_id: str) -> Agent:
        """The caller's agent; NOT_FOUND for unknown ids and other tenants' alike."""
        with self._uow() as uow:
            agent = uow.agents.get(agent_id, tenant_id=principal.tenant_id)
        if agent is None:
            raise NotFound(AGENT_NOT_FOUND)
        return agent


class JobService:
    """Queue executions and read jobs within the caller's tenant."""

    def __init__(
        self, uow: Callable[[], UnitOfWork], queue: JobQueue, *, clock: Clock = utc_now
    ) -> None:
        self._uow = uow
        self._queue = queue
        self._clock = clock

    def execute(self, principal: Principal, agent_id: str, spec: ExecutionSpec) -> Job:
        """Store a pending job, then send its message; the row is committed first."""
        now = self._clock()
        with self._uow() as uow:
            if uow.agents.get(agent_id, tenant_id=principal.tenant_id) is None:
                raise NotFound(AGENT_NOT_FOUND)
            job = Job(
                id=str(uuid.uuid4()),
                tenant_id=principal.tenant_id,
                agent_id=agent_id,
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
            )
            uow.jobs.add(job)
            uow.commit()
        try:
            self._queue.enqueue(job.id)
        except Exception:
            # The job is stored; the recovery sweeper sends it again later.
            log.warning("could not enqueue job %s; recovery will retry", job.id, exc_info=True)
        return job

    def get_job(self, principal: Principal, job_id: str) -> Job:
        """The caller's job; NOT_FOUND for unknown ids and other tenants' alike."""
        with self._uow() as uow:
            job = uow.jobs.get(job_id, tenant_id=principal.tenant_id)
        if job is None:
            raise NotFound(f"Job {job_id} not found")
        return job
