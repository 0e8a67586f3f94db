"""An agent's verification prompts, step events and debate_rounds, from the rules to the wire."""

from __future__ import annotations

import pytest

from agentq.v1 import agent_pb2, job_pb2
from rest_shim import render
from server.api.convert import agent_message, event_message, job_message, verification_prompts
from server.errors import InvalidArgument
from server.validation import AgentSpec, VerificationPrompts, agent_spec
from tests.fakes.provider import ScriptedProvider
from tests.unit.debates import NOTHING, debate, verdict
from tests.world import ALICE, ANSWER, World, agent_request

ROLE = "You are a careful research assistant."
LENGTH = "must be 1 to 2000 characters after trimming"


def _spec(prompts: VerificationPrompts) -> AgentSpec:
    return agent_spec(
        name="Researcher", role=ROLE, max_depth=None, spawn_shadow=False, verification=prompts
    )


def test_verification_prompts_are_kept_trimmed_and_only_those_given() -> None:
    spec = agent_spec(
        name="a",
        role=ROLE,
        max_depth=None,
        spawn_shadow=False,
        verification=VerificationPrompts(critic="  Be harsh.  ", judge="Be fair."),
    )

    assert spec.verification == VerificationPrompts(critic="Be harsh.", judge="Be fair.")
    assert spec.verification.to_json() == '{"critic": "Be harsh.", "judge": "Be fair."}'
    assert VerificationPrompts.from_json(spec.verification.to_json()) == spec.verification
    assert VerificationPrompts().to_json() is None


def test_every_broken_verification_prompt_is_reported_at_once_naming_its_field() -> None:
    prompts = VerificationPrompts(
        critic="  ", defender="x" * 2001, judge="ok\x00", reviser="x" * 2000
    )

    with pytest.raises(InvalidArgument) as error:
        _spec(prompts)

    assert [(v.field, v.description) for v in error.value.violations] == [
        ("verification.critic", f"Invalid verification.critic: {LENGTH}"),
        ("verification.defender", f"Invalid verification.defender: {LENGTH}"),
        ("verification.judge", "Invalid verification.judge: must not contain NUL characters"),
    ]


async def test_an_agents_prompts_are_stored_and_read_back_over_grpc_and_rest(
    world: World,
) -> None:
    request = agent_request()
    own = VerificationPrompts(critic="Be harsh.", reviser="Fix it.")
    spec = agent_spec(
        name=request.name, role=request.role, max_depth=None, spawn_shadow=False, verification=own
    )
    created = await world.agents.create_agent(ALICE, spec)

    read = await world.agents.get_agent(ALICE, created.id)
    message = agent_message(read)

    assert message.verification == agent_pb2.VerificationPrompts(
        critic="Be harsh.", reviser="Fix it."
    )
    assert verification_prompts(message.verification) == own
    assert render.agent(message)["verification"] == {
        "critic": "Be harsh.",
        "defender": None,
        "judge": None,
        "reviser": "Fix it.",
    }
    plain = await world.agents.create_agent(ALICE, request)
    assert not agent_message(plain).HasField("verification")
    assert render.agent(agent_message(plain))["verification"] is None


async def test_a_step_event_and_the_result_reach_grpc_and_rest_whole(world: World) -> None:
    job = await debate(world, rounds=1)
    await job.run(job.runner(ScriptedProvider(ANSWER, NOTHING, verdict(0.8, "Checked."))))
    row = await job.row()
    events = await job.events()

    verdict_event = event_message(events[-2], row)
    name, data = render.event(verdict_event)

    assert verdict_event.type == job_pb2.JOB_EVENT_TYPE_STEP
    assert (name, data["step"]) == (
        "step",
        {
            "kind": "verdict",
            "round": 0,
            "tokens": 11,
            "hash": events[-2].step_hash,
            "text": verdict(0.8, "Checked.").text,
            "confidence": 0.8,
            "evidence": "Checked.",
        },
    )
    critique = render.event(event_message(events[-3], row))[1]["step"]
    assert (critique["kind"], critique["round"], critique["confidence"]) == ("critique", 1, None)
    result = render.job(job_message(row))["result"]
    assert (result["debate_rounds"], result["verified"], result["confidence"]) == (1, True, 0.8)
    assert "step" not in render.event(event_message(events[0], row))[1]
