"""What the client returns: agents, jobs, results, events and context turns as plain frozen
dataclasses."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from agentq.v1 import agent_pb2, agent_service_pb2, context_service_pb2, job_pb2


class JobStatus(enum.StrEnum):
    """A job's state; `completed`, `failed` and `cancelled` are final."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True for the final states."""
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)

    def to_proto(self) -> job_pb2.JobStatus.ValueType:
        """The enum value of the contract."""
        return job_pb2.JobStatus.Value(f"JOB_STATUS_{self.name}")


class EventType(enum.StrEnum):
    """What happened to a job; `completed`, `failed` and `cancelled` are its last event."""

    QUEUED = "queued"
    STARTED = "started"
    RETRYING = "retrying"
    TOKEN = "token"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # A call of a run with several (adversarial verification, the safety judge).
    STEP = "step"

    @property
    def final(self) -> bool:
        """True for the job's last event."""
        return self in (EventType.COMPLETED, EventType.FAILED, EventType.CANCELLED)


def _optional(message: Message, name: str) -> Any:
    """A field the message may lack (proto3 `optional`, or a message), or None."""
    return getattr(message, name) if message.HasField(name) else None


def _time(message: Message, name: str) -> datetime | None:
    """A Timestamp field as an aware datetime; None when unset or zero."""
    stamp: timestamp_pb2.Timestamp | None = _optional(message, name)
    return stamp.ToDatetime(UTC) if stamp is not None and (stamp.seconds or stamp.nanos) else None


def _result(message: job_pb2.Job | job_pb2.JobEvent) -> JobResult | None:
    return JobResult.from_proto(message.result) if message.HasField("result") else None


def _job_status(value: int) -> JobStatus:
    return JobStatus(job_pb2.JobStatus.Name(value).removeprefix("JOB_STATUS_").lower())  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Record:
    """A record the command line prints as JSON."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        fields: dict[str, Any] = _jsonable(asdict(self))
        return fields


@dataclass(frozen=True)
class Agent(_Record):
    """An agent: a name and a role (its system prompt)."""

    id: str
    name: str
    role: str
    max_depth: int
    spawn_shadow: bool
    created_at: datetime | None

    @classmethod
    def from_proto(cls, agent: agent_pb2.Agent) -> Agent:
        """The agent of a reply."""
        return cls(
            id=agent.id,
            name=agent.name,
            role=agent.role,
            max_depth=agent.max_depth,
            spawn_shadow=agent.spawn_shadow,
            created_at=_time(agent, "created_at"),
        )


@dataclass(frozen=True)
class JobResult:
    """A finished job's outcome: the answer, or the error."""

    success: bool
    response: str
    tokens_used: int
    prompt: str
    error: str | None
    context_hash: str
    completed_at: datetime | None
    # Adversarial verification: the judge's confidence (None without it), whether it
    # reached the server's threshold, and how many debate rounds ran.
    merkle_root: str = ""
    verified: bool = False
    confidence: float | None = None
    debate_rounds: int = 0
    # The conversation context the job's turn was stored in; pass it as the next
    # execution's context_id to continue the conversation.
    new_context_id: str | None = None

    @classmethod
    def from_proto(cls, result: job_pb2.AgentJobResult) -> JobResult:
        """The result of a reply."""
        return cls(
            success=result.success,
            response=result.response,
            tokens_used=result.tokens_used,
            prompt=result.prompt,
            error=_optional(result, "error"),
            context_hash=result.context_hash,
            completed_at=_time(result, "completed_at"),
            merkle_root=result.merkle_root,
            verified=result.verified,
            confidence=_optional(result, "confidence"),
            debate_rounds=result.debate_rounds,
            new_context_id=_optional(result, "new_context_id"),
        )


@dataclass(frozen=True)
class Job(_Record):
    """A queued execution of an agent and, once it has finished, its result."""

    id: str
    agent_id: str
    status: JobStatus
    attempts: int
    error: str | None
    result: JobResult | None
    queued_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    parent_job_id: str | None
    depth: int
    # The OpenTelemetry trace of the execution, when the server traces (README.md, Tracing).
    trace_id: str | None = None

    @classmethod
    def from_proto(cls, job: job_pb2.Job) -> Job:
        """The job of a reply."""
        return cls(
            id=job.job_id,
            agent_id=job.agent_id,
            status=_job_status(job.status),
            attempts=job.attempts,
            error=_optional(job, "error"),
            result=_result(job),
            queued_at=_time(job, "queued_at"),
            started_at=_time(job, "started_at"),
            completed_at=_time(job, "completed_at"),
            parent_job_id=_optional(job, "parent_job_id"),
            depth=job.depth,
            trace_id=_optional(job, "trace_id"),
        )

    @property
    def answer(self) -> str:
        """The answer of a completed job; empty for any other."""
        return self.result.response if self.result is not None and self.result.success else ""


@dataclass(frozen=True)
class JobStep:
    """One call of a run: its kind (answer, critique, defence, verdict, revision, safety)."""

    kind: str
    round: int
    tokens: int
    hash: str
    text: str
    confidence: float | None
    evidence: str | None

    @classmethod
    def from_proto(cls, step: job_pb2.JobStep) -> JobStep:
        """The step of an event."""
        return cls(
            kind=job_pb2.StepKind.Name(step.kind).removeprefix("STEP_KIND_").lower(),
            round=step.round,
            tokens=step.tokens,
            hash=step.hash,
            text=step.text,
            confidence=_optional(step, "confidence"),
            evidence=_optional(step, "evidence"),
        )


@dataclass(frozen=True)
class JobEvent(_Record):
    """One event of a job, numbered from 1 without gaps by `sequence`."""

    job_id: str
    sequence: int
    type: EventType
    created_at: datetime | None
    attempt: int
    delta: str
    error: str | None
    delay_seconds: float | None
    result: JobResult | None
    step: JobStep | None = None

    @classmethod
    def from_proto(cls, event: job_pb2.JobEvent) -> JobEvent:
        """The event of a stream."""
        name = job_pb2.JobEventType.Name(event.type).removeprefix("JOB_EVENT_TYPE_").lower()
        return cls(
            job_id=event.job_id,
            sequence=event.sequence,
            type=EventType(name),
            created_at=_time(event, "created_at"),
            attempt=event.attempt,
            delta=event.delta,
            error=_optional(event, "error"),
            delay_seconds=_optional(event, "delay_seconds"),
            result=_result(event),
            step=JobStep.from_proto(event.step) if event.HasField("step") else None,
        )


@dataclass(frozen=True)
class ContextTurn(_Record):
    """One turn of a conversation context: a completed job's prompt and answer."""

    job_id: str
    prompt: str
    response: str
    created_at: datetime | None

    @classmethod
    def from_proto(cls, turn: context_service_pb2.ContextTurn) -> ContextTurn:
        """The turn of a reply."""
        return cls(
            job_id=turn.job_id,
            prompt=turn.prompt,
            response=turn.response,
            created_at=_time(turn, "created_at"),
        )


@dataclass(frozen=True)
class Submission:
    """The acknowledgement of `execute`: the job was stored and queued."""

    job_id: str
    agent_id: str
    status: JobStatus

    @classmethod
    def from_proto(cls, reply: agent_service_pb2.ExecuteResponse) -> Submission:
        """The acknowledgement of a reply."""
        return cls(job_id=reply.job_id, agent_id=reply.agent_id, status=_job_status(reply.status))


def _jsonable(value: Any) -> Any:
    """Datetimes as ISO 8601 strings, enums as their values, the rest as is."""
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, enum.Enum):
        return value.value
    return value
