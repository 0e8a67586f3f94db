"""Rows as the service layer sees them: frozen values, one class per table.

Each record lists its table's columns once; the statements that read a whole row select
exactly these (`columns`), and `of` builds the record from a row of either adapter.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Self

from sqlalchemy import ColumnElement, Table

from server.store.database import Row
from server.store.models import JobStatus


@functools.cache
def _names(record: type[Record]) -> tuple[str, ...]:
    # fields() builds its answer anew on each call; a read of a job row asks once a call.
    return tuple(field.name for field in fields(record))  # type: ignore[arg-type]


class Record:
    """What every record can do: name its columns and be built from a row."""

    @classmethod
    def columns(cls, table: Table) -> list[ColumnElement[Any]]:
        """The table's columns this record holds, in its order."""
        return [table.c[field.name] for field in fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def of(cls, row: Row) -> Self:
        """The record of a row that selected `columns`, in their order."""
        # By position: every read of a record selects exactly `columns`, and a read of a
        # job is on every poll, where looking up 27 names by key shows.
        values = tuple(row.values())
        if len(values) != len(_names(cls)):  # type: ignore[arg-type]
            raise ValueError(f"{cls.__name__} needs its columns, got {list(row.keys())}")
        return cls(*values)

    def values(self) -> dict[str, Any]:
        """Column name to value, as an INSERT of the whole row binds them."""
        return {field.name: getattr(self, field.name) for field in fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class AgentRecord(Record):
    """A stored agent of one tenant."""

    id: str
    tenant_id: str
    name: str
    role: str
    max_depth: int
    spawn_shadow: bool
    generation: int
    fitness: float
    created_at: datetime
    deleted_at: datetime | None
    # JSON of the agent's own verification prompts; None when it has none.
    verification: str | None = None


@dataclass(frozen=True, slots=True)
class JobRecord(Record):
    """A stored job: its request, its run state and, once finished, its result."""

    id: str
    tenant_id: str
    agent_id: str
    status: str
    prompt: str
    context_id: str | None
    enable_adversarial: bool
    enable_self_correction: bool
    max_debate_rounds: int
    attempts: int
    queued_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    next_run_at: datetime
    enqueued_at: datetime
    run_token: str | None
    lease_expires_at: datetime | None
    last_error: str | None
    error: str | None
    response: str | None
    tokens_used: int
    context_hash: str | None
    merkle_root: str | None
    verified: bool
    confidence: float | None
    debate_rounds: int
    parent_job_id: str | None
    depth: int
    cancel_requested: bool
    event_seq: int
    traceparent: str | None = None

    @property
    def job_status(self) -> JobStatus:
        """The status as the enum (the column holds its string)."""
        return JobStatus(self.status)


@dataclass(frozen=True, slots=True)
class EventRecord(Record):
    """One event of a job, numbered per job."""

    job_id: str
    sequence: int
    type: str
    created_at: datetime
    attempt: int
    error: str | None
    delay_s: float | None
    delta: str | None
    step_kind: str | None
    step_round: int | None
    step_tokens: int | None
    step_hash: str | None
    step_text: str | None
    step_confidence: float | None
    step_evidence: str | None


@dataclass(frozen=True, slots=True)
class TurnRecord(Record):
    """A turn of a tenant's conversation: a completed job's prompt and answer."""

    job_id: str
    tenant_id: str
    context_id: str
    prompt: str
    response: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class IdempotencyRecord(Record):
    """An idempotency key of a tenant and the job its first request made."""

    tenant_id: str
    key: str
    request_hash: str
    job_id: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKeyRecord(Record):
    """An API key's stored form: its digest and metadata, never the key."""

    id: str
    tenant_id: str
    name: str
    role: str
    scopes: str
    digest: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    tier: str | None  # the key's own rate-limit tier, besides its tenant's


@dataclass(frozen=True, slots=True)
class LimitRecord(Record):
    """A tenant's own limits; absent ones fall back to the settings."""

    tenant_id: str
    tier: str | None
    max_unfinished_jobs: int | None


@dataclass(frozen=True, slots=True)
class WorkflowRecord(Record):
    """A tenant's workflow at its current version (README, Workflows)."""

    id: str
    tenant_id: str
    name: str
    trigger_event_type: str | None
    version: int
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


@dataclass(frozen=True, slots=True)
class WorkflowRunRecord(Record):
    """A run of a workflow: its parent job's id, the version it runs and its input."""

    run_id: str
    tenant_id: str
    workflow_id: str
    version: int
    input: str
    event_id: str | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class RunStepRecord(Record):
    """A started step of a run and, once queued, the state of its child job."""

    run_id: str
    step_name: str
    job_id: str | None
    error: str | None
    status: str | None
    response: str | None
    job_error: str | None
    tokens_used: int | None
    context_hash: str | None
    merkle_root: str | None
