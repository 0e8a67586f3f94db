"""The field rules of docs/contract.md §3 answer with their exact messages; values are trimmed."""

from __future__ import annotations

import pytest

from server.errors import InvalidArgument
from server.validation import (
    AgentSpec,
    ExecutionSpec,
    agent_spec,
    execution_spec,
    parse_context_id,
    parse_id,
)

NAME_LENGTH = "Invalid name: must be 1 to 100 characters after trimming"
NAME_CHARS = "Invalid name: only letters, digits, spaces, '-' and '_' are allowed"
ROLE_LENGTH = "Invalid role: must be 3 to 500 characters after trimming"
DEPTH_LIMIT = "max_depth exceeds safety limit of 10"
DEPTH_NEGATIVE = "Invalid max_depth: must not be negative"
PROMPT_LENGTH = "Invalid prompt: must be 1 to 50000 characters after trimming"
ROUNDS_RANGE = "Invalid max_debate_rounds: must be between 1 and 10"
CONTEXT_ID_RULE = "Invalid context_id: must be 1 to 128 characters of A-Za-z0-9._:-"

ROLE = "You are a careful research assistant."


def _agent(
    *, name: str = "Researcher", role: str = ROLE, max_depth: int | None = None
) -> AgentSpec:
    return agent_spec(name=name, role=role, max_depth=max_depth, spawn_shadow=False)


def _execution(
    *, prompt: str = "Summarise this.", rounds: int | None = None, context_id: str | None = None
) -> ExecutionSpec:
    return execution_spec(
        prompt=prompt,
        context_id=context_id,
        enable_adversarial=False,
        enable_self_correction=False,
        max_debate_rounds=rounds,
    )


def _violations(error: pytest.ExceptionInfo[InvalidArgument]) -> list[tuple[str, str]]:
    return [(v.field, v.description) for v in error.value.violations]


# Agents: name.


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", NAME_LENGTH),
        ("   ", NAME_LENGTH),
        ("a" * 101, NAME_LENGTH),
        ("bad!", NAME_CHARS),
        ("tab\tname", NAME_CHARS),
        ("dot.name", NAME_CHARS),
    ],
    ids=["empty", "whitespace-only", "101-chars", "exclamation", "tab", "dot"],
)
def test_a_bad_agent_name_is_rejected_with_the_reason(name: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        _agent(name=name)

    assert _violations(error) == [("name", message)]
    assert error.value.message == message


@pytest.mark.parametrize(
    "name",
    ["a", "a" * 100, "Research Bot-2_b", "  " + "a" * 100 + "  "],
    ids=["1-char", "100-chars", "every-kind", "100-chars-padded"],
)
def test_a_name_of_1_to_100_allowed_characters_after_trimming_is_accepted(name: str) -> None:
    assert _agent(name=name).name == name.strip()


def test_the_agent_name_is_stored_trimmed() -> None:
    assert _agent(name="  Research Bot  ").name == "Research Bot"


# Agents: role.


@pytest.mark.parametrize("role", ["ab", "  ab  ", "x" * 501], ids=["2", "2-padded", "501"])
def test_a_role_outside_3_to_500_characters_is_rejected(role: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        _agent(role=role)

    assert _violations(error) == [("role", ROLE_LENGTH)]


@pytest.mark.parametrize("role", ["abc", "x" * 500], ids=["3", "500"])
def test_a_role_of_3_to_500_characters_is_accepted(role: str) -> None:
    assert _agent(role=role).role == role


def test_the_role_is_stored_trimmed() -> None:
    assert _agent(role=f"\n  {ROLE}  \t").role == ROLE


# Agents: max_depth.


def test_max_depth_defaults_to_3() -> None:
    assert _agent(max_depth=None).max_depth == 3


@pytest.mark.parametrize("depth", [0, 10])
def test_max_depth_from_0_to_10_is_accepted(depth: int) -> None:
    assert _agent(max_depth=depth).max_depth == depth


@pytest.mark.parametrize(
    ("depth", "message"), [(11, DEPTH_LIMIT), (1000, DEPTH_LIMIT), (-1, DEPTH_NEGATIVE)]
)
def test_max_depth_outside_0_to_10_is_rejected(depth: int, message: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        _agent(max_depth=depth)

    assert _violations(error) == [("max_depth", message)]


def test_every_broken_agent_rule_is_reported_at_once_in_field_order() -> None:
    with pytest.raises(InvalidArgument) as error:
        _agent(name="bad!", role="ab", max_depth=11)

    assert _violations(error) == [
        ("name", NAME_CHARS),
        ("role", ROLE_LENGTH),
        ("max_depth", DEPTH_LIMIT),
    ]
    assert error.value.message == NAME_CHARS


def test_a_valid_agent_keeps_spawn_shadow() -> None:
    spec = agent_spec(name="a", role=ROLE, max_depth=None, spawn_shadow=True)

    assert spec == AgentSpec(name="a", role=ROLE, max_depth=3, spawn_shadow=True)


# Executions: prompt.


@pytest.mark.parametrize(
    "prompt", ["", "   \n\t ", "p" * 50_001], ids=["empty", "whitespace", "50001-chars"]
)
def test_a_prompt_outside_1_to_50000_characters_is_rejected(prompt: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        _execution(prompt=prompt)

    assert _violations(error) == [("prompt", PROMPT_LENGTH)]
    assert error.value.message == PROMPT_LENGTH


@pytest.mark.parametrize(
    "prompt", ["p", "p" * 50_000, "   " + "p" * 50_000 + "\n"], ids=["1", "50000", "padded"]
)
def test_a_prompt_of_1_to_50000_characters_after_trimming_is_accepted(prompt: str) -> None:
    assert _execution(prompt=prompt).prompt == prompt.strip()


def test_the_prompt_is_stored_trimmed() -> None:
    assert _execution(prompt="  What is 6 x 7?\n").prompt == "What is 6 x 7?"


# Executions: max_debate_rounds.


def test_max_debate_rounds_defaults_to_3() -> None:
    assert _execution(rounds=None).max_debate_rounds == 3


@pytest.mark.parametrize("rounds", [1, 10])
def test_max_debate_rounds_from_1_to_10_is_accepted(rounds: int) -> None:
    assert _execution(rounds=rounds).max_debate_rounds == rounds


@pytest.mark.parametrize("rounds", [0, 11, -1])
def test_max_debate_rounds_outside_1_to_10_is_rejected(rounds: int) -> None:
    with pytest.raises(InvalidArgument) as error:
        _execution(rounds=rounds)

    assert _violations(error) == [("max_debate_rounds", ROUNDS_RANGE)]


def test_every_broken_execution_rule_is_reported_at_once_in_field_order() -> None:
    with pytest.raises(InvalidArgument) as error:
        _execution(prompt=" ", rounds=0)

    assert _violations(error) == [("prompt", PROMPT_LENGTH), ("max_debate_rounds", ROUNDS_RANGE)]
    assert error.value.message == PROMPT_LENGTH


def test_a_valid_execution_keeps_its_options() -> None:
    spec = execution_spec(
        prompt="Hi",
        context_id="ctx-7",
        enable_adversarial=True,
        enable_self_correction=True,
        max_debate_rounds=5,
    )

    assert spec == ExecutionSpec(
        prompt="Hi",
        context_id="ctx-7",
        enable_adversarial=True,
        enable_self_correction=True,
        max_debate_rounds=5,
    )


# Executions: context_id.

GOOD_CONTEXT_IDS = ["c", "ctx-42", "user:7.session_2", "A" * 128, "0b7c2d56-2f4e-4a8e-9a51"]
BAD_CONTEXT_IDS = {
    "empty": "",
    "129-chars": "a" * 129,
    "space": "my context",
    "slash": "a/b",
    "trailing-newline": "ctx\n",
    "nul": "ctx\x00",
    "non-ascii": "ctx-é",
    "percent": "a%20b",
}


@pytest.mark.parametrize("context_id", GOOD_CONTEXT_IDS)
def test_a_context_id_of_1_to_128_allowed_characters_is_kept_as_sent(context_id: str) -> None:
    assert _execution(context_id=context_id).context_id == context_id
    assert parse_context_id(context_id) == context_id


@pytest.mark.parametrize("context_id", BAD_CONTEXT_IDS.values(), ids=BAD_CONTEXT_IDS.keys())
def test_a_context_id_outside_its_rule_is_rejected_with_the_rule(context_id: str) -> None:
    with pytest.raises(InvalidArgument) as in_execution:
        _execution(context_id=context_id)
    with pytest.raises(InvalidArgument) as alone:
        parse_context_id(context_id)

    for error in (in_execution, alone):
        assert _violations(error) == [("context_id", CONTEXT_ID_RULE)]
        assert error.value.message == CONTEXT_ID_RULE


def test_no_context_id_is_no_context() -> None:
    assert _execution(context_id=None).context_id is None


# Ids.


def test_an_uppercase_uuid_is_accepted_and_given_back_in_lowercase() -> None:
    assert (
        parse_id("0B7C2D56-2F4E-4A8E-9A51-6F0C5D1E8A01", "agent_id")
        == "0b7c2d56-2f4e-4a8e-9a51-6f0c5d1e8a01"
    )


@pytest.mark.parametrize("value", ["abc", "", "0b7c2d56-2f4e-4a8e-9a51-6f0c5d1e8a0z"])
def test_an_id_that_is_not_a_uuid_is_rejected_naming_its_field(value: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        parse_id(value, "agent_id")

    assert _violations(error) == [("agent_id", "Invalid agent_id: must be a UUID")]
    assert error.value.message == "Invalid agent_id: must be a UUID"
