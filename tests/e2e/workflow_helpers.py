"""What the workflow tests share: a tenant's caller over REST and gRPC, the issue's
three-step workflow, waiting for a run, and reading the tenant's event log in order."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import httpx
import pytest

from agentq.v1 import workflow_service_pb2_grpc as pb_grpc
from tests.e2e.harness import (
    RestThread,
    ServerThread,
    running_rest,
    running_server,
    settings_for,
    token,
)
from tests.e2e.rest_helpers import create_agent, http_client

RUN_FINISHED = ("completed", "failed", "cancelled")
Stack = tuple[ServerThread, RestThread]


class Tenant:
    """A user of a tenant of its own, over REST and over gRPC."""

    def __init__(self, http: httpx.Client, stub: pb_grpc.WorkflowServiceStub, bearer: str) -> None:
        self.http = http
        self.stub = stub
        self.metadata = (("authorization", f"Bearer {bearer}"),)

    def agent(self, role: str = "You are a careful assistant.") -> str:
        agent_id: str = create_agent(self.http, role=role)["id"]
        return agent_id

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post("/api/v1/workflows", json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def run(self, workflow_id: str, input: Any = None) -> dict[str, Any]:
        response = self.http.post(f"/api/v1/workflows/{workflow_id}/runs", json={"input": input})
        assert response.status_code == 202, response.text
        run: dict[str, Any] = response.json()
        return run

    def get_run(self, workflow_id: str, run_id: str) -> dict[str, Any]:
        response = self.http.get(f"/api/v1/workflows/{workflow_id}/runs/{run_id}")
        assert response.status_code == 200, response.text
        run: dict[str, Any] = response.json()
        return run

    def wait_run(
        self, workflow_id: str, run_id: str, *, until: tuple[str, ...] = RUN_FINISHED
    ) -> dict[str, Any]:
        """Poll the run until its status is one of `until`."""
        deadline = time.monotonic() + 60
        while True:
            run = self.get_run(workflow_id, run_id)
            if run["status"] in until:
                return run
            assert time.monotonic() < deadline, f"run still {run['status']}: {run}"
            time.sleep(0.05)

    def wait_step(self, workflow_id: str, run_id: str, step: str, status: str) -> dict[str, Any]:
        """Poll the run until the named step has this status."""
        deadline = time.monotonic() + 60
        while True:
            run = self.get_run(workflow_id, run_id)
            if next(s for s in run["steps"] if s["name"] == step)["status"] == status:
                return run
            assert time.monotonic() < deadline, f"step {step} never {status}: {run}"
            time.sleep(0.02)

    def log(self) -> list[dict[str, Any]]:
        """The tenant's whole event log, oldest first."""
        events: list[dict[str, Any]] = []
        page_token = ""
        while True:
            query: dict[str, str | int] = {"page_size": 100, "page_token": page_token}
            response = self.http.get("/api/v1/events", params=query)
            assert response.status_code == 200, response.text
            events += response.json()["data"]
            page_token = response.json()["meta"]["next_page_token"]
            if not page_token:
                return events[::-1]


@contextmanager
def workflow_stack(factory: pytest.TempPathFactory, **overrides: Any) -> Iterator[Stack]:
    """An embedded server (SQLite, in-process workers) whose orchestrator sweeps every
    50 ms, with `overrides`, and a REST shim in front of it."""
    database = factory.mktemp("workflows") / "agentq.db"
    settings = settings_for(database_url=f"sqlite:///{database}", workflow_poll_s=0.05, **overrides)
    with (
        running_server(settings, in_process_workers=True) as server,
        running_rest(f"127.0.0.1:{server.port}") as shim,
    ):
        yield server, shim


@contextmanager
def tenant_on(stack: Stack, sub: str = "alice") -> Iterator[Tenant]:
    """A user of a new tenant: tests on a shared server never see each other's rows."""
    server, shim = stack
    bearer = token(sub, tenant=f"t-{uuid.uuid4()}")
    with (
        http_client(shim.url, bearer) as http,
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        yield Tenant(http, pb_grpc.WorkflowServiceStub(channel), bearer)


def three_steps(research: str, facts: str, summary: str) -> dict[str, Any]:
    """The issue's check: two parallel steps, then one that reads both, on an event."""
    return {
        "name": "order review",
        "trigger": {"event_type": "order.created"},
        "steps": [
            {"name": "research", "agent_id": research, "prompt": "Research order {{input}}"},
            {"name": "facts", "agent_id": facts, "prompt": "List the facts of {{ input }}"},
            {
                "name": "summary",
                "agent_id": summary,
                "prompt": "Summarize {{steps.research.response}} and {{steps.facts.response}}",
                "depends_on": ["research", "facts"],
            },
        ],
    }


def chain(agent: str, first: str, second: str, names: tuple[str, str]) -> list[dict[str, Any]]:
    """Two steps of one agent, the second after the first."""
    return [
        {"name": names[0], "agent_id": agent, "prompt": first},
        {"name": names[1], "agent_id": agent, "prompt": second, "depends_on": [names[0]]},
    ]


def not_queued(name: str) -> dict[str, Any]:
    """A step of a run that has no job (yet)."""
    return {"name": name, "job_id": None, "status": "pending", "response": None, "error": None}


def job_story(events: list[dict[str, Any]], job_id: str) -> list[str]:
    """The types of one job's events in the log, in order."""
    return [e["type"] for e in events if e["job_id"] == job_id]


def position(events: list[dict[str, Any]], job_id: str | None, type: str) -> int:
    """Where the (job's) event of this type is in the log."""
    return next(
        i
        for i, e in enumerate(events)
        if e["type"] == type and (job_id is None or e["job_id"] == job_id)
    )
