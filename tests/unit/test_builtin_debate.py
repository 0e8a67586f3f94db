"""The built-in provider debates by its markers, so verification runs whole without a network."""

from __future__ import annotations

import asyncio

import pytest

from server.providers import builtin_debate
from server.providers.builtin import BuiltinProvider
from server.store.models import JobStatus
from server.worker import prompts
from server.worker.hashes import merkle_root
from server.worker.verification import VerifyConfig
from tests.unit.debates import debate
from tests.world import World

BUILTIN = BuiltinProvider(latency_ms=0)
ROLE = "You are a careful research assistant."


def test_it_ends_a_debate_with_the_sentinel_agentq_reads() -> None:
    assert builtin_debate.NOTHING_MATERIAL == prompts.NOTHING_MATERIAL


def test_a_plain_prompt_with_a_marker_is_still_echoed() -> None:
    answer = asyncio.run(BUILTIN.complete(system="You are terse.", prompt="Is [wrong] a word?"))

    assert answer.text == 'As "You are terse.": Is [wrong] a word?'


async def test_an_answer_marked_wrong_is_debated_every_round_scored_low_and_revised(
    world: World,
) -> None:
    prompt = "Summarise [wrong] the quarterly report."
    job = await debate(world, rounds=2, self_correction=True, prompt=prompt)

    row = await job.run(job.runner(BUILTIN))

    assert await job.kinds() == [
        ("answer", 0),
        ("critique", 1),
        ("defence", 1),
        ("critique", 2),
        ("defence", 2),
        ("verdict", 0),
        ("revision", 0),
        ("verdict", 0),
    ]
    confidences = [s.step_confidence for s in await job.steps() if s.step_kind == "verdict"]
    assert confidences == [builtin_debate.LOW, builtin_debate.HIGH]
    assert (row.status, row.response) == (
        JobStatus.COMPLETED,
        "Revised: Summarise the quarterly report.",
    )
    assert (row.verified, row.confidence, row.debate_rounds) == (True, 0.9, 2)
    steps = await job.steps()
    assert row.tokens_used == sum(s.step_tokens or 0 for s in steps)
    assert row.merkle_root == merkle_root([s.step_hash or "" for s in steps])


async def test_an_ordinary_answer_draws_no_critique_and_a_high_score(world: World) -> None:
    job = await debate(world, rounds=3)

    row = await job.run(job.runner(BUILTIN))

    assert await job.kinds() == [("answer", 0), ("critique", 1), ("verdict", 0)]
    assert (row.verified, row.confidence, row.debate_rounds) == (True, 0.9, 1)
    assert row.response == f'As "{ROLE}": Summarise the quarterly report.'


@pytest.mark.parametrize(
    ("marker", "confidences", "verified"),
    [("[garbled]", [None, 0.0], False), ("[garbled-once]", [None, 0.9], True)],
)
async def test_a_garbled_verdict_is_asked_for_again(
    world: World, marker: str, confidences: list[float | None], verified: bool
) -> None:
    job = await debate(world, rounds=1, prompt=f"Summarise {marker} the report.")

    row = await job.run(job.runner(BUILTIN))

    verdicts = [s for s in await job.steps() if s.step_kind == "verdict"]
    assert [v.step_confidence for v in verdicts] == confidences
    assert (row.status, row.verified) == (JobStatus.COMPLETED, verified)


async def test_a_prompt_marked_unsafe_is_rejected_by_the_safety_judge(world: World) -> None:
    job = await debate(world, adversarial=False, prompt="Tell me [unsafe] things.")

    row = await job.run(job.runner(BUILTIN, verify=VerifyConfig(safety_judge=True)))

    assert (row.status, row.error) == (
        JobStatus.FAILED,
        "Safety judge rejected input: The prompt is marked [unsafe].",
    )
