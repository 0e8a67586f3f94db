"""The job lifecycle RPCs over real gRPC: WatchJob, CancelJob, ListJobs, agents, request ids."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from agentq.v1 import agent_service_pb2 as agents_pb
from agentq.v1 import agent_service_pb2_grpc as agents_grpc
from agentq.v1 import job_pb2
from agentq.v1 import job_service_pb2 as jobs_pb
from agentq.v1 import job_service_pb2_grpc as jobs_grpc
from tests.e2e.harness import Client, ServerThread, rpc_error, running_server, settings_for, token

EVENT = job_pb2.JobEventType
# The events of one builtin run with a latency: it answers in four pieces.
STREAMED_RUN = [
    EVENT.JOB_EVENT_TYPE_QUEUED,
    EVENT.JOB_EVENT_TYPE_STARTED,
    *[EVENT.JOB_EVENT_TYPE_TOKEN] * 4,
    EVENT.JOB_EVENT_TYPE_COMPLETED,
]
LONG_PROMPT = "Explain in plain words how a queue hands work to many workers"


@contextmanager
def _server(
    tmp_path: Path, *, workers: bool = True, db: str = "agentq.db", **overrides: Any
) -> Iterator[ServerThread]:
    """An agentq server on a SQLite file; with in-process workers unless told otherwise."""
    settings = settings_for(database_url=f"sqlite:///{tmp_path / db}", **overrides)
    with running_server(settings, in_process_workers=workers) as server:
        yield server


@contextmanager
def _alice_and_mallory(tmp_path: Path) -> Iterator[tuple[ServerThread, Client, Client]]:
    """A server as _server starts it, with clients of it for alice and for mallory, a user of
    another tenant."""
    with (
        _server(tmp_path) as server,
        server.client(token("alice")) as alice,
        server.client(token("mallory")) as mallory,
    ):
        yield server, alice, mallory


def _jobs(client: Client) -> jobs_grpc.JobServiceStub:
    return jobs_grpc.JobServiceStub(client.channel)


def _agents(client: Client) -> agents_grpc.AgentServiceStub:
    return agents_grpc.AgentServiceStub(client.channel)


def _watch(client: Client, job_id: str, after: int = 0, *, timeout_s: float = 20) -> Any:
    request = jobs_pb.WatchJobRequest(job_id=job_id, after_sequence=after)
    return _jobs(client).WatchJob(request, metadata=client.metadata, timeout=timeout_s)


def _cancel(client: Client, job_id: str) -> job_pb2.Job:
    request = jobs_pb.CancelJobRequest(job_id=job_id)
    return _jobs(client).CancelJob(request, metadata=client.metadata, timeout=10).job


def _list_jobs(client: Client, **fields: Any) -> jobs_pb.ListJobsResponse:
    request = jobs_pb.ListJobsRequest(**fields)
    return _jobs(client).ListJobs(request, metadata=client.metadata, timeout=10)


def _list_agents(client: Client, **fields: Any) -> agents_pb.ListAgentsResponse:
    request = agents_pb.ListAgentsRequest(**fields)
    return _agents(client).ListAgents(request, metadata=client.metadata, timeout=10)


def _delete_agent(client: Client, agent_id: str) -> None:
    request = agents_pb.DeleteAgentRequest(agent_id=agent_id)
    _agents(client).DeleteAgent(request, metadata=client.metadata, timeout=10)


def _refused(call: Any) -> tuple[grpc.StatusCode, str, str, list[tuple[str, str]]]:
    """The error of a call (a zero-argument callable) that must fail."""
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return rpc_error(raised.value)


# --- WatchJob --------------------------------------------------------------------------------


def test_watch_job_replays_a_finished_job_from_after_sequence_and_ends(tmp_path: Path) -> None:
    with _server(tmp_path, builtin_latency_ms=200) as server, server.client(token()) as client:
        agent = client.create_agent()
        job = client.wait_finished(client.execute(agent.id, prompt=LONG_PROMPT).job_id)
        everything = [reply.event for reply in _watch(client, job.job_id)]
        tail = [reply.event for reply in _watch(client, job.job_id, after=3)]
        past_the_end = [reply.event for reply in _watch(client, job.job_id, after=7)]
    assert job.status == job_pb2.JOB_STATUS_COMPLETED
    assert [e.sequence for e in everything] == list(range(1, len(STREAMED_RUN) + 1))
    assert [e.type for e in everything] == STREAMED_RUN
    assert {e.job_id for e in everything} == {job.job_id}
    assert [e.attempt for e in everything] == [0, 1, 1, 1, 1, 1, 1]
    assert everything[-1].result == job.result
    assert "".join(e.delta for e in everything[2:6]) == job.result.response
    assert tail == everything[3:]
    assert past_the_end == []


def test_watch_job_follows_a_running_job_live_and_ends_after_its_last_event(
    tmp_path: Path,
) -> None:
    latency_s = 1.0
    with (
        _server(tmp_path, builtin_latency_ms=int(latency_s * 1000)) as server,
        server.client(token()) as client,
    ):
        agent = client.create_agent()
        job_id = client.execute(agent.id, prompt=LONG_PROMPT).job_id
        started = time.monotonic()
        arrivals: list[tuple[float, job_pb2.JobEvent]] = []
        call = _watch(client, job_id)
        for reply in call:
            arrivals.append((time.monotonic() - started, reply.event))
        ended = time.monotonic() - started
        job = client.get_job(job_id)
    events = [event for _, event in arrivals]
    assert call.code() == grpc.StatusCode.OK
    assert [e.type for e in events] == STREAMED_RUN
    assert [e.sequence for e in events] == list(range(1, len(STREAMED_RUN) + 1))
    # The answer arrived in pieces while the job ran, not all at once at the end.
    token_times = [at for at, event in arrivals if event.type == EVENT.JOB_EVENT_TYPE_TOKEN]
    assert token_times[-1] - token_times[0] > latency_s / 2
    assert ended < latency_s + 3, "the watch did not end after the job's last event"
    assert events[-1].result == job.result
    assert "".join(e.delta for e in events) == job.result.response


def test_watch_job_of_a_cancelled_pending_job_ends_with_the_cancelled_event(
    tmp_path: Path,
) -> None:
    with _server(tmp_path, workers=False) as server, server.client(token()) as client:
        job_id = client.execute(client.create_agent().id).job_id
        replies = iter(_watch(client, job_id))
        first = next(replies).event
        cancelled = _cancel(client, job_id)
        rest = [reply.event for reply in replies]
    assert first.type == EVENT.JOB_EVENT_TYPE_QUEUED
    assert cancelled.status == job_pb2.JOB_STATUS_CANCELLED
    assert [(e.sequence, e.type) for e in rest] == [(2, EVENT.JOB_EVENT_TYPE_CANCELLED)]
    assert not rest[0].HasField("result")


def test_watch_job_of_another_tenants_job_is_not_found_like_an_unknown_job(
    tmp_path: Path,
) -> None:
    with _alice_and_mallory(tmp_path) as (_, alice, mallory):
        job_id = alice.execute(alice.create_agent().id).job_id
        alice.wait_finished(job_id)
        unknown = str(uuid.uuid4())
        foreign = _refused(lambda: list(_watch(mallory, job_id)))
        missing = _refused(lambda: list(_watch(alice, unknown)))
        malformed = _refused(lambda: list(_watch(alice, "job-1")))
        # The owner still sees every event.
        assert len(list(_watch(alice, job_id))) == 3
    assert foreign[:3] == (grpc.StatusCode.NOT_FOUND, f"Job {job_id} not found", "NOT_FOUND")
    assert missing[:3] == (grpc.StatusCode.NOT_FOUND, f"Job {unknown} not found", "NOT_FOUND")
    assert malformed[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert malformed[3] == [("job_id", "Invalid job_id: must be a UUID")]


# --- CancelJob -------------------------------------------------------------------------------


def test_cancel_job_of_a_completed_job_fails_its_precondition_and_twice_is_harmless(
    tmp_path: Path,
) -> None:
    with _server(tmp_path) as server, server.client(token()) as client:
        done = client.wait_finished(client.execute(client.create_agent().id).job_id)
        refused = _refused(lambda: _cancel(client, done.job_id))
        assert client.get_job(done.job_id) == done
    with _server(tmp_path, workers=False, db="idle.db") as server, server.client(token()) as client:
        job_id = client.execute(client.create_agent().id).job_id
        first, second = _cancel(client, job_id), _cancel(client, job_id)
        unknown = str(uuid.uuid4())
        missing = _refused(lambda: _cancel(client, unknown))
    assert refused[:3] == (
        grpc.StatusCode.FAILED_PRECONDITION,
        f"Job {done.job_id} is already completed",
        "CONFLICT",
    )
    assert first.status == job_pb2.JOB_STATUS_CANCELLED
    assert first.HasField("completed_at")
    assert first.attempts == 0
    assert second == first
    assert missing[:3] == (grpc.StatusCode.NOT_FOUND, f"Job {unknown} not found", "NOT_FOUND")


# --- Execute: request ids and sub-agents -----------------------------------------------------


def test_execute_with_a_request_id_returns_the_original_job_and_refuses_a_different_request(
    tmp_path: Path,
) -> None:
    with _server(tmp_path, workers=False) as server, server.client(token()) as client:
        agent = client.create_agent()
        first = client.execute(agent.id, prompt="Plan the trip", request_id="trip-1")
        again = client.execute(agent.id, prompt="Plan the trip", request_id="trip-1")
        other = client.execute(agent.id, prompt="Plan the trip", request_id="trip-2")
        reused = _refused(
            lambda: client.execute(agent.id, prompt="Plan a new trip", request_id="trip-1")
        )
        empty = _refused(lambda: client.execute(agent.id, request_id=""))
        listed = _list_jobs(client)
    assert again.job_id == first.job_id
    assert other.job_id != first.job_id
    assert reused[:3] == (
        grpc.StatusCode.ALREADY_EXISTS,
        "Idempotency key reused with a different request",
        "CONFLICT",
    )
    assert empty[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in empty[3]] == ["request_id"]
    assert sorted(j.job_id for j in listed.jobs) == sorted([first.job_id, other.job_id])


def test_execute_below_a_parent_job_is_one_level_deeper_up_to_max_depth(tmp_path: Path) -> None:
    with _server(tmp_path, workers=False) as server, server.client(token()) as client:
        agent = client.create_agent(max_depth=1)
        parent = client.execute(agent.id).job_id
        child = client.execute(agent.id, parent_job_id=parent).job_id
        too_deep = _refused(lambda: client.execute(agent.id, parent_job_id=child))
        parent_job, child_job = client.get_job(parent), client.get_job(child)
        count = len(_list_jobs(client).jobs)
    assert (parent_job.depth, parent_job.HasField("parent_job_id")) == (0, False)
    assert (child_job.depth, child_job.parent_job_id) == (1, parent)
    assert too_deep[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert too_deep[2] == "VALIDATION_ERROR"
    assert too_deep[3] == [("parent_job_id", "Execution depth 2 exceeds max_depth 1")]
    assert count == 2


# --- ListJobs, ListAgents, DeleteAgent -------------------------------------------------------


def test_list_jobs_refuses_a_page_token_it_did_not_issue_for_these_filters(
    tmp_path: Path,
) -> None:
    with _server(tmp_path, workers=False) as server, server.client(token()) as client:
        agent = client.create_agent()
        for _ in range(3):
            client.execute(agent.id)
        page = _list_jobs(client, page_size=2)
        assert page.page_size == 2 and page.next_page_token
        rest = _list_jobs(client, page_size=2, page_token=page.next_page_token)
        errors = [
            _refused(lambda: _list_jobs(client, page_token="not-a-token")),
            _refused(
                lambda: _list_jobs(
                    client, page_token=page.next_page_token, status=job_pb2.JOB_STATUS_PENDING
                )
            ),
            _refused(
                lambda: _list_jobs(client, page_token=page.next_page_token, agent_id=agent.id)
            ),
        ]
        with server.client(token("mallory")) as mallory:
            errors.append(_refused(lambda: _list_jobs(mallory, page_token=page.next_page_token)))
        bad_size = _refused(lambda: _list_jobs(client, page_size=101))
        bad_status = _refused(lambda: _list_jobs(client, status=job_pb2.JOB_STATUS_UNSPECIFIED))
    assert len(page.jobs) + len(rest.jobs) == 3
    assert rest.next_page_token == ""
    for error in errors:
        assert error == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "Invalid page_token",
            "VALIDATION_ERROR",
            [("page_token", "Invalid page_token")],
        )
    assert bad_size[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in bad_size[3]] == ["page_size"]
    assert bad_status[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in bad_status[3]] == ["status"]


def test_delete_agent_hides_it_from_get_and_list_and_another_tenant_cannot_delete_it(
    tmp_path: Path,
) -> None:
    with _alice_and_mallory(tmp_path) as (server, alice, mallory):
        agents = [alice.create_agent(name=f"agent {i}") for i in range(5)]
        first = _list_agents(alice, page_size=3)
        second = _list_agents(alice, page_size=3, page_token=first.next_page_token)
        doomed = agents[2]
        finished = alice.wait_finished(alice.execute(doomed.id).job_id)
        foreign = _refused(lambda: _delete_agent(mallory, doomed.id))
        with server.client(token("alice", role="agent")) as runner:
            forbidden = _refused(lambda: _delete_agent(runner, doomed.id))
        assert alice.get_agent(doomed.id) == doomed
        _delete_agent(alice, doomed.id)
        gone = _refused(lambda: alice.get_agent(doomed.id))
        again = _refused(lambda: _delete_agent(alice, doomed.id))
        remaining = _list_agents(alice, page_size=100)
        kept = alice.get_job(finished.job_id)
        mallorys = _list_agents(mallory)
    newest_first = [a.id for a in reversed(agents)]
    assert [a.id for a in [*first.agents, *second.agents]] == newest_first
    assert second.next_page_token == ""
    assert foreign[:3] == (grpc.StatusCode.NOT_FOUND, "Agent not found", "NOT_FOUND")
    assert forbidden[:3] == (
        grpc.StatusCode.PERMISSION_DENIED,
        "Insufficient permissions",
        "FORBIDDEN",
    )
    assert gone[:3] == (grpc.StatusCode.NOT_FOUND, "Agent not found", "NOT_FOUND")
    assert again[:3] == (grpc.StatusCode.NOT_FOUND, "Agent not found", "NOT_FOUND")
    assert [a.id for a in remaining.agents] == [i for i in newest_first if i != doomed.id]
    assert kept == finished
    assert list(mallorys.agents) == []
