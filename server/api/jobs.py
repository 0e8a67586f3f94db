"""JobService servicer: proto in, one service call (or a polling loop), proto out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from agentq.v1 import job_service_pb2 as pb
from agentq.v1 import job_service_pb2_grpc as pb_grpc
from server.api.context import Context, current_principal
from server.api.convert import event_message, job_message, status_of
from server.errors import InvalidArgument
from server.service.services import Services
from server.store.events import EventType
from server.validation import parse_id

# Initial metadata that marks a watch stream as open (the job was found), so a
# proxy can tell a stream that started from one refused before its first event.
STREAM_OPEN = ("x-agentq-stream", "open")


class JobServicer(pb_grpc.JobServiceServicer):
    """Read, list, cancel and watch jobs."""

    def __init__(self, services: Services, *, poll_s: float = 0.25) -> None:
        self._jobs = services.jobs
        self._poll_s = poll_s

    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.GetJobResponse:
        job_id = parse_id(request.job_id, "job_id")
        job = await self._jobs.get_job(current_principal(), job_id)
        return pb.GetJobResponse(job=job_message(job))

    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        agent_id = parse_id(request.agent_id, "agent_id") if request.HasField("agent_id") else None
        status = None
        if request.HasField("status"):
            status = status_of(request.status)
            if status is None:
                raise InvalidArgument.field("status", "Invalid status: not a job status")
        page = await self._jobs.list_jobs(
            current_principal(),
            agent_id=agent_id,
            status=status,
            size=request.page_size if request.HasField("page_size") else None,
            token=request.page_token,
        )
        return pb.ListJobsResponse(
            jobs=[job_message(j) for j in page.items],
            page_size=page.size,
            next_page_token=page.next_token or "",
        )

    async def CancelJob(
        self, request: pb.CancelJobRequest, context: Context
    ) -> pb.CancelJobResponse:
        job_id = parse_id(request.job_id, "job_id")
        job = await self._jobs.cancel_job(current_principal(), job_id)
        return pb.CancelJobResponse(job=job_message(job))

    async def WatchJob(
        self, request: pb.WatchJobRequest, context: Context
    ) -> AsyncIterator[pb.WatchJobResponse]:
        job_id = parse_id(request.job_id, "job_id")
        # Sequences are 32-bit in the database; a larger one is past every event.
        after = min(max(0, request.after_sequence), 2**31 - 1)
        principal = current_principal()
        job, events = await self._jobs.events_after(principal, job_id, after)
        await context.send_initial_metadata((STREAM_OPEN,))
        # Events are read before the job, so a job seen finished may have its last
        # event committed after that read: look once more before ending.
        finished_seen = False
        while True:
            for event in events:
                yield pb.WatchJobResponse(event=event_message(event, job))
                after = event.sequence
                if EventType(event.type).terminal:
                    return
            if not events and finished_seen:
                return  # every event up to the end was sent
            finished_seen = job.job_status.finished
            if not events and not finished_seen:
                await asyncio.sleep(self._poll_s)
            job, events = await self._jobs.events_after(principal, job_id, after)
