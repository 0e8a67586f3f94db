"""The seed flow with adversarial verification, over REST and gRPC, on real servers and workers:
the events show each step in order, and the result's proof is recomputed from them; run in a
conversation context, the next execution sends the provider the first turn's final answer."""

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
from tests.e2e.fake_llm import Reply, fake_llm
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


# The check of both features at once, over the OpenAI-compatible provider (a fake
# server) so the messages each call sent can be read: a verified run in a context, whose
# revision is the turn the next execution sees.
CONTEXT = "seed-flow:1"
FIRST, SECOND = "Where should we go in May?", "And for how long?"
REVISED = "Lisbon, for the jacaranda bloom."
VERDICT = '{{"confidence": {}, "evidence": "{}"}}'
CONTEXT_SCRIPT = [
    # The first execution: a debate of two rounds, a low verdict, then a revision.
    Reply.answer("Lisbon.", 7),
    Reply.answer("Lisbon is crowded in May: say why it is still the choice.", 11),
    Reply.answer("The jacaranda bloom is worth the crowds.", 13),
    Reply.answer("NO MATERIAL ISSUES", 3),
    Reply.answer(VERDICT.format(0.4, "It gives no reason."), 5),
    Reply.answer(REVISED, 17),
    Reply.answer(VERDICT.format(0.9, "Specific and reasoned."), 5),
    # The second, on the same context: accepted at once.
    Reply.answer("Five days.", 9),
    Reply.answer("NO MATERIAL ISSUES", 3),
    Reply.answer(VERDICT.format(0.8, "It fits the trip."), 5),
]
# The critic finds nothing material in round 2, so that round has no defence.
FIRST_STEPS = [*DEBATED[:4], *DEBATED[5:]]
SECOND_STEPS = [("answer", 0), ("critique", 1), ("verdict", 0)]
# The second answer's call: the role, the first turn (its prompt and the revision), the prompt.
SECOND_ANSWER_SENT = [
    {"role": "system", "content": ROLE},
    {"role": "user", "content": FIRST},
    {"role": "assistant", "content": REVISED},
    {"role": "user", "content": SECOND},
]
OPENAI = {"provider": "openai", "openai_model": "test-model"}


def _assert_context_reached_only_the_answer(requests: list[dict[str, Any]]) -> None:
    """The second answer carries the first turn; no other call carries any history."""
    sent = [request["messages"] for request in requests]
    assert len(sent) == len(CONTEXT_SCRIPT)
    assert sent[7] == SECOND_ANSWER_SENT
    assert [len(messages) for index, messages in enumerate(sent) if index != 7] == [2] * 9


def test_a_verified_run_in_a_context_gives_the_next_execution_its_final_answer_over_rest(
    tmp_path: Path,
) -> None:
    with (
        fake_llm(CONTEXT_SCRIPT) as (llm, url),
        embedded_rest(tmp_path, openai_base_url=url, **OPENAI) as (_, rest),
        http_client(rest.url, token()) as http,
    ):
        agent = create_agent(http, name="integration-agent", role=ROLE)
        jobs, steps = [], []
        for prompt in (FIRST, SECOND):
            job_id = submit(http, agent["id"], prompt, context_id=CONTEXT, **VERIFIED)
            jobs.append(wait_for(http, job_id, FINISHED))
            events = read_stream(http, job_id)
            steps.append([event.data["step"] for event in events if event.name == "step"])
        turns = http.get(f"/api/v1/contexts/{CONTEXT}").json()["data"]

    assert [job["status"] for job in jobs] == ["completed"] * 2, jobs
    assert [[(s["kind"], s["round"]) for s in run] for run in steps] == [FIRST_STEPS, SECOND_STEPS]
    first, second = (job["result"] for job in jobs)
    assert (first["response"], first["verified"], first["confidence"]) == (REVISED, True, 0.9)
    assert (second["response"], second["verified"], second["confidence"]) == (
        "Five days.",
        True,
        0.8,
    )
    assert (first["debate_rounds"], second["debate_rounds"]) == (2, 1)
    assert (first["tokens_used"], second["tokens_used"]) == (61, 17)
    for result, run in zip((first, second), steps, strict=True):
        _assert_proven(result, run, agent["id"])
        assert result["new_context_id"] == CONTEXT
    # The answer step's hash is over this prompt alone, not the history sent with it.
    assert steps[1][0]["hash"] == _digest(
        {"agent_id": agent["id"], "prompt": SECOND, "response": "Five days.", "role": ROLE}
    )
    _assert_context_reached_only_the_answer(llm.requests)
    assert [(t["prompt"], t["response"]) for t in turns] == [
        (FIRST, REVISED),
        (SECOND, "Five days."),
    ]


def test_a_verified_run_in_a_context_gives_the_next_execution_its_final_answer_over_grpc(
    tmp_path: Path,
) -> None:
    with fake_llm(CONTEXT_SCRIPT) as (llm, url):
        settings = settings_for(
            database_url=f"sqlite:///{tmp_path / 'agentq.db'}", openai_base_url=url, **OPENAI
        )
        with (
            running_server(settings, in_process_workers=True) as server,
            server.client(token()) as alice,
        ):
            agent = alice.create_agent(role=ROLE)
            stub = jobs_grpc.JobServiceStub(alice.channel)
            jobs, steps = [], []
            for prompt in (FIRST, SECOND):
                ack = alice.execute(agent.id, prompt, context_id=CONTEXT, **VERIFIED)
                jobs.append(alice.wait_finished(ack.job_id))
                watch = jobs_pb.WatchJobRequest(job_id=ack.job_id)
                replies = stub.WatchJob(watch, metadata=alice.metadata, timeout=20)
                steps.append([r.event.step for r in replies if r.event.HasField("step")])

    kinds = [
        [(job_pb2.StepKind.Name(s.kind).removeprefix("STEP_KIND_").lower(), s.round) for s in run]
        for run in steps
    ]
    assert kinds == [FIRST_STEPS, SECOND_STEPS]
    assert [job.status for job in jobs] == [job_pb2.JOB_STATUS_COMPLETED] * 2
    first, second = (job.result for job in jobs)
    assert (first.response, first.verified, first.confidence) == (REVISED, True, 0.9)
    assert (second.debate_rounds, second.confidence, second.new_context_id) == (1, 0.8, CONTEXT)
    for result, run in zip((first, second), steps, strict=True):
        assert result.tokens_used == sum(step.tokens for step in run)
        assert result.merkle_root == _merkle_root([step.hash for step in run])
    _assert_context_reached_only_the_answer(llm.requests)
