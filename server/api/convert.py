"""Conversions between stored rows and agentq.v1 messages."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from agentq.v1 import agent_pb2, context_service_pb2, job_pb2
from server.store.events import EventType
from server.store.models import JobStatus
from server.store.records import AgentRecord, EventRecord, JobRecord, TurnRecord

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
    return agent_pb2.Agent(
        id=agent.id,
        name=agent.name,
        role=agent.role,
        max_depth=agent.max_depth,
        spawn_shadow=agent.spawn_shadow,
        generation=agent.generation,
        fitness=agent.fitness,
        created_at=timestamp(agent.created_at),
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
    return message


_EVENT_TYPES = {
    EventType.QUEUED: job_pb2.JOB_EVENT_TYPE_QUEUED,
    EventType.STARTED: job_pb2.JOB_EVENT_TYPE_STARTED,
    EventType.RETRYING: job_pb2.JOB_EVENT_TYPE_RETRYING,
    EventType.TOKEN: job_pb2.JOB_EVENT_TYPE_TOKEN,
    EventType.COMPLETED: job_pb2.JOB_EVENT_TYPE_COMPLETED,
    EventType.FAILED: job_pb2.JOB_EVENT_TYPE_FAILED,
    EventType.CANCELLED: job_pb2.JOB_EVENT_TYPE_CANCELLED,
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
    return message


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
