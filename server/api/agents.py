"""AgentService servicer: proto in, one service call, proto out."""

from __future__ import annotations

import time

from agentq.v1 import agent_service_pb2 as pb
from agentq.v1 import agent_service_pb2_grpc as pb_grpc
from agentq.v1 import job_pb2
from server.api.context import Context, current_principal
from server.api.convert import agent_message, verification_prompts
from server.service.services import Services
from server.validation import agent_spec, execution_spec, parse_id, request_key


class AgentServicer(pb_grpc.AgentServiceServicer):
    """Create, read and execute agents."""

    def __init__(self, services: Services) -> None:
        self._services = services

    async def CreateAgent(
        self, request: pb.CreateAgentRequest, context: Context
    ) -> pb.CreateAgentResponse:
        spec = agent_spec(
            name=request.name,
            role=request.role,
            max_depth=request.max_depth if request.HasField("max_depth") else None,
            spawn_shadow=request.spawn_shadow,
            verification=(
                verification_prompts(request.verification)
                if request.HasField("verification")
                else None
            ),
        )
        agent = await self._services.agents.create_agent(current_principal(), spec)
        return pb.CreateAgentResponse(agent=agent_message(agent))

    async def GetAgent(self, request: pb.GetAgentRequest, context: Context) -> pb.GetAgentResponse:
        agent_id = parse_id(request.agent_id, "agent_id")
        agent = await self._services.agents.get_agent(current_principal(), agent_id)
        return pb.GetAgentResponse(agent=agent_message(agent))

    async def ListAgents(
        self, request: pb.ListAgentsRequest, context: Context
    ) -> pb.ListAgentsResponse:
        size = request.page_size if request.HasField("page_size") else None
        page = await self._services.agents.list_agents(
            current_principal(), size=size, token=request.page_token
        )
        return pb.ListAgentsResponse(
            agents=[agent_message(a) for a in page.items],
            page_size=page.size,
            next_page_token=page.next_token or "",
        )

    async def DeleteAgent(
        self, request: pb.DeleteAgentRequest, context: Context
    ) -> pb.DeleteAgentResponse:
        agent_id = parse_id(request.agent_id, "agent_id")
        await self._services.agents.delete_agent(current_principal(), agent_id)
        return pb.DeleteAgentResponse()

    async def Execute(self, request: pb.ExecuteRequest, context: Context) -> pb.ExecuteResponse:
        started = time.perf_counter()
        agent_id = parse_id(request.agent_id, "agent_id")
        spec = execution_spec(
            prompt=request.prompt,
            context_id=request.context_id if request.HasField("context_id") else None,
            enable_adversarial=request.enable_adversarial,
            enable_self_correction=request.enable_self_correction,
            max_debate_rounds=(
                request.max_debate_rounds if request.HasField("max_debate_rounds") else None
            ),
        )
        request_id = request_key(request.request_id) if request.HasField("request_id") else None
        parent_job_id = (
            parse_id(request.parent_job_id, "parent_job_id")
            if request.HasField("parent_job_id")
            else None
        )
        job_id = await self._services.jobs.execute(
            current_principal(),
            agent_id,
            spec,
            request_id=request_id,
            parent_job_id=parent_job_id,
        )
        return pb.ExecuteResponse(
            agent_id=agent_id,
            job_id=job_id,
            status=job_pb2.JOB_STATUS_PENDING,
            response=f"Job queued: {job_id}",
            verified=False,
            confidence=1.0,
            context_hash="pending",
            latency_ms=int((time.perf_counter() - started) * 1000),
        )
