"""Conversions between stored rows and agentq.v1 messages."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from agentq.v1 import agent_pb2, context_service_pb2, job_pb2
from server.store.events import EventType, StepKind
from server.store.models import JobStatus
from server.store.records import AgentRecord, EventRecord, JobRecord, TurnRecord
from server.tracing import trace_id_of
from server.validation import VerificationPrompts

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STATUS = {
    JobStatus.PENDING: job_pb2.JOB_STATUS_PENDING,
    JobStatus.RUNNING: job_pb2.JOB_STATUS_RUNNING,
    JobStatus.COMPLETED: job_pb2.JOB_STATUS_COMPLETED,
    JobStatus.FAILED: job_pb2.JOB_STATUS_FAILED,
    JobStatus.CANCELLED: job_pb2.JOB_STATUS_CANCELLED,
}


def timestamp(value: datetime) -> Timestamp:
    """A protobuf Timestamp of an aware datetime."""
    # Timestamp.FromDatetime goes through a time tuple; every job read shows up
    # to three times, so count from the epoch directly.
    since = value - _EPOCH
    return Timestamp(seconds=since.days * 86400 + since.seconds, nanos=since.microseconds * 1000)


def job_status(status: JobStatus) -> job_pb2.JobStatus.ValueType:
    """The proto enum value of a job status."""
    return _STATUS[status]


def status_of(value: job_pb2.JobStatus.ValueType) -> JobStatus | None:
    """The job status of a proto enum value; None for UNSPECIFIED or unknown."""
    for status, number in _STATUS.items():
        if number == value:
            return status
    return None


def agent_message(agent: AgentRecord) -> agent_pb2.Agent:
    """The Agent message of a stored agent."""
    message = agent_pb2.Agent(
        id=agent.id,
        name=agent.name,
        role=agent.role,
        max_depth=agent.max_depth,
        spawn_shadow=agent.spawn_shadow,
        generation=agent.generation,
        fitness=agent.fitness,
        created_at=timestamp(agent.created_at),
    )
    if agent.verification is not None:
        prompts = VerificationPrompts.from_json(agent.verification)
        message.verification.CopyFrom(
            agent_pb2.VerificationPrompts(
                **{name: value for name, value in prompts.items() if value is not None}
            )
        )
    return message


def verification_prompts(message: agent_pb2.VerificationPrompts) -> VerificationPrompts:
    """The prompts a message sets; an unset field keeps the server's."""
    return VerificationPrompts(
        critic=message.critic if message.HasField("critic") else None,
        defender=message.defender if message.HasField("defender") else None,
        judge=message.judge if message.HasField("judge") else None,
        reviser=message.reviser if message.HasField("reviser") else None,
    )


def job_message(job: JobRecord) -> job_pb2.Job:
    """The Job message of a stored job, with its result once it has finished."""
    status = JobStatus(job.status)
    message = job_pb2.Job(
        job_id=job.id,
        agent_id=job.agent_id,
        status=_STATUS[status],
        queued_at=timestamp(job.queued_at),
        attempts=job.attempts,
    )
    if job.started_at is not None:
        message.started_at.CopyFrom(timestamp(job.started_at))
    if job.completed_at is not None:
        message.completed_at.CopyFrom(timestamp(job.completed_at))
    if status is JobStatus.FAILED and job.error is not None:
        message.error = job.error
    if status in (JobStatus.COMPLETED, JobStatus.FAILED):
        message.result.CopyFrom(_result_message(job))
    if job.parent_job_id is not None:
        message.parent_job_id = job.parent_job_id
    message.depth = job.depth
    trace_id = trace_id_of(job.traceparent)
    if trace_id is not None:
        message.trace_id = trace_id
    return message


_EVENT_TYPES = {
    EventType.QUEUED: job_pb2.JOB_EVENT_TYPE_QUEUED,
    EventType.STARTED: job_pb2.JOB_EVENT_TYPE_STARTED,
    EventType.RETRYING: job_pb2.JOB_EVENT_TYPE_RETRYING,
    EventType.TOKEN: job_pb2.JOB_EVENT_TYPE_TOKEN,
    EventType.COMPLETED: job_pb2.JOB_EVENT_TYPE_COMPLETED,
    EventType.FAILED: job_pb2.JOB_EVENT_TYPE_FAILED,
    EventType.CANCELLED: job_pb2.JOB_EVENT_TYPE_CANCELLED,
    EventType.STEP: job_pb2.JOB_EVENT_TYPE_STEP,
}
_STEP_KINDS = {
    StepKind.ANSWER: job_pb2.STEP_KIND_ANSWER,
    StepKind.CRITIQUE: job_pb2.STEP_KIND_CRITIQUE,
    StepKind.DEFENCE: job_pb2.STEP_KIND_DEFENCE,
    StepKind.VERDICT: job_pb2.STEP_KIND_VERDICT,
    StepKind.REVISION: job_pb2.STEP_KIND_REVISION,
    StepKind.SAFETY: job_pb2.STEP_KIND_SAFETY,
}


def event_message(event: EventRecord, job: JobRecord) -> job_pb2.JobEvent:
    """The JobEvent message of a stored event; a final one carries the job's result."""
    kind = EventType(event.type)
    message = job_pb2.JobEvent(
        job_id=event.job_id,
        sequence=event.sequence,
        type=_EVENT_TYPES[kind],
        created_at=timestamp(event.created_at),
        attempt=event.attempt,
        delta=event.delta or "",
    )
    if event.error is not None:
        message.error = event.error
    if event.delay_s is not None:
        message.delay_seconds = event.delay_s
    if kind in (EventType.COMPLETED, EventType.FAILED) and job.completed_at is not None:
        message.result.CopyFrom(_result_message(job))
    if event.step_kind is not None:
        message.step.CopyFrom(_step_message(event))
    return message


def _step_message(event: EventRecord) -> job_pb2.JobStep:
    assert event.step_kind is not None
    step = job_pb2.JobStep(
        kind=_STEP_KINDS[StepKind(event.step_kind)],
        round=event.step_round or 0,
        tokens=event.step_tokens or 0,
        hash=event.step_hash or "",
        text=event.step_text or "",
    )
    if event.step_confidence is not None:
        step.confidence = event.step_confidence
    if event.step_evidence is not None:
        step.evidence = event.step_evidence
    return step


def _result_message(job: JobRecord) -> job_pb2.AgentJobResult:
    assert job.completed_at is not None
    result = job_pb2.AgentJobResult(
        job_id=job.id,
        agent_id=job.agent_id,
        success=job.status == JobStatus.COMPLETED,
        response=job.response or "",
        tokens_used=job.tokens_used,
        completed_at=timestamp(job.completed_at),
        prompt=job.prompt,
        context_hash=job.context_hash or "",
        merkle_root=job.merkle_root or "",
        verified=job.verified,
        debate_rounds=job.debate_rounds,
    )
    if job.error is not None:
        result.error = job.error
    if job.confidence is not None:
        result.confidence = job.confidence
    if job.context_id is not None and job.status == JobStatus.COMPLETED:
        # Its completion stored its turn there (server/store/transitions.py).
        result.new_context_id = job.context_id
    return result


def turn_message(turn: TurnRecord) -> context_service_pb2.ContextTurn:
    """The ContextTurn message of a stored turn."""
    return context_service_pb2.ContextTurn(
        job_id=turn.job_id,
        prompt=turn.prompt,
        response=turn.response,
        created_at=timestamp(turn.created_at),
    )
