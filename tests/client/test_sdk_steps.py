"""The SDK reads the steps of a verified run, and the CLI shows a line for each."""

from __future__ import annotations

import pytest

from agentq.client import Client, EventType, JobStep
from agentq.client.render import follow
from tests.e2e.harness import ServerThread, token

PROMPT = "Summarise [wrong] the report."


def test_a_verified_runs_steps_and_verdict_reach_the_sdk(
    server: ServerThread, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bearer = token("alice", tenant="sdk-steps")
    with Client(url, token=bearer) as client, server.client(bearer) as raw:
        agent = client.agents.create(name="checked", role="You answer briefly.")
        # The SDK's execute has no verification options; the stub queues the job.
        ack = raw.execute(agent.id, PROMPT, enable_adversarial=True, max_debate_rounds=1)
        handle = client.job(ack.job_id)
        events = list(handle.events(timeout=30))
        job = handle.wait(timeout=30)

    steps = [event.step for event in events if event.type is EventType.STEP]
    assert [(s.kind, s.round) for s in steps if s is not None] == [
        ("answer", 0),
        ("critique", 1),
        ("defence", 1),
        ("verdict", 0),
    ]
    verdict = steps[-1]
    assert isinstance(verdict, JobStep) and verdict.confidence == 0.2
    assert job.result is not None
    assert (job.result.verified, job.result.confidence, job.result.debate_rounds) == (
        False,
        0.2,
        1,
    )
    assert job.result.tokens_used == sum(s.tokens for s in steps if s is not None)

    follow(events, as_json=False)
    shown = capsys.readouterr().err
    assert "step: critique round 1 (" in shown
    assert f"step: verdict ({verdict.tokens} tokens, confidence 0.2)" in shown
