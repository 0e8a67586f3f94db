"""Workflow runs while they run, on an embedded server whose built-in provider takes half a
second per answer: the issue's check over gRPC (with REST's rendering of the same run
and workflow as the parity test), a cancelled run, and a workflow edited mid-run
(README, Workflows)."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2, json_format, struct_pb2

from agentq.v1 import event_service_pb2 as events_pb
from agentq.v1 import event_service_pb2_grpc as events_grpc
from agentq.v1 import job_pb2
from agentq.v1 import workflow_service_pb2 as pb
from rest_shim.workflow_routes import run as rendered_run
from rest_shim.workflow_routes import workflow as rendered_workflow
from tests.e2e.workflow_helpers import (
    Stack,
    Tenant,
    chain,
    job_story,
    not_queued,
    position,
    three_steps,
)

# Each answer takes half a second, so that a run can be caught while it runs.
WORKFLOW_SETTINGS = {"builtin_latency_ms": 500}


def test_the_issues_check_over_grpc_and_rest_renders_the_same(
    tenant: Tenant, workflow_server: Stack
) -> None:
    agents = [tenant.agent(f"You are agent {n}.") for n in "RFS"]
    request = json_format.ParseDict(three_steps(*agents), pb.CreateWorkflowRequest())
    created = tenant.stub.CreateWorkflow(request, metadata=tenant.metadata).workflow
    assert created.version == 1 and created.trigger.event_type == "order.created"
    with grpc.insecure_channel(f"127.0.0.1:{workflow_server[0].port}") as channel:
        data = struct_pb2.Struct()
        data.update({"order": 7})
        emitted = events_grpc.EventServiceStub(channel).CreateEvent(
            events_pb.CreateEventRequest(type="order.created", data=data),
            metadata=tenant.metadata,
        )
    runs = tenant.stub.ListWorkflowRuns(
        pb.ListWorkflowRunsRequest(workflow_id=created.id), metadata=tenant.metadata
    ).runs
    assert [r.event_id for r in runs] == [emitted.event.id]
    run_id = runs[0].id
    tenant.wait_run(created.id, run_id)
    run = tenant.stub.GetWorkflowRun(
        pb.GetWorkflowRunRequest(workflow_id=created.id, run_id=run_id), metadata=tenant.metadata
    ).run
    assert run.status == job_pb2.JOB_STATUS_COMPLETED
    assert [s.status for s in run.steps] == [job_pb2.JOB_STATUS_COMPLETED] * 3
    answers = {s.name: s.response for s in run.steps}
    assert answers["research"] == 'As "You are agent R.": Research order {"order":7}'
    assert run.response == answers["summary"]

    # Parity: REST answers what gRPC does, rendered.
    assert tenant.get_run(created.id, run_id) == rendered_run(run)
    workflow = tenant.stub.GetWorkflow(
        pb.GetWorkflowRequest(workflow_id=created.id), metadata=tenant.metadata
    ).workflow
    assert tenant.http.get(f"/api/v1/workflows/{created.id}").json() == rendered_workflow(workflow)

    log = tenant.log()
    steps = {s.name: s.job_id for s in run.steps}
    for step_job in steps.values():
        story = [t for t in job_story(log, step_job) if t != "job.step"]
        assert story == ["job.queued", "job.started", "job.completed"]
    # The two first steps ran side by side: each started before the other completed.
    research, facts = steps["research"], steps["facts"]
    assert position(log, research, "job.started") < position(log, facts, "job.completed")
    assert position(log, facts, "job.started") < position(log, research, "job.completed")
    summary_queued = position(log, steps["summary"], "job.queued")
    assert max(position(log, j, "job.completed") for j in (research, facts)) < summary_queued
    assert position(log, steps["summary"], "job.completed") < position(
        log, None, "workflow.completed"
    )


def test_a_cancelled_run_cancels_its_step_and_starts_no_other(tenant: Tenant) -> None:
    agent = tenant.agent()
    steps = chain(agent, "Slowly {{input}}", "Then", ("first", "second"))
    workflow = tenant.create({"name": "to cancel", "steps": steps})
    run = tenant.run(workflow["id"], "go")
    tenant.wait_step(workflow["id"], run["id"], "first", "running")
    cancelled = tenant.http.post(f"/api/v1/jobs/{run['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    run = tenant.wait_run(workflow["id"], run["id"])
    assert run["status"] == "cancelled", run
    first, second = run["steps"]
    assert first["status"] == "cancelled" and first["response"] is None
    assert second == not_queued("second")
    events = [e for e in tenant.log() if e["type"].startswith("workflow.")]
    assert [(e["type"], e["data"]["run_id"]) for e in events] == [("workflow.cancelled", run["id"])]


def test_a_run_keeps_the_version_it_started_with(tenant: Tenant) -> None:
    agent = tenant.agent()
    old = ("Old first {{input}}", "Old second {{steps.first.response}}")
    steps = chain(agent, *old, ("first", "second"))
    workflow = tenant.create({"name": "edited", "steps": steps})
    started = tenant.run(workflow["id"], "x")
    tenant.wait_step(workflow["id"], started["id"], "first", "running")
    new_steps = [
        {"name": "only", "agent_id": agent, "prompt": "New {{input}}", "depends_on": []},
    ]
    request = pb.UpdateWorkflowRequest(
        workflow_id=workflow["id"],
        steps=[json_format.ParseDict(s, pb.WorkflowStep()) for s in new_steps],
        update_mask=field_mask_pb2.FieldMask(paths=["steps"]),
    )
    updated = tenant.stub.UpdateWorkflow(request, metadata=tenant.metadata).workflow
    assert updated.version == 2 and [s.name for s in updated.steps] == ["only"]

    run = tenant.wait_run(workflow["id"], started["id"])
    assert run["status"] == "completed" and run["version"] == 1
    assert [s["name"] for s in run["steps"]] == ["first", "second"]
    assert run["response"].startswith('As "You are a careful assistant.": Old second As')
    after = tenant.wait_run(workflow["id"], tenant.run(workflow["id"], "y")["id"])
    assert after["version"] == 2
    assert after["response"] == 'As "You are a careful assistant.": New y'
