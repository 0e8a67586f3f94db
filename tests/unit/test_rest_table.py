"""The REST route table refuses a declaration that could not be served as written.

Each route is declared once (rest_shim/table.py), and both FastAPI and the fast lane are
built from it; a mistake in a declaration fails when the table is built, not on the
route's first request.
"""

from __future__ import annotations

import uuid
from typing import Annotated

import pytest
from fastapi import Header, Query

from agentq.v1 import agent_service_pb2 as agents_pb
from agentq.v1 import job_service_pb2 as jobs_pb
from rest_shim.app import ROUTES
from rest_shim.hot_routes import lane_route
from rest_shim.table import RouteTable

JOB_ID = "8c6f3f0e-6a53-4f39-9a0d-3b1f0c7a9d11"


def test_a_route_that_builds_another_rpcs_message_is_refused_when_declared() -> None:
    table = RouteTable()
    declare = table.route(
        "GET", "/api/v1/jobs/{job_id}", rpc="JobService.GetJob", render=None, tag="jobs"
    )

    def get_job(job_id: uuid.UUID) -> agents_pb.GetAgentRequest:
        return agents_pb.GetAgentRequest(agent_id=str(job_id))

    with pytest.raises(TypeError, match=r"agentq\.v1\.GetJobRequest"):
        declare(get_job)
    assert list(table) == []


def test_a_route_naming_an_rpc_the_contract_lacks_is_refused_when_declared() -> None:
    table = RouteTable()
    declare = table.route(
        "GET", "/api/v1/jobs/{job_id}", rpc="JobService.ReadJob", render=None, tag="jobs"
    )

    def get_job(job_id: uuid.UUID) -> jobs_pb.GetJobRequest:
        return jobs_pb.GetJobRequest(job_id=str(job_id))

    with pytest.raises(KeyError):
        declare(get_job)


def test_the_fast_lane_refuses_a_route_with_a_parameter_it_cannot_read() -> None:
    table = RouteTable()

    @table.route(
        "GET", "/api/v1/jobs", rpc="JobService.ListJobs", render=None, tag="jobs", fast=True
    )
    def list_jobs(page_token: Annotated[str, Query()] = "") -> jobs_pb.ListJobsRequest:
        return jobs_pb.ListJobsRequest(page_token=page_token)

    [route] = table
    with pytest.raises(TypeError, match="cannot read page_token"):
        lane_route(route)


def test_the_fast_lane_refuses_a_header_it_would_read_differently_from_fastapi() -> None:
    table = RouteTable()

    @table.route(
        "GET", "/api/v1/jobs/{job_id}", rpc="JobService.GetJob", render=None, tag="jobs", fast=True
    )
    def get_job(
        job_id: uuid.UUID, trace: Annotated[str | None, Header(alias="X-Trace")] = None
    ) -> jobs_pb.GetJobRequest:
        return jobs_pb.GetJobRequest(job_id=str(job_id))

    [route] = table
    with pytest.raises(TypeError, match="cannot read trace"):
        lane_route(route)


def test_the_lane_takes_the_declared_fast_routes_with_canonical_ids_only() -> None:
    fast = {f"{r.method} {r.path}": lane_route(r) for r in ROUTES if r.fast}
    assert set(fast) == {
        "GET /api/v1/jobs/{job_id}",
        "GET /api/v1/agents/{agent_id}",
        "POST /api/v1/agents/{agent_id}/execute",
    }
    job = fast["GET /api/v1/jobs/{job_id}"]
    assert job.path.fullmatch(f"/api/v1/jobs/{JOB_ID}")
    assert not job.path.fullmatch(f"/api/v1/jobs/{JOB_ID.upper()}")
    assert not job.path.fullmatch(f"/api/v1/jobs/{JOB_ID}/")
    execute = fast["POST /api/v1/agents/{agent_id}/execute"]
    assert execute.headers == (("idempotency_key", "idempotency-key"),)
    assert execute.body is not None and execute.body[1].__name__ == "ExecuteBody"
