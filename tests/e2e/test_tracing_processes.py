"""Tracing across processes: `agentq serve --no-rest`, `agentq rest` and `agentq worker` on
PostgreSQL and Redis, each exporting over OTLP/gRPC to a receiver the test runs.

Turned on by OTEL_EXPORTER_OTLP_ENDPOINT alone, as an operator would: the shim's span,
the gRPC call it makes, the worker's attempt and its provider call share one trace, the
one the job names, and a retry's attempt on a worker joins it too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from bench.fake_openai import FakeOpenAI
from server.settings import Settings
from tests.e2e.cli_helpers import free_port
from tests.e2e.harness import (
    SERVE_START_TIMEOUT_S,
    env_for,
    token,
)
from tests.e2e.rest_helpers import create_agent, get_job, http_client, submit, wait_for
from tests.e2e.trace_helpers import OtlpReceiver, Tree, wait_spans
from tests.processes import ChildProcess, agentq_command, popen

EXECUTE = "POST /api/v1/agents/{id}/execute"
GRPC_EXECUTE = "/agentq.v1.AgentService/Execute"


def _started(command: list[str], env: dict[str, str], ready: str) -> ChildProcess:
    child = ChildProcess(popen(command, env=env)).start_reading()
    if child.wait_line(ready, timeout_s=SERVE_START_TIMEOUT_S) is None:
        child.stop()
        raise AssertionError(f"{command[3]} did not start:\n{child.output}")
    return child


@pytest.fixture
def stack(scaled_settings: Settings, fake: FakeOpenAI) -> Iterator[tuple[OtlpReceiver, str]]:
    """The receiver, and the REST URL of three traced processes on the scaled-out stores."""
    with ExitStack() as stack:
        receiver = stack.enter_context(OtlpReceiver())
        grpc_port, http_port = free_port(), free_port()
        settings = scaled_settings.model_copy(
            update={
                "provider": "openai",
                "openai_base_url": fake.base_url,
                "max_attempts": 2,
                "grpc_addr": f"127.0.0.1:{grpc_port}",
                "http_addr": f"127.0.0.1:{http_port}",
            }
        )
        env = {
            **env_for(settings),
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            # A batch goes out every 100 ms, not every 5 s.
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "AGENTQ_GRPC_TARGET": f"127.0.0.1:{grpc_port}",
        }
        children: list[ChildProcess] = []
        # One after the other, callers first: stopped together, the gRPC server waits
        # seconds for the shim's channel to go.
        stack.callback(lambda: [child.stop() for child in reversed(children)])
        children.append(_started(agentq_command("worker"), env, "agentq worker ready"))
        children.append(
            _started(agentq_command("serve", "--no-rest"), env, "agentq gRPC listening")
        )
        children.append(_started(agentq_command("rest"), env, "agentq REST listening"))
        yield receiver, f"http://127.0.0.1:{http_port}"


def _trace(receiver: OtlpReceiver, trace_id: str, *, attempts: int) -> Tree:
    def complete(tree: Tree) -> bool:
        ours = [s for s in tree.named("job.finish") if s.trace_id == trace_id]
        requests = [s for s in tree.named(EXECUTE) if s.trace_id == trace_id]
        return len(ours) == attempts and len(requests) == 1

    tree = wait_spans(receiver.spans, complete)
    return Tree(span for span in tree.spans if span.trace_id == trace_id)


# One test: the three processes take seconds to start, and both executions share them.
def test_three_processes_make_one_trace_per_execution_and_a_retry_keeps_it(
    stack: tuple[OtlpReceiver, str],
) -> None:
    receiver, url = stack
    with http_client(url, token()) as http:
        agent = create_agent(http)
        job_id = submit(http, agent["id"], "Explain tracing.")
        wait_for(http, job_id, ("completed",))
        trace_id = get_job(http, job_id)["trace_id"]
        # The fake provider answers 503, retried once (max_attempts 2), then the job fails.
        retried_id = submit(http, agent["id"], "[status=503] Explain tracing.")
        retried = wait_for(http, retried_id, ("failed",))
    assert retried["attempts"] == 2
    _one_trace(_trace(receiver, trace_id, attempts=1))
    _retried_in_one_trace(_trace(receiver, retried["trace_id"], attempts=2))


def _one_trace(tree: Tree) -> None:
    # REST -> gRPC -> worker -> provider, each hop in its own process.
    assert tree.ancestry(tree.one("provider.answer")) == [
        "provider.answer@worker",
        "job.attempt@worker",
        f"{GRPC_EXECUTE}@serve",
        f"{GRPC_EXECUTE}@rest",
        f"{EXECUTE}@rest",
    ]
    assert tree.parent(tree.one("job.finish")) == tree.one("job.attempt")
    assert tree.one("job.finish").attributes["agentq.outcome"] == "completed"
    assert tree.parent(tree.one("job.claim")).name == GRPC_EXECUTE
    # PostgreSQL stores a job and its first event in one statement.
    assert [s.process for s in tree.named("INSERT jobs")] == ["serve"]


def _retried_in_one_trace(tree: Tree) -> None:
    server = [s for s in tree.named(GRPC_EXECUTE) if s.kind == "SERVER"]
    attempts = sorted(tree.named("job.attempt"), key=lambda s: s.attributes["agentq.attempt"])
    assert [a.attributes["agentq.attempt"] for a in attempts] == [1, 2]
    assert all(tree.parent(a) == server[0] for a in attempts)
    outcomes = [
        next(f for f in tree.named("job.finish") if tree.parent(f) == a).attributes[
            "agentq.outcome"
        ]
        for a in attempts
    ]
    assert outcomes == ["retrying", "failed"]
    # The first message went out in the call, the retry's inside the first attempt.
    sent = {s.process: tree.parent(s) for s in tree.named("job.enqueue")}
    assert sent == {"serve": server[0], "worker": attempts[0]}
