"""Cancelling jobs over real HTTP: pending, running and finished jobs, and a parent's children.

The tests run PostgreSQL, Redis and `agentq worker` processes. Assertions are on what a REST
client sees, plus what a worker did or did not do (a cancelled job that still ran).
"""

from __future__ import annotations

import time
import uuid

from server.settings import Settings
from server.store.models import Job
from tests.e2e.harness import token
from tests.e2e.rest_helpers import (
    FINISHED,
    LONG_PROMPT,
    alice_and_bob,
    assert_error,
    cancel,
    count_rows,
    create_agent,
    execute,
    get_job,
    http_client,
    read_stream,
    scaled_rest,
    scaled_stack,
    stays,
    submit,
    wait_for,
    wait_running,
    with_latency,
    worker_processes,
)

# --- Cancel ----------------------------------------------------------------------------------


def test_cancelling_a_pending_job_cancels_it_at_once_and_no_worker_ever_runs_it(
    scaled_settings: Settings,
) -> None:
    with scaled_rest(scaled_settings) as (_, rest), http_client(rest.url, token()) as http:
        agent = create_agent(http)
        # No worker is running yet: the job is certainly still pending.
        job_id = submit(http, agent["id"], "Never run me")
        cancelled = cancel(http, job_id)
        assert cancelled["status"] == "cancelled"
        assert cancelled["completed_at"] is not None
        assert cancelled["attempts"] == 0
        assert cancelled["started_at"] is None
        assert cancelled["result"] is None
        with worker_processes(scaled_settings):
            control = submit(http, agent["id"], "Run me")
            assert wait_for(http, control, FINISHED)["status"] == "completed"
            # The cancelled job's message came first; give it time to be dropped.
            later = stays(http, job_id, "cancelled", until=time.monotonic() + 1.0)
        events = read_stream(http, job_id)
    assert later == cancelled
    assert [e.name for e in events] == ["queued", "cancelled"]


def test_cancelling_a_running_job_stops_it_within_two_seconds_and_it_never_completes(
    scaled_settings: Settings,
) -> None:
    latency_s = 3.0
    with scaled_stack(with_latency(scaled_settings, latency_s)) as (_, http):
        agent = create_agent(http)
        job_id = submit(http, agent["id"], LONG_PROMPT)
        wait_running(http, job_id)
        asked = time.monotonic()
        answer = cancel(http, job_id)
        assert answer["status"] in ("running", "cancelled"), answer
        job = wait_for(http, job_id, FINISHED, timeout_s=5)
        took = time.monotonic() - asked
        assert job["status"] == "cancelled", job
        assert took < 2.0, f"the running job took {took:.1f}s to stop"
        # The provider would have answered by now; the job must not complete after all.
        stays(http, job_id, "cancelled", until=asked + latency_s + 0.5)
        events = read_stream(http, job_id)
    assert job["completed_at"] is not None
    assert job["attempts"] == 1
    assert job["result"] is None
    assert job["error"] is None
    names = [e.name for e in events]
    assert names[:2] == ["queued", "started"]
    assert names[-1] == "cancelled"
    assert "completed" not in names
    assert names.count("token") < 4


def test_cancelling_a_finished_job_is_a_conflict_and_cancelling_twice_is_harmless(
    scaled_settings: Settings,
) -> None:
    with scaled_rest(scaled_settings) as (_, rest), alice_and_bob(rest) as (http, bob):
        agent = create_agent(http)
        twice = submit(http, agent["id"], "Cancel me twice")
        first = cancel(http, twice)
        second = cancel(http, twice)
        assert first["status"] == second["status"] == "cancelled"
        assert second == first
        with worker_processes(scaled_settings, count=1):
            done = submit(http, agent["id"], "Finish me")
            assert wait_for(http, done, FINISHED)["status"] == "completed"
        assert_error(
            http.post(f"/api/v1/jobs/{done}/cancel"),
            409,
            "CONFLICT",
            f"Job {done} is already completed",
        )
        assert get_job(http, done)["status"] == "completed"
        unknown = str(uuid.uuid4())
        assert_error(
            http.post(f"/api/v1/jobs/{unknown}/cancel"),
            404,
            "NOT_FOUND",
            f"Job {unknown} not found",
        )
        # Another tenant can neither cancel the job nor learn that it exists.
        assert_error(
            bob.post(f"/api/v1/jobs/{done}/cancel"), 404, "NOT_FOUND", f"Job {done} not found"
        )
        assert get_job(http, twice) == first


# --- Sub-agents ------------------------------------------------------------------------------


def test_a_sub_agent_job_is_one_level_below_its_parent_and_max_depth_is_enforced(
    scaled_settings: Settings,
) -> None:
    with scaled_rest(scaled_settings) as (server, rest), alice_and_bob(rest) as (http, bob):
        agent = create_agent(http, max_depth=1)
        parent = submit(http, agent["id"], "Split the work")
        child = submit(http, agent["id"], "Do part one", parent_job_id=parent)
        assert (get_job(http, parent)["parent_job_id"], get_job(http, parent)["depth"]) == (None, 0)
        assert (get_job(http, child)["parent_job_id"], get_job(http, child)["depth"]) == (parent, 1)

        too_deep = execute(http, agent["id"], "Do a sliver", parent_job_id=child)
        assert_error(too_deep, 422, "VALIDATION_ERROR", "Execution depth 2 exceeds max_depth 1")
        flat = create_agent(http, name="flat", max_depth=0)
        assert_error(
            execute(http, flat["id"], "Help", parent_job_id=parent),
            422,
            "VALIDATION_ERROR",
            "Execution depth 1 exceeds max_depth 0",
        )
        unknown = str(uuid.uuid4())
        assert_error(
            execute(http, agent["id"], "Orphan", parent_job_id=unknown),
            404,
            "NOT_FOUND",
            f"Job {unknown} not found",
        )
        # Another tenant cannot hang a job under Alice's.
        assert_error(
            execute(bob, create_agent(bob)["id"], "Intrude", parent_job_id=parent),
            404,
            "NOT_FOUND",
            f"Job {parent} not found",
        )
        assert count_rows(server.engine, Job) == 2


def test_cancelling_a_parent_job_cancels_its_running_and_pending_children(
    scaled_settings: Settings,
) -> None:
    latency_s = 3.0
    settings = with_latency(scaled_settings, latency_s)
    with scaled_stack(settings, count=1, concurrency=2) as (_, http):
        agent = create_agent(http, max_depth=1)
        parent = submit(http, agent["id"], LONG_PROMPT)
        wait_running(http, parent)
        running_child = submit(http, agent["id"], LONG_PROMPT, parent_job_id=parent)
        wait_running(http, running_child)
        # Both worker slots are busy: this child waits.
        pending_child = submit(http, agent["id"], LONG_PROMPT, parent_job_id=parent)
        assert get_job(http, pending_child)["status"] == "pending"

        asked = time.monotonic()
        cancel(http, parent)
        assert get_job(http, pending_child)["status"] == "cancelled"
        for job_id in (parent, running_child):
            job = wait_for(http, job_id, FINISHED, timeout_s=5)
            assert job["status"] == "cancelled", job
        took = time.monotonic() - asked
        assert took < 2.0, f"the running jobs took {took:.1f}s to stop"
        until = asked + latency_s + 0.5
        for job_id in (parent, running_child, pending_child):
            stays(http, job_id, "cancelled", until=until)
        assert get_job(http, pending_child)["attempts"] == 0
