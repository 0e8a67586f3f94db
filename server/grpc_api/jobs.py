"""JobService servicer: proto in, one service call, proto out."""

from __future__ import annotations

from agentq.v1 import job_service_pb2 as pb
from agentq.v1 import job_service_pb2_grpc as pb_grpc
from server.grpc_api.blocking import Blocking
from server.grpc_api.context import Context, current_principal
from server.grpc_api.convert import job_message
from server.services import Services
from server.validation import parse_id


class JobServicer(pb_grpc.JobServiceServicer):
    """Read jobs."""

    def __init__(self, services: Services, blocking: Blocking) -> None:
        self._services = services
        self._blocking = blocking

    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.GetJobResponse:
        job_id = parse_id(request.job_id, "job_id")
        job = await self._blocking(self._services.jobs.get_job, current_principal(), job_id)
        return pb.GetJobResponse(job=job_message(job))
