"""Adversarial verification over the OpenAI-compatible provider: the exact messages of each
step, as a real chat-completions server receives them."""

from __future__ import annotations

import json
from typing import Any

from server.providers.openai_compat import OpenAICompatibleProvider
from server.store.events import StepKind
from server.worker import prompts
from server.worker.prompts import Turn
from tests.e2e.fake_llm import Reply, fake_llm
from tests.unit.debates import debate
from tests.world import PROMPT, World

ROLE = "You are a careful research assistant."
MODEL = "test-model"
FIRST = "Revenue grew 20% on exports."
CRITIQUE = "The report says 12%, not 20%."
DEFENCE = "I misread the table; it is 12%."
REVISED = "Revenue grew 12% on exports."


def _verdict(confidence: float, evidence: str) -> str:
    return json.dumps({"confidence": confidence, "evidence": evidence})


def _request(system: str, user: str) -> dict[str, Any]:
    """The body the provider sends for one step: the step's role, then its message."""
    return {
        "model": MODEL,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_each_step_sends_its_role_and_message_in_order_and_counts_reported_tokens(
    world: World,
) -> None:
    job = await debate(world, rounds=2, self_correction=True)
    replies = [
        Reply.answer(FIRST, 30),
        Reply.answer(CRITIQUE, 20),
        Reply.answer(DEFENCE, 18),
        Reply.answer(prompts.NOTHING_MATERIAL, 15),
        Reply.answer(_verdict(0.3, "It says 20%; the report says 12%."), 25),
        Reply.answer(REVISED, 28),
        Reply.answer("```json\n" + _verdict(0.95, "Matches the report.") + "\n```", 26),
    ]
    with fake_llm(replies) as (llm, base_url):
        provider = OpenAICompatibleProvider(
            base_url=base_url, api_key=None, model=MODEL, timeout_s=5, max_connections=4
        )
        try:
            row = await job.run(job.runner(provider))
        finally:
            await provider.aclose()

    one = [Turn(StepKind.CRITIQUE, 1, CRITIQUE), Turn(StepKind.DEFENCE, 1, DEFENCE)]
    debated = [*one, Turn(StepKind.CRITIQUE, 2, prompts.NOTHING_MATERIAL)]
    evidence = "It says 20%; the report says 12%."
    assert llm.requests == [
        _request(ROLE, PROMPT),
        _request(prompts.CRITIC, prompts.critique_message(PROMPT, FIRST, [])),
        _request(
            prompts.blue_role(ROLE, prompts.DEFENDER),
            prompts.defence_message(PROMPT, FIRST, one[:1]),
        ),
        _request(prompts.CRITIC, prompts.critique_message(PROMPT, FIRST, one)),
        _request(prompts.JUDGE, prompts.verdict_message(PROMPT, FIRST, debated)),
        _request(
            prompts.blue_role(ROLE, prompts.REVISER),
            prompts.revision_message(PROMPT, FIRST, debated, evidence),
        ),
        _request(
            prompts.JUDGE,
            prompts.verdict_message(PROMPT, REVISED, [], earlier_evidence=evidence),
        ),
    ]
    assert (row.status, row.response, row.verified, row.confidence) == (
        "completed",
        REVISED,
        True,
        0.95,
    )
    assert (row.tokens_used, row.debate_rounds) == (30 + 20 + 18 + 15 + 25 + 28 + 26, 2)
    # The critic is told the exact answer agentq reads as "nothing material".
    critic_message = llm.requests[1]["messages"][1]["content"]
    assert critic_message.startswith("agentq step: critique\n<question>\n" + PROMPT)
    assert critic_message.endswith(
        f"answer with exactly {prompts.NOTHING_MATERIAL} and nothing else."
    )
