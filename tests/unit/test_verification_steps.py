"""Adversarial verification: each call of a run is a step, in order, and the judge decides."""

from __future__ import annotations

import pytest

from server.providers.base import Completion
from server.store.events import StepKind
from server.validation import VerificationPrompts
from server.worker import prompts
from server.worker.hashes import context_hash, merkle_root
from server.worker.prompts import PromptSet, Turn
from server.worker.verification import VerifyConfig
from tests.fakes.provider import ProviderCall, ScriptedProvider, Stream
from tests.unit.debates import ANSWER, NOTHING, critique, debate, defence, verdict
from tests.world import PROMPT, World

ROLE = "You are a careful research assistant."
CRITIQUE = StepKind.CRITIQUE
DEFENCE = StepKind.DEFENCE


async def test_a_debate_runs_its_rounds_in_order_then_the_judge_scores_the_answer(
    world: World,
) -> None:
    job = await debate(world, rounds=2)
    provider = ScriptedProvider(
        ANSWER, critique("c1"), defence("d1"), critique("c2"), defence("d2"), verdict(0.8)
    )

    row = await job.run(job.runner(provider))

    assert await job.kinds() == [
        ("answer", 0),
        ("critique", 1),
        ("defence", 1),
        ("critique", 2),
        ("defence", 2),
        ("verdict", 0),
    ]
    types = [event.type for event in await job.events()]
    assert types == ["queued", "started", *["step"] * 6, "completed"]
    assert (row.status, row.response, row.verified, row.confidence, row.debate_rounds) == (
        "completed",
        ANSWER.text,
        True,
        0.8,
        2,
    )
    # Each call got the material of its step: the critic and the judge see the debate so
    # far, the agent defends in its own role.
    one = [Turn(CRITIQUE, 1, "c1")]
    two = [*one, Turn(DEFENCE, 1, "d1"), Turn(CRITIQUE, 2, "c2")]
    blue = prompts.blue_role(ROLE, prompts.DEFENDER)
    assert provider.calls == [
        ProviderCall(ROLE, PROMPT),
        ProviderCall(prompts.CRITIC, prompts.critique_message(PROMPT, ANSWER.text, [])),
        ProviderCall(blue, prompts.defence_message(PROMPT, ANSWER.text, one)),
        ProviderCall(prompts.CRITIC, prompts.critique_message(PROMPT, ANSWER.text, two[:2])),
        ProviderCall(blue, prompts.defence_message(PROMPT, ANSWER.text, two)),
        ProviderCall(
            prompts.JUDGE,
            prompts.verdict_message(PROMPT, ANSWER.text, [*two, Turn(DEFENCE, 2, "d2")]),
        ),
    ]
    assert provider.calls[0].streams  # the answer shown streams; no other call does
    assert not any(call.streams for call in provider.calls[1:])


async def test_the_debate_ends_at_the_first_round_whose_critique_is_not_material(
    world: World,
) -> None:
    job = await debate(world, rounds=5)
    provider = ScriptedProvider(ANSWER, critique(), defence(), NOTHING, verdict(0.9))

    row = await job.run(job.runner(provider))

    assert await job.kinds() == [
        ("answer", 0),
        ("critique", 1),
        ("defence", 1),
        ("critique", 2),
        ("verdict", 0),
    ]
    assert (row.debate_rounds, row.verified, row.confidence) == (2, True, 0.9)


async def test_the_critics_sentinel_is_read_without_regard_to_case_or_a_final_stop(
    world: World,
) -> None:
    job = await debate(world, rounds=3)
    said = Completion(text="  No material issues.\n", tokens_used=4)
    provider = ScriptedProvider(ANSWER, said, verdict(0.9))

    row = await job.run(job.runner(provider))

    assert await job.kinds() == [("answer", 0), ("critique", 1), ("verdict", 0)]
    assert row.debate_rounds == 1


async def test_a_verdict_that_cannot_be_read_is_asked_for_again_then_counts_as_confidence_0(
    world: World,
) -> None:
    job = await debate(world, rounds=1)
    first = Completion(text="Looks right to me.", tokens_used=4)
    second = Completion(text='{"confidence": "high", "evidence": "Fine."}', tokens_used=6)
    provider = ScriptedProvider(ANSWER, NOTHING, first, second)

    row = await job.run(job.runner(provider))

    assert (row.status, row.verified, row.confidence) == ("completed", False, 0.0)
    verdicts = (await job.steps())[-2:]
    assert [(v.step_kind, v.step_confidence) for v in verdicts] == [
        ("verdict", None),  # not counted: the judge was asked again
        ("verdict", 0.0),
    ]
    assert verdicts[0].step_evidence is not None
    assert verdicts[0].step_evidence.startswith("The judge's verdict could not be read: it is not")
    assert verdicts[1].step_evidence == (
        "The judge's verdict could not be read: confidence is not a number from 0 to 1"
    )
    debate_turns = [Turn(CRITIQUE, 1, NOTHING.text)]
    asked_again = prompts.verdict_message(
        PROMPT,
        ANSWER.text,
        debate_turns,
        unreadable=verdicts[0].step_evidence.removeprefix(
            "The judge's verdict could not be read: "
        ),
    )
    assert provider.calls[-1] == ProviderCall(prompts.JUDGE, asked_again)
    assert "<unreadable>" in provider.calls[-1].prompt


async def test_a_verdict_read_when_asked_again_counts(world: World) -> None:
    job = await debate(world, rounds=1)
    provider = ScriptedProvider(ANSWER, NOTHING, Completion("0.8", 2), verdict(0.75))

    row = await job.run(job.runner(provider))

    assert (row.verified, row.confidence) == (True, 0.75)
    assert [s.step_confidence for s in await job.steps()][-2:] == [None, 0.75]


@pytest.mark.parametrize(("confidence", "verified"), [(0.69, False), (0.7, True), (1, True)])
async def test_an_answer_is_verified_when_the_confidence_reaches_the_threshold(
    world: World, confidence: float, verified: bool
) -> None:
    job = await debate(world, rounds=1)
    provider = ScriptedProvider(ANSWER, NOTHING, verdict(confidence))

    row = await job.run(job.runner(provider, verify=VerifyConfig(threshold=0.7)))

    assert (row.verified, row.confidence) == (verified, confidence)


async def test_without_self_correction_a_low_verdict_leaves_the_answer_unverified(
    world: World,
) -> None:
    job = await debate(world, rounds=1)
    provider = ScriptedProvider(ANSWER, critique(), defence(), verdict(0.2, "The figure is off."))

    row = await job.run(job.runner(provider))

    assert (row.response, row.verified, row.confidence) == (ANSWER.text, False, 0.2)
    assert len(provider.calls) == 4


async def test_self_correction_revises_an_answer_under_the_threshold_and_the_revision_counts(
    world: World,
) -> None:
    job = await debate(world, rounds=1, self_correction=True)
    first = Stream(("Revenue grew ", "20%."), tokens_used=40)
    revised = Stream(("Revenue grew ", "12%."), tokens_used=30)
    provider = ScriptedProvider(
        first, critique(), defence(), verdict(0.3, "20% is wrong."), revised, verdict(0.85)
    )

    row = await job.run(job.runner(provider))

    assert await job.kinds() == [
        ("answer", 0),
        ("critique", 1),
        ("defence", 1),
        ("verdict", 0),
        ("revision", 0),
        ("verdict", 0),
    ]
    assert (row.response, row.verified, row.confidence) == ("Revenue grew 12%.", True, 0.85)
    # Only the answer shown streams: the first was held back, the revision streamed.
    events = await job.events()
    assert "".join(e.delta or "" for e in events if e.type == "token") == "Revenue grew 12%."
    assert [call.streams for call in provider.calls] == [False, False, False, False, True, False]
    turns = [Turn(CRITIQUE, 1, critique().text), Turn(DEFENCE, 1, defence().text)]
    assert provider.calls[4] == ProviderCall(
        prompts.blue_role(ROLE, prompts.REVISER),
        prompts.revision_message(PROMPT, "Revenue grew 20%.", turns, "20% is wrong."),
    )
    assert provider.calls[5] == ProviderCall(
        prompts.JUDGE,
        prompts.verdict_message(PROMPT, "Revenue grew 12%.", [], earlier_evidence="20% is wrong."),
    )
    # The result's proof is of the response it shows.
    assert row.context_hash == context_hash(
        agent_id=job.agent.id, role=ROLE, prompt=PROMPT, response="Revenue grew 12%."
    )


async def test_a_revision_keeps_its_own_score_even_when_it_is_lower(world: World) -> None:
    job = await debate(world, rounds=1, self_correction=True)
    revised = Completion(text="Revenue fell.", tokens_used=3)
    provider = ScriptedProvider(ANSWER, NOTHING, verdict(0.5), revised, verdict(0.1))

    row = await job.run(job.runner(provider))

    assert (row.response, row.verified, row.confidence) == ("Revenue fell.", False, 0.1)


async def test_with_self_correction_an_answer_that_passes_is_shown_whole_after_the_verdict(
    world: World,
) -> None:
    job = await debate(world, rounds=1, self_correction=True)
    provider = ScriptedProvider(Stream(("Revenue ", "grew 12%."), 9), NOTHING, verdict(0.95))

    row = await job.run(job.runner(provider))

    events = [(e.type, e.step_kind, e.delta) for e in await job.events()]
    assert events[2:] == [
        ("step", "answer", None),
        ("step", "critique", None),
        ("step", "verdict", None),
        ("token", None, "Revenue grew 12%."),
        ("completed", None, None),
    ]
    assert (row.response, row.verified) == ("Revenue grew 12%.", True)


async def test_tokens_used_sums_every_step_and_merkle_root_is_the_root_of_their_hashes(
    world: World,
) -> None:
    job = await debate(world, rounds=2, self_correction=True)
    provider = ScriptedProvider(
        ANSWER, critique(), defence(), NOTHING, verdict(0.4), ANSWER, verdict(0.9)
    )

    row = await job.run(job.runner(provider))

    steps = await job.steps()
    assert (
        row.tokens_used == sum(step.step_tokens or 0 for step in steps) == 42 * 2 + 17 + 13 + 5 + 22
    )
    assert row.merkle_root == merkle_root([step.step_hash or "" for step in steps])
    # Anyone holding a step's call can recompute its hash, as context_hash is made.
    for step, call in zip(steps, provider.calls, strict=True):
        assert step.step_hash == context_hash(
            agent_id=job.agent.id,
            role=call.system,
            prompt=call.prompt,
            response=step.step_text or "",
        )
    assert steps[0].step_hash == context_hash(
        agent_id=job.agent.id, role=ROLE, prompt=PROMPT, response=ANSWER.text
    )


async def test_a_job_without_adversarial_makes_one_call_and_records_no_step(world: World) -> None:
    job = await debate(world, adversarial=False, self_correction=True)

    row = await job.run(job.runner(ScriptedProvider(ANSWER)))

    assert await job.steps() == []
    assert (row.verified, row.confidence, row.debate_rounds) == (False, None, 0)
    assert row.merkle_root == row.context_hash


async def test_an_agents_own_prompts_win_over_the_deployments_which_win_over_the_defaults(
    world: World,
) -> None:
    own = VerificationPrompts(critic="Be a harsh critic.", reviser="Fix it.").to_json()
    job = await debate(world, rounds=1, self_correction=True, verification=own)
    deployment = PromptSet(critic="Deployment critic.", judge="Deployment judge.")
    provider = ScriptedProvider(ANSWER, critique(), defence(), verdict(0.1), ANSWER, verdict(0.9))

    await job.run(job.runner(provider, verify=VerifyConfig(prompts=deployment)))

    assert [call.system for call in provider.calls] == [
        ROLE,
        "Be a harsh critic.",
        prompts.blue_role(ROLE, prompts.DEFENDER),
        "Deployment judge.",
        prompts.blue_role(ROLE, "Fix it."),
        "Deployment judge.",
    ]


async def test_step_events_keep_every_field_on_postgres(pg_world: World) -> None:
    job = await debate(pg_world, rounds=1)
    provider = ScriptedProvider(ANSWER, NOTHING, verdict(0.8, "Checked."))

    row = await job.run(job.runner(provider))

    last = (await job.steps())[-1]
    assert (last.step_kind, last.step_round, last.step_tokens) == ("verdict", 0, 11)
    assert (last.step_confidence, last.step_evidence) == (0.8, "Checked.")
    assert last.step_text == verdict(0.8, "Checked.").text
    assert row.merkle_root == merkle_root([s.step_hash or "" for s in await job.steps()])
