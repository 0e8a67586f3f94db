"""Conversation contexts end to end: a second execution on a context sends the provider the
first turn, over REST on the embedded default and over gRPC on PostgreSQL and Redis with a
separate worker; a tenant reads its contexts a page at a time and deletes them."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from agentq.v1 import context_service_pb2 as contexts_pb
from agentq.v1 import context_service_pb2_grpc as contexts_grpc
from agentq.v1 import job_pb2
from server.settings import Settings
from tests.e2e.fake_llm import Reply, fake_llm
from tests.e2e.harness import WorkerProcess, rpc_error, running_server, token
from tests.e2e.rest_errors_helpers import assert_error, assert_validation_error
from tests.e2e.rest_helpers import (
    FINISHED,
    create_agent,
    embedded_rest,
    http_client,
    submit,
    wait_for,
)

CONTEXT = "trip-2026:may"
ROLE = "You plan trips."
FIRST, SECOND = "Where should we go in May?", "And for how long?"
ANSWERS = [Reply.answer("Lisbon.", 7), Reply.answer("Five days.", 9)]
CONTEXT_ID_RULE = "Invalid context_id: must be 1 to 128 characters of A-Za-z0-9._:-"
TURN_FIELDS = {"job_id", "prompt", "response", "created_at"}
OPENAI = {"provider": "openai", "openai_model": "test-model"}


def _sent(llm_requests: list[dict[str, Any]]) -> list[list[dict[str, str]]]:
    """The messages of each request the provider received."""
    return [request["messages"] for request in llm_requests]


# What the provider receives: the second call carries the first turn between role and prompt.
EXPECTED_MESSAGES = [
    [{"role": "system", "content": ROLE}, {"role": "user", "content": FIRST}],
    [
        {"role": "system", "content": ROLE},
        {"role": "user", "content": FIRST},
        {"role": "assistant", "content": "Lisbon."},
        {"role": "user", "content": SECOND},
    ],
]


def test_over_rest_a_second_execution_on_a_context_sends_the_first_turn_to_the_provider(
    tmp_path: Path,
) -> None:
    with (
        fake_llm(ANSWERS) as (llm, url),
        embedded_rest(tmp_path, openai_base_url=url, **OPENAI) as (_, rest),
        http_client(rest.url, token("alice")) as http,
    ):
        agent = create_agent(http, role=ROLE)
        first = wait_for(http, submit(http, agent["id"], FIRST, context_id=CONTEXT), FINISHED)
        second = wait_for(http, submit(http, agent["id"], SECOND, context_id=CONTEXT), FINISHED)
        alone = wait_for(http, submit(http, agent["id"], "Unrelated."), FINISHED)

    assert [job["status"] for job in (first, second, alone)] == ["completed"] * 3
    assert _sent(llm.requests)[:2] == EXPECTED_MESSAGES
    assert len(_sent(llm.requests)[2]) == 2  # no context: the role and the prompt only
    assert [job["result"]["new_context_id"] for job in (first, second, alone)] == [
        CONTEXT,
        CONTEXT,
        None,
    ]


def test_over_rest_a_context_reads_a_page_at_a_time_per_tenant_and_deletes(
    tmp_path: Path,
) -> None:
    with (
        fake_llm(ANSWERS) as (_, url),
        embedded_rest(tmp_path, openai_base_url=url, **OPENAI) as (_, rest),
        http_client(rest.url, token("alice")) as alice,
        http_client(rest.url, token("bob")) as bob,
    ):
        agent = create_agent(alice, role=ROLE)
        jobs = [
            wait_for(alice, submit(alice, agent["id"], p, context_id=CONTEXT), FINISHED)["job_id"]
            for p in (FIRST, SECOND)
        ]
        first = alice.get(f"/api/v1/contexts/{CONTEXT}", params={"page_size": 1})
        token_ = first.json()["meta"]["next_page_token"]
        second = alice.get(f"/api/v1/contexts/{CONTEXT}", params={"page_token": token_})
        # Another tenant's context of that name is a different, empty one.
        bobs = bob.get(f"/api/v1/contexts/{CONTEXT}")
        bob_deleted = bob.delete(f"/api/v1/contexts/{CONTEXT}")
        kept = alice.get(f"/api/v1/contexts/{CONTEXT}")
        deleted = alice.delete(f"/api/v1/contexts/{CONTEXT}")
        emptied = alice.get(f"/api/v1/contexts/{CONTEXT}")
        job_after = alice.get(f"/api/v1/jobs/{jobs[0]}")

    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert first.json()["context_id"] == CONTEXT
    turns = [*first.json()["data"], *second.json()["data"]]
    assert all(set(turn) == TURN_FIELDS for turn in turns), turns
    assert [(t["job_id"], t["prompt"], t["response"]) for t in turns] == [
        (jobs[0], FIRST, "Lisbon."),
        (jobs[1], SECOND, "Five days."),
    ]
    assert first.json()["meta"]["per_page"] == 1
    assert second.json()["meta"]["next_page_token"] is None
    assert (bobs.status_code, bobs.json()["data"]) == (200, [])
    assert (bob_deleted.status_code, bob_deleted.content) == (204, b"")
    assert len(kept.json()["data"]) == 2
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert emptied.json()["data"] == []
    assert job_after.json()["result"]["new_context_id"] == CONTEXT


def test_over_rest_a_bad_context_id_in_the_path_is_422_with_the_rule(tmp_path: Path) -> None:
    with (
        embedded_rest(tmp_path) as (_, rest),
        http_client(rest.url, token("alice")) as http,
        httpx.Client(base_url=rest.url, timeout=10) as anonymous,
    ):
        too_long = http.get(f"/api/v1/contexts/{'c' * 129}")
        with_space = http.delete("/api/v1/contexts/a%20b")
        bad_token = http.get(f"/api/v1/contexts/{CONTEXT}", params={"page_token": "forged"})
        no_credentials = anonymous.get(f"/api/v1/contexts/{CONTEXT}")

    assert_validation_error(too_long, [(["path", "context_id"], CONTEXT_ID_RULE)])
    assert_validation_error(with_space, [(["path", "context_id"], CONTEXT_ID_RULE)])
    assert_validation_error(bad_token, [(["query", "page_token"], "Invalid page_token")])
    assert_error(no_credentials, 401, "UNAUTHORIZED", "Missing Authorization header")


def test_with_auto_contexts_an_execution_without_one_names_a_new_context_in_its_result(
    tmp_path: Path,
) -> None:
    with (
        embedded_rest(tmp_path, context_auto=True) as (_, rest),
        http_client(rest.url, token("alice")) as http,
    ):
        agent = create_agent(http)
        job = wait_for(http, submit(http, agent["id"], FIRST), FINISHED)
        named = job["result"]["new_context_id"]
        page = http.get(f"/api/v1/contexts/{named}")

    assert job["status"] == "completed"
    assert str(uuid.UUID(named)) == named
    assert [turn["job_id"] for turn in page.json()["data"]] == [job["job_id"]]


def test_over_grpc_on_postgres_a_second_execution_on_a_context_sends_the_first_turn(
    scaled_settings: Settings,
) -> None:
    with fake_llm(ANSWERS) as (llm, url):
        settings = scaled_settings.model_copy(update={"openai_base_url": url, **OPENAI})
        with (
            running_server(settings, in_process_workers=False) as server,
            server.client(token("alice")) as alice,
            server.client(token("bob")) as bob,
        ):
            worker = WorkerProcess(settings, concurrency=2)
            try:
                agent = alice.create_agent(role=ROLE)
                first = alice.wait_finished(
                    alice.execute(agent.id, FIRST, context_id=CONTEXT).job_id
                )
                second = alice.wait_finished(
                    alice.execute(agent.id, SECOND, context_id=CONTEXT).job_id
                )
            finally:
                worker.stop()
            stub = contexts_grpc.ContextServiceStub(alice.channel)
            read = contexts_pb.GetContextRequest(context_id=CONTEXT)
            turns = stub.GetContext(read, metadata=alice.metadata, timeout=10)
            bobs = stub.GetContext(read, metadata=bob.metadata, timeout=10)
            remove = contexts_pb.DeleteContextRequest(context_id=CONTEXT)
            deleted = stub.DeleteContext(remove, metadata=alice.metadata, timeout=10)
            again = stub.DeleteContext(remove, metadata=alice.metadata, timeout=10)
            with pytest.raises(grpc.RpcError) as raised:
                bad = contexts_pb.GetContextRequest(context_id="a context")
                stub.GetContext(bad, metadata=alice.metadata, timeout=10)

    assert [job.status for job in (first, second)] == [job_pb2.JOB_STATUS_COMPLETED] * 2
    assert _sent(llm.requests) == EXPECTED_MESSAGES
    assert second.result.new_context_id == CONTEXT
    assert [(t.job_id, t.prompt, t.response) for t in turns.turns] == [
        (first.job_id, FIRST, "Lisbon."),
        (second.job_id, SECOND, "Five days."),
    ]
    assert (turns.context_id, turns.page_size, turns.next_page_token) == (CONTEXT, 20, "")
    assert list(bobs.turns) == []
    assert (deleted.deleted_turns, again.deleted_turns) == (2, 0)
    assert rpc_error(raised.value) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        CONTEXT_ID_RULE,
        "VALIDATION_ERROR",
        [("context_id", CONTEXT_ID_RULE)],
    )
