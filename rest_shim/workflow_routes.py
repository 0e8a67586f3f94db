"""Workflows' routes (/api/v1/workflows), each one RPC of WorkflowService; their JSON shapes.

Fields travel as sent: the server judges them (422) with the messages a gRPC client gets
(README, Workflows). A PATCH changes the fields its body names: their names are the
update mask.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any

from fastapi.responses import Response
from google.protobuf import field_mask_pb2, json_format, struct_pb2
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from agentq.client.wire import time_or_none
from agentq.v1 import workflow_service_pb2 as pb
from rest_shim import render, rules
from rest_shim.event_routes import MAX_DATA_DEPTH, finite_doubles, plain
from rest_shim.event_routes import event_type as event_type_rule
from rest_shim.routes import _AUTHED, _BODY, _SECURED, PageSize, PageToken, int32
from rest_shim.rules import documented
from rest_shim.schemas import PageMeta, StrictStr
from rest_shim.table import Build, RouteTable

INPUT_NUMBER_MESSAGE = "Invalid input: numbers must be finite doubles"
INPUT_DEPTH_MESSAGE = f"Invalid input: must nest at most {MAX_DATA_DEPTH} objects and arrays deep"
_MASKED = ("name", "trigger", "steps")
# The server's rules (server/service/workflow_rules.py), for the OpenAPI document only:
# the server judges every field, so REST and gRPC answer with the same messages.
MAX_NAME_CHARS, MAX_STEPS, MAX_PROMPT_CHARS = 100, 20, 50_000
_STEP_NAME = {"type": "string", "pattern": "^[a-z0-9_-]{1,50}$"}
_STEP_LIST: JsonDict = {"minItems": 1, "maxItems": MAX_STEPS}


class TriggerBody(BaseModel):
    """What starts a run besides POST .../runs."""

    event_type: Annotated[StrictStr, documented(event_type_rule())] = Field(
        description="An emitted event of this type starts a run with its data as input;"
        " not starting with `job.`."
    )


class StepBody(BaseModel):
    """One step: a name, an agent of the tenant, a prompt template, its dependencies."""

    name: Annotated[StrictStr, documented(_STEP_NAME)] = Field(
        description="1-50 characters of a-z0-9_-, unique in the workflow."
    )
    agent_id: Annotated[StrictStr, documented(rules.uuid())] = Field(
        description="An agent of the tenant."
    )
    prompt: Annotated[StrictStr, documented(rules.trimmed(1, MAX_PROMPT_CHARS))] = Field(
        description="1-50,000 characters; `{{input}}` and `{{steps.<name>.response}}` of a"
        " step it depends on."
    )
    depends_on: list[Annotated[StrictStr, documented(_STEP_NAME)]] = Field(
        default_factory=list, description="Names of steps that must complete first; no cycle."
    )


class CreateWorkflowBody(BaseModel):
    """POST /api/v1/workflows."""

    name: Annotated[StrictStr, documented(rules.trimmed(1, MAX_NAME_CHARS))] = Field(
        description="1-100 characters after trimming."
    )
    trigger: TriggerBody | None = None
    steps: list[StepBody] = Field(description="1 to 20 steps.", json_schema_extra=_STEP_LIST)


class UpdateWorkflowBody(BaseModel):
    """PATCH /api/v1/workflows/{id}: the fields it names change (null trigger: none)."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    name: Annotated[
        StrictStr | None, documented(rules.trimmed(1, MAX_NAME_CHARS), nullable=True)
    ] = None
    trigger: TriggerBody | None = None
    steps: list[StepBody] | None = Field(None, json_schema_extra=_STEP_LIST)
    update_mask: Annotated[
        list[StrictStr] | None,
        documented({"type": "array", "items": rules.one_of(_MASKED), "minItems": 1}, nullable=True),
    ] = Field(None, description="The fields to change; the other keys of the body when omitted.")


# An input travels as a protobuf Struct, which nests only so deep: the event data's rule.
_input_values = finite_doubles(
    INPUT_NUMBER_MESSAGE, max_depth=MAX_DATA_DEPTH, depth_message=INPUT_DEPTH_MESSAGE
)


class RunWorkflowBody(BaseModel):
    """POST /api/v1/workflows/{id}/runs."""

    input: Annotated[Any, AfterValidator(_input_values)] = Field(
        None, description="Any JSON value of at most 65,536 bytes as compact JSON."
    )


class WorkflowOut(BaseModel):
    """A workflow at its current version."""

    id: str
    name: str
    trigger: TriggerBody | None
    steps: list[StepBody]
    version: int
    created_at: str
    updated_at: str


class WorkflowPage(BaseModel):
    """A page of the tenant's workflows, newest first."""

    data: list[WorkflowOut]
    meta: PageMeta


class StepRunOut(BaseModel):
    """One step of a run."""

    name: str
    job_id: str | None
    status: str
    response: str | None
    error: str | None


class RunOut(BaseModel):
    """A run: its parent job's state and each step's."""

    id: str = Field(description="The run's parent job's id.")
    workflow_id: str
    version: int
    status: str
    input: Any
    steps: list[StepRunOut]
    response: str | None
    error: str | None
    event_id: str | None
    created_at: str
    completed_at: str | None


class RunPage(BaseModel):
    """A page of a workflow's runs, newest first."""

    data: list[RunOut]
    meta: PageMeta


def _optional(message: Any, field: str) -> Any:
    return getattr(message, field) if message.HasField(field) else None


def workflow(message: pb.Workflow) -> dict[str, Any]:
    """A workflow body."""
    trigger = message.trigger.event_type if message.HasField("trigger") else None
    return {
        "id": message.id,
        "name": message.name,
        "trigger": None if trigger is None else {"event_type": trigger},
        "steps": [
            {
                "name": s.name,
                "agent_id": s.agent_id,
                "prompt": s.prompt,
                "depends_on": list(s.depends_on),
            }
            for s in message.steps
        ],
        "version": message.version,
        "created_at": message.created_at.ToJsonString(),
        "updated_at": message.updated_at.ToJsonString(),
    }


def _value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind in (None, "null_value"):
        return None
    return plain(getattr(value, kind))


def run(message: pb.WorkflowRun) -> dict[str, Any]:
    """A run body."""
    return {
        "id": message.id,
        "workflow_id": message.workflow_id,
        "version": message.version,
        "status": render.status_name(message.status),
        "input": _value(message.input),
        "steps": [
            {
                "name": s.name,
                "job_id": _optional(s, "job_id"),
                "status": render.status_name(s.status),
                "response": _optional(s, "response"),
                "error": _optional(s, "error"),
            }
            for s in message.steps
        ],
        "response": _optional(message, "response"),
        "error": _optional(message, "error"),
        "event_id": _optional(message, "event_id"),
        "created_at": message.created_at.ToJsonString(),
        "completed_at": time_or_none(message, "completed_at"),
    }


def _steps(steps: list[StepBody] | None) -> list[pb.WorkflowStep]:
    return [
        pb.WorkflowStep(name=s.name, agent_id=s.agent_id, prompt=s.prompt, depends_on=s.depends_on)
        for s in steps or []
    ]


def _trigger(trigger: TriggerBody | None) -> pb.WorkflowTrigger | None:
    return None if trigger is None else pb.WorkflowTrigger(event_type=trigger.event_type)


WORKFLOWS = RouteTable()


def _route(method: str, path: str, rpc: str, **options: Any) -> Callable[[Build], Build]:
    """Declare a route of WorkflowService, for a caller's credentials."""
    return WORKFLOWS.route(
        method, path, rpc=f"WorkflowService.{rpc}", credentials=_SECURED, tag="workflows", **options
    )


_WorkflowId = Annotated[uuid.UUID, Field(description="The workflow's id.")]


@_route(
    "POST",
    "/api/v1/workflows",
    "CreateWorkflow",
    status=201,
    render=lambda reply: workflow(reply.workflow),
    response_model=WorkflowOut,
    errors=(*_AUTHED, *_BODY),
)
def create_workflow(body: CreateWorkflowBody) -> pb.CreateWorkflowRequest:
    """Create a workflow: a name, an optional trigger and its steps (version 1)."""
    return pb.CreateWorkflowRequest(
        name=body.name, trigger=_trigger(body.trigger), steps=_steps(body.steps)
    )


@_route(
    "GET",
    "/api/v1/workflows",
    "ListWorkflows",
    render=lambda reply: render.page(
        [workflow(w) for w in reply.workflows], reply.page_size, reply.next_page_token
    ),
    response_model=WorkflowPage,
    errors=(*_AUTHED, 422),
)
def list_workflows(
    page_size: PageSize = None, page_token: PageToken = ""
) -> pb.ListWorkflowsRequest:
    """The tenant's workflows, newest first, paged."""
    return pb.ListWorkflowsRequest(
        page_size=None if page_size is None else int32(page_size), page_token=page_token
    )


@_route(
    "GET",
    "/api/v1/workflows/{workflow_id}",
    "GetWorkflow",
    render=lambda reply: workflow(reply.workflow),
    response_model=WorkflowOut,
    errors=(*_AUTHED, 404, 422),
)
def get_workflow(workflow_id: _WorkflowId) -> pb.GetWorkflowRequest:
    """One workflow at its current version."""
    return pb.GetWorkflowRequest(workflow_id=str(workflow_id))


@_route(
    "PATCH",
    "/api/v1/workflows/{workflow_id}",
    "UpdateWorkflow",
    render=lambda reply: workflow(reply.workflow),
    response_model=WorkflowOut,
    errors=(*_AUTHED, *_BODY, 404),
)
def update_workflow(workflow_id: _WorkflowId, body: UpdateWorkflowBody) -> pb.UpdateWorkflowRequest:
    """Change the fields the body names, as the next version; started runs keep theirs."""
    paths = body.update_mask
    if paths is None:
        paths = [name for name in _MASKED if name in body.model_fields_set]
    return pb.UpdateWorkflowRequest(
        workflow_id=str(workflow_id),
        name=body.name or "",
        trigger=_trigger(body.trigger),
        steps=_steps(body.steps),
        update_mask=field_mask_pb2.FieldMask(paths=paths),
    )


@_route(
    "DELETE",
    "/api/v1/workflows/{workflow_id}",
    "DeleteWorkflow",
    status=204,
    render=None,
    response_class=Response,
    errors=(*_AUTHED, 404, 422),
)
def delete_workflow(workflow_id: _WorkflowId) -> pb.DeleteWorkflowRequest:
    """Delete a workflow; its runs stay readable as jobs."""
    return pb.DeleteWorkflowRequest(workflow_id=str(workflow_id))


@_route(
    "POST",
    "/api/v1/workflows/{workflow_id}/runs",
    "RunWorkflow",
    status=202,
    render=lambda reply: run(reply.run),
    response_model=RunOut,
    errors=(*_AUTHED, *_BODY, 404),
)
def run_workflow(workflow_id: _WorkflowId, body: RunWorkflowBody) -> pb.RunWorkflowRequest:
    """Start a run of the workflow's current version; its id is the parent job's."""
    value = None
    if body.input is not None:
        value = json_format.ParseDict(body.input, struct_pb2.Value())
    return pb.RunWorkflowRequest(workflow_id=str(workflow_id), input=value)


@_route(
    "GET",
    "/api/v1/workflows/{workflow_id}/runs",
    "ListWorkflowRuns",
    render=lambda reply: render.page(
        [run(r) for r in reply.runs], reply.page_size, reply.next_page_token
    ),
    response_model=RunPage,
    errors=(*_AUTHED, 404, 422),
)
def list_workflow_runs(
    workflow_id: _WorkflowId, page_size: PageSize = None, page_token: PageToken = ""
) -> pb.ListWorkflowRunsRequest:
    """The workflow's runs, newest first, paged."""
    return pb.ListWorkflowRunsRequest(
        workflow_id=str(workflow_id),
        page_size=None if page_size is None else int32(page_size),
        page_token=page_token,
    )


@_route(
    "GET",
    "/api/v1/workflows/{workflow_id}/runs/{run_id}",
    "GetWorkflowRun",
    render=lambda reply: run(reply.run),
    response_model=RunOut,
    errors=(*_AUTHED, 404, 422),
)
def get_workflow_run(workflow_id: _WorkflowId, run_id: uuid.UUID) -> pb.GetWorkflowRunRequest:
    """One run, with each step's job and answer."""
    return pb.GetWorkflowRunRequest(workflow_id=str(workflow_id), run_id=str(run_id))
