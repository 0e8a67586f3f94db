"""WorkflowService servicer: proto in, one service call, proto out (README, Workflows)."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2

from agentq.v1 import workflow_service_pb2 as pb
from agentq.v1 import workflow_service_pb2_grpc as pb_grpc
from server.api.context import Context, current_principal
from server.api.convert import job_status, timestamp
from server.errors import InvalidArgument
from server.service.services import Services
from server.service.workflow_rules import INPUT_NUMBER_MESSAGE, Step
from server.service.workflows import RunDetail, WorkflowView
from server.validation import parse_id


def workflow_message(workflow: WorkflowView) -> pb.Workflow:
    """The Workflow message of a workflow at its current version."""
    trigger = None
    if workflow.trigger_event_type is not None:
        trigger = pb.WorkflowTrigger(event_type=workflow.trigger_event_type)
    return pb.Workflow(
        id=workflow.id,
        name=workflow.name,
        trigger=trigger,
        steps=[
            pb.WorkflowStep(
                name=s.name, agent_id=s.agent_id, prompt=s.prompt, depends_on=list(s.depends_on)
            )
            for s in workflow.steps
        ],
        version=workflow.version,
        created_at=timestamp(workflow.created_at),
        updated_at=timestamp(workflow.updated_at),
    )


def run_message(run: RunDetail) -> pb.WorkflowRun:
    """The WorkflowRun message of a run."""
    value = struct_pb2.Value()
    json_format.ParseDict(run.input, value)
    return pb.WorkflowRun(
        id=run.id,
        workflow_id=run.workflow_id,
        version=run.version,
        status=job_status(run.status),
        input=value,
        steps=[
            pb.WorkflowStepRun(
                name=s.name,
                job_id=s.job_id,
                status=job_status(s.status),
                response=s.response,
                error=s.error,
            )
            for s in run.steps
        ],
        response=run.response,
        error=run.error,
        event_id=run.event_id,
        created_at=timestamp(run.created_at),
        completed_at=None if run.completed_at is None else timestamp(run.completed_at),
    )


def _steps(messages: Any) -> list[Step]:
    return [Step(m.name, m.agent_id, m.prompt, tuple(m.depends_on)) for m in messages]


def _trigger(request: pb.CreateWorkflowRequest | pb.UpdateWorkflowRequest) -> str | None:
    return request.trigger.event_type if request.HasField("trigger") else None


def _input(request: pb.RunWorkflowRequest) -> Any:
    if not request.HasField("input"):
        return None
    try:
        return json_format.MessageToDict(request.input)
    except ValueError:  # NaN or an infinity, which JSON has no word for
        raise InvalidArgument.field("input", INPUT_NUMBER_MESSAGE) from None


class WorkflowServicer(pb_grpc.WorkflowServiceServicer):
    """Define workflows of the caller's tenant, start and read their runs."""

    def __init__(self, services: Services) -> None:
        self._workflows = services.workflows

    async def CreateWorkflow(
        self, request: pb.CreateWorkflowRequest, context: Context
    ) -> pb.CreateWorkflowResponse:
        workflow = await self._workflows.create(
            current_principal(),
            name=request.name,
            trigger_event_type=_trigger(request),
            steps=_steps(request.steps),
        )
        return pb.CreateWorkflowResponse(workflow=workflow_message(workflow))

    async def ListWorkflows(
        self, request: pb.ListWorkflowsRequest, context: Context
    ) -> pb.ListWorkflowsResponse:
        page = await self._workflows.list_workflows(
            current_principal(),
            size=request.page_size if request.HasField("page_size") else None,
            token=request.page_token,
        )
        return pb.ListWorkflowsResponse(
            workflows=[workflow_message(w) for w in page.items],
            page_size=page.size,
            next_page_token=page.next_token or "",
        )

    async def GetWorkflow(
        self, request: pb.GetWorkflowRequest, context: Context
    ) -> pb.GetWorkflowResponse:
        workflow_id = parse_id(request.workflow_id, "workflow_id")
        workflow = await self._workflows.get(current_principal(), workflow_id)
        return pb.GetWorkflowResponse(workflow=workflow_message(workflow))

    async def UpdateWorkflow(
        self, request: pb.UpdateWorkflowRequest, context: Context
    ) -> pb.UpdateWorkflowResponse:
        workflow_id = parse_id(request.workflow_id, "workflow_id")
        workflow = await self._workflows.update(
            current_principal(),
            workflow_id,
            mask=list(request.update_mask.paths),
            name=request.name,
            trigger_event_type=_trigger(request),
            steps=_steps(request.steps),
        )
        return pb.UpdateWorkflowResponse(workflow=workflow_message(workflow))

    async def DeleteWorkflow(
        self, request: pb.DeleteWorkflowRequest, context: Context
    ) -> pb.DeleteWorkflowResponse:
        workflow_id = parse_id(request.workflow_id, "workflow_id")
        await self._workflows.delete(current_principal(), workflow_id)
        return pb.DeleteWorkflowResponse()

    async def RunWorkflow(
        self, request: pb.RunWorkflowRequest, context: Context
    ) -> pb.RunWorkflowResponse:
        workflow_id = parse_id(request.workflow_id, "workflow_id")
        run = await self._workflows.run(current_principal(), workflow_id, _input(request))
        return pb.RunWorkflowResponse(run=run_message(run))

    async def ListWorkflowRuns(
        self, request: pb.ListWorkflowRunsRequest, context: Context
    ) -> pb.ListWorkflowRunsResponse:
        workflow_id = parse_id(request.workflow_id, "workflow_id")
        page = await self._workflows.list_runs(
            current_principal(),
            workflow_id,
            size=request.page_size if request.HasField("page_size") else None,
            token=request.page_token,
        )
        return pb.ListWorkflowRunsResponse(
            runs=[run_message(r) for r in page.items],
            page_size=page.size,
            next_page_token=page.next_token or "",
        )

    async def GetWorkflowRun(
        self, request: pb.GetWorkflowRunRequest, context: Context
    ) -> pb.GetWorkflowRunResponse:
        workflow_id = parse_id(request.workflow_id, "workflow_id")
        run_id = parse_id(request.run_id, "run_id")
        run = await self._workflows.get_run(current_principal(), workflow_id, run_id)
        return pb.GetWorkflowRunResponse(run=run_message(run))
