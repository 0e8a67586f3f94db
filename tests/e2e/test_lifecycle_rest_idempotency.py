"""Idempotent submits over real HTTP: one job per Idempotency-Key, per tenant and request.

The tests run PostgreSQL, Redis and `agentq worker` processes. Assertions are on what a REST
client sees, plus the rows a client cannot see but would suffer from (a duplicate job, a
job run twice).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx

from server.settings import Settings
from server.store.models import IdempotencyKey, Job
from tests.e2e.harness import token
from tests.e2e.rest_helpers import (
    FINISHED,
    alice_and_bob,
    assert_error,
    count_rows,
    create_agent,
    execute,
    get_job,
    http_client,
    read_stream,
    scaled_rest,
    submit,
    wait_for,
    worker_processes,
)

# --- Idempotent submits ----------------------------------------------------------------------

CONCURRENT_SUBMITS = 200


async def _submit_concurrently(
    base_url: str, bearer: str, agent_id: str, body: dict[str, Any], *, key: str
) -> list[httpx.Response]:
    """CONCURRENT_SUBMITS identical execute requests, all in flight at once."""
    limits = httpx.Limits(max_connections=CONCURRENT_SUBMITS)
    headers = {"Authorization": f"Bearer {bearer}", "Idempotency-Key": key}
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=60, limits=limits
    ) as http:
        url = f"/api/v1/agents/{agent_id}/execute"
        return list(
            await asyncio.gather(*(http.post(url, json=body) for _ in range(CONCURRENT_SUBMITS)))
        )


def test_two_hundred_concurrent_submits_with_one_idempotency_key_make_one_job_run_once(
    scaled_settings: Settings,
) -> None:
    body: dict[str, Any] = {"prompt": "Count the sheep in the field", "max_debate_rounds": 2}
    with (
        scaled_rest(scaled_settings) as (server, rest),
        worker_processes(scaled_settings),
        http_client(rest.url, token("alice")) as http,
    ):
        agent = create_agent(http)
        responses = asyncio.run(
            _submit_concurrently(rest.url, token("alice"), agent["id"], body, key="sheep-1")
        )
        refused = [r.text for r in responses if r.status_code != 202]
        assert Counter(r.status_code for r in responses) == {202: CONCURRENT_SUBMITS}, refused[:3]
        job_ids = {r.json()["job_id"] for r in responses}
        assert len(job_ids) == 1, f"{len(job_ids)} jobs for one idempotency key"
        (job_id,) = job_ids
        assert {r.json()["response"] for r in responses} == {f"Job queued: {job_id}"}

        job = wait_for(http, job_id, FINISHED)
        # A retry after the job finished still answers with the same job.
        assert submit(http, agent["id"], key="sheep-1", **body) == job_id
        events = read_stream(http, job_id)
        engine = server.engine
        assert count_rows(engine, Job, Job.tenant_id == "alice") == 1
        assert count_rows(engine, IdempotencyKey, IdempotencyKey.tenant_id == "alice") == 1
    assert job["status"] == "completed", job
    assert job["attempts"] == 1
    assert [e.name for e in events] == ["queued", "started", "completed"]


def test_an_idempotency_key_reused_with_a_different_request_is_a_conflict(
    scaled_settings: Settings,
) -> None:
    key_reused = "Idempotency key reused with a different request"
    with (
        scaled_rest(scaled_settings) as (server, rest),
        http_client(rest.url, token("alice")) as http,
    ):
        agent = create_agent(http)
        other_agent = create_agent(http, name="second")
        first = submit(http, agent["id"], "Plan the trip", key="trip-1")
        assert submit(http, agent["id"], "Plan the trip", key="trip-1") == first
        for response in (
            execute(http, agent["id"], "Plan another trip", key="trip-1"),
            execute(http, agent["id"], "Plan the trip", key="trip-1", max_debate_rounds=5),
            execute(http, agent["id"], "Plan the trip", key="trip-1", context_id="ctx-9"),
            execute(http, other_agent["id"], "Plan the trip", key="trip-1"),
        ):
            assert_error(response, 409, "CONFLICT", key_reused)
        # The original job is untouched, and nothing else was stored.
        assert get_job(http, first)["agent_id"] == agent["id"]
        assert count_rows(server.engine, Job) == 1


def test_an_idempotency_key_is_per_tenant(scaled_settings: Settings) -> None:
    with scaled_rest(scaled_settings) as (server, rest), alice_and_bob(rest) as (alice, bob):
        alices_agent = create_agent(alice)
        alices_job = submit(alice, alices_agent["id"], "Plan the trip", key="trip-1")
        # Bob's key does not reach Alice's job, nor her agent.
        assert_error(
            execute(bob, alices_agent["id"], "Plan the trip", key="trip-1"),
            404,
            "NOT_FOUND",
            "Agent not found",
        )
        bobs_agent = create_agent(bob)
        bobs_job = submit(bob, bobs_agent["id"], "Plan the trip", key="trip-1")
        assert bobs_job != alices_job
        assert submit(bob, bobs_agent["id"], "Plan the trip", key="trip-1") == bobs_job
        assert get_job(bob, bobs_job)["agent_id"] == bobs_agent["id"]
        assert_error(
            bob.get(f"/api/v1/jobs/{alices_job}"), 404, "NOT_FOUND", f"Job {alices_job} not found"
        )
        engine = server.engine
        assert count_rows(engine, Job, Job.tenant_id == "alice") == 1
        assert count_rows(engine, Job, Job.tenant_id == "bob") == 1


def test_a_request_id_in_the_body_is_an_idempotency_key_and_the_header_wins_over_it(
    scaled_settings: Settings,
) -> None:
    with scaled_rest(scaled_settings) as (server, rest), http_client(rest.url, token()) as http:
        agent = create_agent(http)
        first = submit(http, agent["id"], "Plan the trip", request_id="trip-1")
        assert submit(http, agent["id"], "Plan the trip", request_id="trip-1") == first
        assert submit(http, agent["id"], "Plan the trip", key="trip-1") == first
        second = submit(http, agent["id"], "Plan the trip", key="trip-2", request_id="trip-1")
        assert second != first
        assert submit(http, agent["id"], "Plan the trip", key="trip-2") == second
        assert count_rows(server.engine, Job) == 2


def test_an_idempotency_key_longer_than_255_characters_is_refused_and_nothing_is_stored(
    scaled_settings: Settings,
) -> None:
    with (
        scaled_rest(scaled_settings) as (server, rest),
        http_client(rest.url, token("alice")) as http,
    ):
        agent = create_agent(http)
        response = execute(http, agent["id"], key="k" * 256)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
        assert submit(http, agent["id"], key="k" * 255)
        assert count_rows(server.engine, Job) == 1
