"""Workflows end to end over REST on one embedded server: the issue's check (an event
starts a three-step run, two steps in parallel, and the log tells the whole story in
order), a run started by hand, a failing step failing the run, a rendered prompt over
its limit, and tenant isolation (README, Workflows)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.rest_errors_helpers import assert_error
from tests.e2e.workflow_helpers import (
    Stack,
    Tenant,
    chain,
    job_story,
    not_queued,
    position,
    tenant_on,
    three_steps,
)

JOB_STORY = ["job.queued", "job.started", "job.completed"]


# The safety judge is on, so that `[unsafe]` in a prompt fails its step.
WORKFLOW_SETTINGS = {"prompt_guard": "judge"}


@pytest.fixture
def other(workflow_server: Stack) -> Iterator[Tenant]:
    with tenant_on(workflow_server, "bob") as user:
        yield user


def _emit(tenant: Tenant, data: dict[str, Any]) -> dict[str, Any]:
    response = tenant.http.post("/api/v1/events", json={"type": "order.created", "data": data})
    assert response.status_code == 201, response.text
    event: dict[str, Any] = response.json()
    return event


def test_an_emitted_event_runs_the_workflow_and_the_log_tells_the_story(tenant: Tenant) -> None:
    research, facts, summary = (tenant.agent(f"You are agent {n}.") for n in "RFS")
    workflow = tenant.create(three_steps(research, facts, summary))
    assert workflow["version"] == 1 and workflow["trigger"] == {"event_type": "order.created"}

    event = _emit(tenant, {"order": 42})
    runs = tenant.http.get(f"/api/v1/workflows/{workflow['id']}/runs").json()["data"]
    assert [r["event_id"] for r in runs] == [event["id"]]
    run = tenant.wait_run(workflow["id"], runs[0]["id"])

    assert run["status"] == "completed", run
    assert run["input"] == {"order": 42} and run["version"] == 1
    answers = {s["name"]: s["response"] for s in run["steps"]}
    assert answers["research"] == 'As "You are agent R.": Research order {"order":42}'
    assert answers["facts"] == 'As "You are agent F.": List the facts of {"order":42}'
    # The last step read both answers; the built-in echo repeats its first 20 words.
    assert answers["summary"].startswith('As "You are agent S.": Summarize As "You are agent R."')
    assert run["response"] == answers["summary"]
    job = tenant.http.get(f"/api/v1/jobs/{run['id']}").json()
    assert job["status"] == "completed" and job["result"]["response"] == answers["summary"]
    steps = {s["name"]: s["job_id"] for s in run["steps"]}
    for step_job in steps.values():
        child = tenant.http.get(f"/api/v1/jobs/{step_job}").json()
        assert child["parent_job_id"] == run["id"] and child["depth"] == 1

    log = tenant.log()
    emitted = position(log, None, "order.created")
    assert log[emitted]["id"] == event["id"]
    assert job_story(log, run["id"]) == JOB_STORY
    for name, step_job in steps.items():
        story = [t for t in job_story(log, step_job) if t != "job.step"]
        assert story == JOB_STORY, (name, story)
        assert emitted < position(log, step_job, "job.queued")
    summary_queued = position(log, steps["summary"], "job.queued")
    assert position(log, steps["research"], "job.completed") < summary_queued
    assert position(log, steps["facts"], "job.completed") < summary_queued
    finished = position(log, None, "workflow.completed")
    assert position(log, steps["summary"], "job.completed") < finished
    assert log[finished]["data"] == {
        "run_id": run["id"],
        "workflow_id": workflow["id"],
        "version": 1,
        "status": "completed",
        "steps": answers,
        "response": answers["summary"],
    }


def test_a_run_started_by_hand_renders_a_string_input_as_it_is(tenant: Tenant) -> None:
    agent = tenant.agent()
    steps = chain(agent, "Draft {{input}}", "Polish {{steps.draft.response}}", ("draft", "polish"))
    workflow = tenant.create({"name": "two steps", "steps": steps})
    started = tenant.run(workflow["id"], "a haiku")
    assert started["status"] == "running" and started["event_id"] is None
    assert [s["name"] for s in started["steps"]] == ["draft", "polish"]
    assert started["steps"][1] == not_queued("polish")
    run = tenant.wait_run(workflow["id"], started["id"])
    assert run["status"] == "completed", run
    assert run["steps"][0]["response"] == 'As "You are a careful assistant.": Draft a haiku'
    listed = tenant.http.get(f"/api/v1/workflows/{workflow['id']}/runs").json()
    assert [r["id"] for r in listed["data"]] == [run["id"]]


def test_a_failed_step_fails_the_run_and_starts_nothing_after_it(tenant: Tenant) -> None:
    agent = tenant.agent()
    steps = chain(agent, "Check {{input}}", "Then", ("check", "after"))
    workflow = tenant.create({"name": "judged", "steps": steps})
    # The safety judge (AGENTQ_PROMPT_GUARD=judge) refuses the rendered prompt: the
    # step's job fails, and so does the run.
    run = tenant.wait_run(workflow["id"], tenant.run(workflow["id"], "[unsafe] data")["id"])
    assert run["status"] == "failed", run
    check, after = run["steps"]
    assert check["status"] == "failed" and check["error"].startswith("Safety judge rejected")
    assert run["error"] == f"Step check failed: {check['error']}"
    assert after == not_queued("after")
    job = tenant.http.get(f"/api/v1/jobs/{run['id']}").json()
    assert job["status"] == "failed" and job["error"] == run["error"]
    failed = [e for e in tenant.log() if e["type"] == "workflow.failed"]
    assert [e["data"]["run_id"] for e in failed] == [run["id"]]
    assert failed[0]["data"]["error"] == run["error"]


def test_a_rendered_prompt_over_the_limit_fails_its_step(tenant: Tenant) -> None:
    agent = tenant.agent()
    steps = [{"name": "twice", "agent_id": agent, "prompt": "{{input}} {{input}}"}]
    workflow = tenant.create({"name": "too long", "steps": steps})
    run = tenant.wait_run(workflow["id"], tenant.run(workflow["id"], "x" * 30_000)["id"])
    assert run["status"] == "failed"
    refused = "Invalid prompt: must be 1 to 50000 characters after trimming"
    assert run["steps"][0]["error"] == f"Its rendered prompt is refused: {refused}"
    assert run["steps"][0]["job_id"] is None
    assert run["error"] == f"Step twice failed: Its rendered prompt is refused: {refused}"


def test_another_tenants_workflow_runs_and_agents_are_not_found(
    tenant: Tenant, other: Tenant
) -> None:
    agent = tenant.agent()
    workflow = tenant.create(
        {"name": "mine", "steps": [{"name": "a", "agent_id": agent, "prompt": "Hi"}]}
    )
    run = tenant.run(workflow["id"])
    missing = f"Workflow {workflow['id']} not found"
    base = f"/api/v1/workflows/{workflow['id']}"
    for response in (
        other.http.get(base),
        other.http.patch(base, json={"name": "theirs"}),
        other.http.delete(base),
        other.http.post(f"{base}/runs", json={}),
        other.http.get(f"{base}/runs"),
        other.http.get(f"{base}/runs/{run['id']}"),
    ):
        assert_error(response, 404, "NOT_FOUND", missing)
    assert other.http.get("/api/v1/workflows").json()["data"] == []
    # Another tenant's agent is refused like one that does not exist.
    response = other.http.post(
        "/api/v1/workflows",
        json={"name": "borrowed", "steps": [{"name": "a", "agent_id": agent, "prompt": "Hi"}]},
    )
    body = assert_error(response, 422, "VALIDATION_ERROR")
    assert body["detail"][0]["loc"] == ["body", "steps[0].agent_id"]
    assert body["error"]["message"] == "Invalid steps[0].agent_id: Agent not found"
    # Their event of the trigger's type starts nothing of this tenant's.
    three = three_steps(agent, agent, agent)
    mine = tenant.create(three)
    _emit(other, {"order": 1})
    assert tenant.http.get(f"/api/v1/workflows/{mine['id']}/runs").json()["data"] == []


def test_update_makes_a_new_version_and_delete_hides_the_workflow(tenant: Tenant) -> None:
    agent = tenant.agent()
    workflow = tenant.create(three_steps(agent, agent, agent))
    base = f"/api/v1/workflows/{workflow['id']}"
    renamed = tenant.http.patch(base, json={"name": "renamed", "trigger": None})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["version"] == 2 and renamed.json()["trigger"] is None
    assert renamed.json()["steps"] == workflow["steps"]
    assert tenant.http.get(base).json() == renamed.json()
    # Without a trigger, the event starts nothing.
    _emit(tenant, {"order": 7})
    assert tenant.http.get(f"{base}/runs").json()["data"] == []
    assert tenant.http.delete(base).status_code == 204
    assert_error(tenant.http.get(base), 404, "NOT_FOUND", f"Workflow {workflow['id']} not found")
    assert_error(tenant.http.delete(base), 404, "NOT_FOUND")
    assert tenant.http.get("/api/v1/workflows").json()["data"] == []
