"""Workflows scaled out: PostgreSQL and Redis, a server without workers and two worker
processes, each of the three running an orchestrator on the same runs. Every triggered
run completes, and no step is ever queued twice (README, Workflows)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from server.settings import Settings
from server.store.models import Job, WorkflowRunStep
from tests.e2e.rest_helpers import scaled_rest, worker_processes
from tests.e2e.workflow_helpers import tenant_on, three_steps

RUNS = 6


@pytest.mark.postgres
@pytest.mark.redis
def test_triggered_runs_complete_once_each_across_worker_processes(
    scaled_settings: Settings,
) -> None:
    settings = scaled_settings.model_copy(update={"workflow_poll_s": 0.05})
    with (
        scaled_rest(settings) as (server, rest),
        worker_processes(settings, count=2, concurrency=4),
        tenant_on((server, rest), "scaler") as tenant,
    ):
        http = tenant.http
        agent = tenant.agent()
        workflow = tenant.create(three_steps(agent, agent, agent))
        for order in range(RUNS):
            response = http.post(
                "/api/v1/events", json={"type": "order.created", "data": {"n": order}}
            )
            assert response.status_code == 201, response.text
        runs = http.get(f"/api/v1/workflows/{workflow['id']}/runs").json()["data"]
        assert len(runs) == RUNS
        finished = [tenant.wait_run(workflow["id"], run["id"]) for run in runs]
        assert [run["status"] for run in finished] == ["completed"] * RUNS
        for run in finished:
            assert run["response"].startswith('As "You are a careful assistant.": Summarize')
        with server.engine.connect() as connection:
            children = connection.execute(
                select(func.count()).select_from(Job).where(Job.parent_job_id.is_not(None))
            ).scalar_one()
            steps = connection.execute(
                select(func.count()).select_from(WorkflowRunStep)
            ).scalar_one()
        assert children == steps == 3 * RUNS
