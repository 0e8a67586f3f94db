"""The seed flow with adversarial verification, over REST and gRPC, on real servers and workers:
the events show each step in order, and the result's proof is recomputed from them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx

from agentq.v1 import job_pb2
from agentq.v1 import job_service_pb2 as jobs_pb
from agentq.v1 import job_service_pb2_grpc as jobs_grpc
from server.settings import Settings
from tests.e2e.harness import running_server, settings_for, token
from tests.e2e.rest_helpers import (
    FINISHED,
    create_agent,
    embedded_rest,
    http_client,
    read_stream,
    scaled_stack,
    submit,
    wait_for,
    with_latency,
)

ROLE = "You are a concise research assistant."
# The built-in provider's marker: the critic objects every round, the judge scores the
# answer low, and the revision (which drops the marker) is scored high.
WRONG = "Summarize [wrong] the benefits of queued agent execution in two sentences."
PLAIN = "Summarize the benefits of queued agent execution in two sentences."
VERIFIED = {"enable_adversarial": True, "max_debate_rounds": 2, "enable_self_correction": True}
DEBATED = [
    ("answer", 0),
    ("critique", 1),
    ("defence", 1),
    ("critique", 2),
    ("defence", 2),
    ("verdict", 0),
    ("revision", 0),
    ("verdict", 0),
]
# The built-in provider streams an answer in four pieces when it has a latency.
LATENCY_MS = 20


def _digest(document: dict[str, str]) -> str:
    """SHA-256 of canonical JSON, as docs/contract.md §3 has clients recompute it."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _merkle_root(hashes: list[str]) -> str:
    """The binary Merkle root of the contract: pairs hashed, an odd node carried up."""
    level = [bytes.fromhex(h) for h in hashes]
    while len(level) > 1:
        pairs = [
            hashlib.sha256(level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
        ]
        level = pairs + ([level[-1]] if len(level) % 2 else [])
    return level[0].hex()


def _assert_proven(result: dict[str, Any], steps: list[dict[str, Any]], agent_id: str) -> None:
    """tokens_used, merkle_root, context_hash and the verdict, all from the step events."""
    assert result["tokens_used"] == sum(step["tokens"] for step in steps)
    assert result["merkle_root"] == _merkle_root([step["hash"] for step in steps])
    assert result["context_hash"] == _digest(
        {
            "agent_id": agent_id,
            "prompt": result["prompt"],
            "response": result["response"],
            "role": ROLE,
        }
    )
    last_verdict = [step for step in steps if step["kind"] == "verdict"][-1]
    assert result["confidence"] == last_verdict["confidence"]
    assert result["verified"] is (last_verdict["confidence"] >= 0.7)


def _run_the_seed_flow(http: httpx.Client) -> None:
    agent = create_agent(http, name="integration-agent", role=ROLE)
    job_id = submit(http, agent["id"], WRONG, context_id=None, **VERIFIED)
    job = wait_for(http, job_id, FINISHED)
    events = read_stream(http, job_id)

    assert job["status"] == "completed", job
    steps = [event.data["step"] for event in events if event.name == "step"]
    assert [(step["kind"], step["round"]) for step in steps] == DEBATED
    assert [event.name for event in events][:2] == ["queued", "started"]
    assert events[-1].name == "completed"
    result = job["result"]
    assert (
        result["response"]
        == "Revised: Summarize the benefits of queued agent execution in two sentences."
    )
    assert (result["verified"], result["confidence"], result["debate_rounds"]) == (True, 0.9, 2)
    assert [step["confidence"] for step in steps if step["kind"] == "verdict"] == [0.2, 0.9]
    _assert_proven(result, steps, agent["id"])
    # Only the answer shown streamed: the revision, after the first verdict.
    names = [event.name for event in events]
    first_token = names.index("token")
    assert (
        names[first_token - 1] == "step"
        and events[first_token - 1].data["step"]["kind"] == "verdict"
    )
    assert "".join(e.data["delta"] for e in events if e.name == "token") == result["response"]


def test_the_seed_flow_with_verification_over_rest_on_the_embedded_default(tmp_path: Path) -> None:
    with (
        embedded_rest(tmp_path, builtin_latency_ms=LATENCY_MS) as (_, rest),
        http_client(rest.url, token()) as http,
    ):
        _run_the_seed_flow(http)


def test_the_seed_flow_with_verification_on_postgres_and_redis_with_worker_processes(
    scaled_settings: Settings,
) -> None:
    with scaled_stack(with_latency(scaled_settings, LATENCY_MS / 1000), count=1) as (_, http):
        _run_the_seed_flow(http)


def test_an_answer_the_critic_accepts_is_judged_once_and_shown_after_the_verdict(
    tmp_path: Path,
) -> None:
    with (
        embedded_rest(tmp_path, builtin_latency_ms=LATENCY_MS) as (_, rest),
        http_client(rest.url, token()) as http,
    ):
        agent = create_agent(http, role=ROLE)
        job_id = submit(http, agent["id"], PLAIN, **VERIFIED)
        job = wait_for(http, job_id, FINISHED)
        events = read_stream(http, job_id)

    assert [event.name for event in events] == [
        "queued",
        "started",
        "step",
        "step",
        "step",
        "token",
        "completed",
    ]
    steps = [event.data["step"] for event in events if event.name == "step"]
    assert [step["kind"] for step in steps] == ["answer", "critique", "verdict"]
    result = job["result"]
    assert (result["verified"], result["confidence"], result["debate_rounds"]) == (True, 0.9, 1)
    assert events[5].data["delta"] == result["response"]
    _assert_proven(result, steps, agent["id"])


def test_an_agents_verification_prompts_are_kept_and_checked_over_rest(tmp_path: Path) -> None:
    with (
        embedded_rest(tmp_path) as (_, rest),
        http_client(rest.url, token()) as http,
    ):
        agent = create_agent(http, verification={"critic": "  Be harsh.  ", "judge": None})
        refused = http.post(
            "/api/v1/agents",
            json={"name": "a", "role": ROLE, "verification": {"defender": " "}},
        )
        read = http.get(f"/api/v1/agents/{agent['id']}").json()

    expected = {"critic": "Be harsh.", "defender": None, "judge": None, "reviser": None}
    assert agent["verification"] == read["verification"] == expected
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["message"] == (
        "Invalid verification.defender: must be 1 to 2000 characters after trimming"
    )


def test_the_steps_stream_over_grpc_and_prove_the_result(tmp_path: Path) -> None:
    settings = settings_for(
        database_url=f"sqlite:///{tmp_path / 'agentq.db'}", builtin_latency_ms=LATENCY_MS
    )
    with (
        running_server(settings, in_process_workers=True) as server,
        server.client(token()) as alice,
    ):
        agent = alice.create_agent(role=ROLE)
        ack = alice.execute(agent.id, WRONG, **VERIFIED)
        job = alice.wait_finished(ack.job_id)
        request = jobs_pb.WatchJobRequest(job_id=ack.job_id)
        stub = jobs_grpc.JobServiceStub(alice.channel)
        replies = list(stub.WatchJob(request, metadata=alice.metadata, timeout=20))

    events = [reply.event for reply in replies]
    steps = [event.step for event in events if event.type == job_pb2.JOB_EVENT_TYPE_STEP]
    kinds = [
        (job_pb2.StepKind.Name(s.kind).removeprefix("STEP_KIND_").lower(), s.round) for s in steps
    ]
    assert kinds == DEBATED
    assert job.status == job_pb2.JOB_STATUS_COMPLETED
    result = job.result
    assert (result.verified, result.confidence, result.debate_rounds) == (True, 0.9, 2)
    assert result.tokens_used == sum(step.tokens for step in steps)
    assert result.merkle_root == _merkle_root([step.hash for step in steps])
    assert [s.confidence for s in steps if s.HasField("confidence")] == [0.2, 0.9]
    assert events[-1].result.merkle_root == result.merkle_root
