"""Tracing in one process: the embedded default, its REST shim and its workers, each span
kept by the SDK's in-memory exporter (README.md, Tracing).

One execution is one trace: the REST request, the gRPC call it makes (client and server),
the job's insert and message, and the worker's claim, attempt, provider calls (each step
of a debate) and final transition.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentq.client.models import Job
from server import tracing
from tests.e2e import harness
from tests.e2e.harness import RestThread, ServerThread, token
from tests.e2e.rest_helpers import create_agent, http_client, submit, wait_for
from tests.e2e.trace_helpers import Span, Tree, from_sdk, wait_spans

EXECUTE = "POST /api/v1/agents/{id}/execute"
GRPC_EXECUTE = "/agentq.v1.AgentService/Execute"
DEBATE = {"enable_adversarial": True, "max_debate_rounds": 1, "enable_self_correction": False}


@dataclass
class Traced:
    exporter: InMemorySpanExporter
    server: ServerThread
    rest: RestThread

    def spans(self) -> list[Span]:
        return [from_sdk(span) for span in self.exporter.get_finished_spans()]


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[Traced]:
    """The embedded default and a shim, traced into an in-memory exporter."""
    exporter = InMemorySpanExporter()
    installed = tracing.install("serve", exporter=exporter)
    assert installed is not None
    try:
        settings = harness.settings_for(database_url=f"sqlite:///{tmp_path / 'agentq.db'}")
        with (
            harness.running_server(settings, in_process_workers=True) as server,
            harness.running_rest(
                f"127.0.0.1:{server.port}", tracer_provider=installed.provider
            ) as rest,
        ):
            yield Traced(exporter, server, rest)
    finally:
        installed.uninstall()


def _of_trace(tree: Tree, trace_id: str) -> Tree:
    return Tree(span for span in tree.spans if span.trace_id == trace_id)


def _finished(tree: Tree) -> bool:
    return any(span.name == "job.attempt" for span in tree.spans)


def test_one_execution_is_one_trace_from_the_request_to_the_final_transition(
    traced: Traced,
) -> None:
    with http_client(traced.rest.url, token()) as http:
        agent = create_agent(http)
        job_id = submit(http, agent["id"], "Explain queues.", **DEBATE)
        assert wait_for(http, job_id, ("completed",))["status"] == "completed"
        read = http.get(f"/api/v1/jobs/{job_id}")
    body = read.json()
    # Traced, a response carries no header of tracing's own: the wire stays vex-api's.
    assert not {"traceparent", "traceresponse", "tracestate"} & set(read.headers)
    trace_id = body["trace_id"]
    assert len(trace_id) == 32 and int(trace_id, 16)

    tree = _of_trace(wait_spans(traced.spans, _finished), trace_id)
    request = tree.one(EXECUTE)
    assert (request.kind, request.parent_id) == ("SERVER", None)
    # The gRPC call appears twice: the shim's client span and the server's span under it.
    client, server = sorted(tree.named(GRPC_EXECUTE), key=lambda s: s.kind)
    assert (client.kind, server.kind) == ("CLIENT", "SERVER")
    assert tree.parent(client) == request
    assert tree.parent(server) == client
    # The job's insert and its message, inside the server's span.
    inserts = [s for s in tree.named("INSERT jobs") if tree.parent(s) == server]
    assert len(inserts) == 1
    assert tree.parent(tree.one("job.enqueue")) == server
    # The worker joins the trace under the call that queued the job.
    attempt = tree.one("job.attempt")
    claim = tree.one("job.claim")
    assert tree.parent(attempt) == server and tree.parent(claim) == server
    assert attempt.attributes == {"agentq.job_id": job_id, "agentq.attempt": 1}
    # Every provider call is a step under the attempt: the debate's too.
    steps = [s for s in tree.spans if s.name.startswith("provider.")]
    assert {s.name for s in steps} >= {"provider.answer", "provider.critique", "provider.verdict"}
    assert all(tree.parent(s) == attempt for s in steps)
    assert sum(s.attributes["agentq.step.tokens"] for s in steps) > 0
    finish = tree.one("job.finish")
    assert tree.parent(finish) == attempt
    assert finish.attributes["agentq.outcome"] == "completed"
    # The final transition's statement is inside it.
    assert any(tree.parent(s) == finish for s in tree.named("UPDATE jobs"))


def test_a_job_queued_over_grpc_names_its_trace_there_too(traced: Traced) -> None:
    with traced.server.client(token()) as client:
        agent = client.create_agent()
        job_id = client.execute(agent.id).job_id
        job = client.wait_finished(job_id)
    assert job.HasField("trace_id")
    assert Job.from_proto(job).trace_id == job.trace_id  # the SDK's job names it too
    tree = _of_trace(wait_spans(traced.spans, _finished), job.trace_id)
    # No shim: the server's span is the root, and the attempt is under it.
    root = tree.one(GRPC_EXECUTE)
    assert (root.kind, root.parent_id) == ("SERVER", None)
    assert tree.ancestry(tree.one("provider.answer")) == [
        "provider.answer@serve",
        "job.attempt@serve",
        f"{GRPC_EXECUTE}@serve",
    ]


def test_with_tracing_off_the_job_body_has_no_trace_id(rest: RestThread) -> None:
    # The default: vex-api's job body, and no span anywhere (no exporter to keep one).
    assert not tracing.enabled()
    with http_client(rest.url, token()) as http:
        agent = create_agent(http)
        job_id = submit(http, agent["id"])
        body = wait_for(http, job_id, ("completed",))
        listed = http.get("/api/v1/jobs").json()["data"]
    assert "trace_id" not in body
    assert [job["job_id"] for job in listed] == [job_id]
    assert "trace_id" not in listed[0]


def test_reads_and_polls_are_traces_of_their_own(traced: Traced) -> None:
    with http_client(traced.rest.url, token()) as http:
        agent = create_agent(http)
        job_id = submit(http, agent["id"])
        body = wait_for(http, job_id, ("completed",))
    reads = wait_spans(traced.spans, lambda tree: bool(tree.named("GET /api/v1/jobs/{id}")))
    read = reads.named("GET /api/v1/jobs/{id}")[0]
    assert read.trace_id != body["trace_id"]
    assert read.parent_id is None
