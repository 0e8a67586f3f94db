"""SQLAlchemy models of agents and jobs: the database is the source of truth."""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC; always hands back an aware UTC datetime (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored")
        value = value.astimezone(UTC)
        # SQLite compares timestamps as text, so every value must share one format.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class JobStatus(enum.StrEnum):
    """The states of a job (docs/contract.md §4)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True for the states a job never leaves."""
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class Base(DeclarativeBase):
    """Declarative base with stable constraint names, so migrations can refer to them."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Agent(Base):
    """A stored agent of one tenant."""

    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(500))
    max_depth: Mapped[int] = mapped_column(Integer)
    spawn_shadow: Mapped[bool] = mapped_column(Boolean)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    fitness: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The agent's own verification prompts as a JSON object of the ones it sets
    # (server/validation.py, VerificationPrompts); NULL when it sets none.
    verification: Mapped[str | None] = mapped_column(Text)
    # Set when the agent is deleted; its finished jobs stay readable until
    # retention removes them, and then the row goes too.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        # Lists page newest first by (created_at, id) within a tenant.
        Index("ix_agents_tenant_id_created_at_id", "tenant_id", "created_at", "id"),
    )


class Job(Base):
    """One queued execution of an agent, its run state and, once finished, its result."""

    __tablename__ = "jobs"
    __table_args__ = (
        # The recovery sweeper scans by state and time; these keep it off a full scan.
        Index("ix_jobs_status_enqueued_at", "status", "enqueued_at"),
        Index("ix_jobs_status_lease_expires_at", "status", "lease_expires_at"),
        # Lists page newest first by (queued_at, id), optionally per agent or status.
        Index("ix_jobs_tenant_id_queued_at_id", "tenant_id", "queued_at", "id"),
        Index(
            "ix_jobs_tenant_id_agent_id_queued_at_id", "tenant_id", "agent_id", "queued_at", "id"
        ),
        Index("ix_jobs_tenant_id_status_queued_at_id", "tenant_id", "status", "queued_at", "id"),
        # The retention sweeper removes finished jobs by age.
        Index("ix_jobs_status_completed_at", "status", "completed_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(255))
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    status: Mapped[JobStatus] = mapped_column(String(16))
    prompt: Mapped[str] = mapped_column(Text)
    context_id: Mapped[str | None] = mapped_column(Text)
    enable_adversarial: Mapped[bool] = mapped_column(Boolean)
    enable_self_correction: Mapped[bool] = mapped_column(Boolean)
    max_debate_rounds: Mapped[int] = mapped_column(Integer)

    attempts: Mapped[int] = mapped_column(Integer, default=0)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Earliest time the next attempt may start (retry backoff).
    next_run_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # When the newest queue message for this job is due; a pending job whose
    # message is long overdue is enqueued again.
    enqueued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # While running: the attempt's token and how long its worker may take.
    run_token: Mapped[str | None] = mapped_column(String(36))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The latest attempt's error, kept while a retry is pending.
    last_error: Mapped[str | None] = mapped_column(Text)

    error: Mapped[str | None] = mapped_column(Text)
    response: Mapped[str | None] = mapped_column(Text)
    tokens_used: Mapped[int] = mapped_column(Integer, default=0)
    context_hash: Mapped[str | None] = mapped_column(String(64))
    merkle_root: Mapped[str | None] = mapped_column(String(64))
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    confidence: Mapped[float | None] = mapped_column(Float)
    debate_rounds: Mapped[int] = mapped_column(Integer, default=0)

    parent_job_id: Mapped[str | None] = mapped_column(String(36), index=True)
    depth: Mapped[int] = mapped_column(Integer, default=0)
    # A cancel asked of a running job; its worker stops and records it.
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # The sequence number of the job's newest event.
    event_seq: Mapped[int] = mapped_column(Integer, default=0)
    # The W3C traceparent of the request that queued the job, when tracing was on: every
    # attempt's spans join that trace (README.md, Tracing).
    traceparent: Mapped[str | None] = mapped_column(String(64))


class JobEvent(Base):
    """One event of a job, numbered per job; streams replay them by sequence."""

    __tablename__ = "job_events"

    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    sequence: Mapped[int] = mapped_column(Integer, primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    delay_s: Mapped[float | None] = mapped_column(Float)
    delta: Mapped[str | None] = mapped_column(Text)
    # A step event's call (server/store/events.py, StepSpec); NULL for other events.
    step_kind: Mapped[str | None] = mapped_column(String(16))
    step_round: Mapped[int | None] = mapped_column(Integer)
    step_tokens: Mapped[int | None] = mapped_column(Integer)
    step_hash: Mapped[str | None] = mapped_column(String(64))
    step_text: Mapped[str | None] = mapped_column(Text)
    step_confidence: Mapped[float | None] = mapped_column(Float)
    step_evidence: Mapped[str | None] = mapped_column(Text)


class ContextTurn(Base):
    """One turn of a tenant's conversation: a completed job's prompt and final answer.

    Stored by the job's completion, in the same transaction, so a turn exists exactly
    when its job completed; it goes when retention removes the job, or when the context
    is deleted.
    """

    __tablename__ = "context_turns"
    __table_args__ = (
        # Read per context in the order the turns completed (history, pages).
        Index(
            "ix_context_turns_tenant_id_context_id_created_at_job_id",
            "tenant_id",
            "context_id",
            "created_at",
            "job_id",
        ),
    )

    # A job completes once, so it has at most one turn.
    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(255))
    # Text, as on the job it is copied from: jobs queued before the context_id rule
    # existed may hold any text.
    context_id: Mapped[str] = mapped_column(Text)
    prompt: Mapped[str] = mapped_column(Text)
    response: Mapped[str] = mapped_column(Text)
    # When the job completed.
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ClientEvent(Base):
    """An event a tenant's client emitted (POST /api/v1/events): a type and a JSON object.

    The tenant-wide event log reads these beside the job events of `job_events`
    (`server/store/event_log.py`); retention removes them by age, as it removes jobs.
    """

    __tablename__ = "client_events"
    __table_args__ = (
        # The log pages newest first by (created_at, id) within a tenant, optionally by type.
        Index("ix_client_events_tenant_id_created_at_id", "tenant_id", "created_at", "id"),
        Index(
            "ix_client_events_tenant_id_type_created_at_id",
            "tenant_id",
            "type",
            "created_at",
            "id",
        ),
        # The retention sweeper removes old events by age.
        Index("ix_client_events_created_at", "created_at"),
    )

    # The order events were stored in, increasing: what a dispatcher of emitted events
    # (workflows, webhooks) follows, each event once. BIGINT on PostgreSQL; SQLite's
    # INTEGER PRIMARY KEY is its rowid, which only an INTEGER column becomes.
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    # The event's public id, `evt_` and a UUID (README, Event log).
    id: Mapped[str] = mapped_column(String(40), unique=True)
    tenant_id: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(100))
    # The data object as compact JSON.
    data: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class IdempotencyKey(Base):
    """An idempotency key of a tenant and the job its first request made."""

    __tablename__ = "idempotency_keys"

    tenant_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # SHA-256 of the request's canonical form: a reuse must match it.
    request_hash: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(String(36), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ApiKey(Base):
    """An API key: stored as an HMAC digest and a display prefix, never the key itself."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(255), index=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))
    # Space-separated scope names.
    scopes: Mapped[str] = mapped_column(String(255))
    # HMAC-SHA256 of the key with the server's pepper, hex; looked up per request.
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The key's own rate-limit tier, applied besides its tenant's; NULL for none.
    tier: Mapped[str | None] = mapped_column(String(64))


class TenantLimit(Base):
    """A tenant's own limits; absent fields fall back to the settings' defaults."""

    __tablename__ = "tenant_limits"

    tenant_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    tier: Mapped[str | None] = mapped_column(String(32))
    max_unfinished_jobs: Mapped[int | None] = mapped_column(Integer)


class Workflow(Base):
    """A tenant's workflow: its name, trigger and current version (README, Workflows).

    The steps live in `workflow_versions`, one immutable row per version, so a run keeps
    the steps of the version it started with whatever edits follow.
    """

    __tablename__ = "workflows"
    __table_args__ = (
        # Lists page newest first by (created_at, id) within a tenant.
        Index("ix_workflows_tenant_id_created_at_id", "tenant_id", "created_at", "id"),
        # An emitted event looks up the workflows its type triggers.
        Index("ix_workflows_tenant_id_trigger_event_type", "tenant_id", "trigger_event_type"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(100))
    # The emitted event type that starts a run; NULL for none.
    trigger_event_type: Mapped[str | None] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Set when deleted: it no longer answers nor runs; its versions stay for its runs.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WorkflowVersion(Base):
    """One version of a workflow's steps, never changed once stored."""

    __tablename__ = "workflow_versions"

    workflow_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The steps as a JSON array of {"name", "agent_id", "prompt", "depends_on"}.
    steps: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WorkflowRun(Base):
    """A run of a workflow: its parent job (`run_id`), the version it runs and its input."""

    __tablename__ = "workflow_runs"
    __table_args__ = (
        # A workflow's runs page newest first by (created_at, run_id).
        Index(
            "ix_workflow_runs_workflow_id_created_at_run_id", "workflow_id", "created_at", "run_id"
        ),
        # The orchestrator reads the runs not yet finished.
        Index("ix_workflow_runs_finished_at", "finished_at"),
    )

    # The id of the run's parent job.
    run_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(255))
    workflow_id: Mapped[str] = mapped_column(String(36))
    version: Mapped[int] = mapped_column(Integer)
    # The input as compact JSON.
    input: Mapped[str] = mapped_column(Text)
    # The emitted event that started the run; NULL for RunWorkflow.
    event_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Set by the orchestrator once the run's job is final: it reads the run no more.
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WorkflowRunStep(Base):
    """A step of a run once started: its child job, or why it could not be queued.

    The primary key is (run, step): a step is queued at most once, whichever
    orchestrator (or redelivered sweep) tries it.
    """

    __tablename__ = "workflow_run_steps"

    run_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    step_name: Mapped[str] = mapped_column(String(50), primary_key=True)
    # The step's child job; NULL when it failed before one was queued.
    job_id: Mapped[str | None] = mapped_column(String(36))
    # Why the step failed before it had a job (its prompt broke a rule, its agent is gone).
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


# The webhooks' tables live in a module of their own; importing it here puts them in
# Base.metadata for the migrations and the schema checks.
from server.store import webhook_models as _webhook_models  # noqa: E402, F401
