"""A tenant reads its contexts' turns a page at a time, deletes them, and retention sweeps them
with their jobs; another tenant's context of the same name is a different, empty one."""

from __future__ import annotations

from datetime import timedelta

import pytest

from server.errors import InvalidArgument
from server.paging import Page
from server.store.records import TurnRecord
from server.worker.policy import RetryPolicy
from tests.unit.conversations import CONTEXT, Speaker, answer_to, turns
from tests.world import ALICE, BOB, START, World

RETENTION_S = 86400.0


@pytest.fixture
async def alice(world: World) -> Speaker:
    """ALICE with an agent of her tenant."""
    return Speaker(world, await world.add_agent())


async def _page(
    world: World, context_id: str = CONTEXT, *, size: int | None = None, token: str = ""
) -> Page[TurnRecord]:
    return await world.contexts.get_context(ALICE, context_id, size=size, token=token)


async def test_a_context_reads_its_turns_oldest_first_a_page_at_a_time(
    alice: Speaker, world: World
) -> None:
    jobs = [(await alice.say(prompt))[0] for prompt in ("one", "two", "three")]

    first = await _page(world, size=2)
    assert first.next_token is not None
    second = await _page(world, size=2, token=first.next_token)

    assert [(t.job_id, t.prompt, t.response) for t in [*first.items, *second.items]] == [
        (job, prompt, answer_to(prompt))
        for job, prompt in zip(jobs, ("one", "two", "three"), strict=True)
    ]
    # Each turn is stamped with its job's completion; the clock moved a second per turn.
    assert [t.created_at for t in first.items] == [START, START + timedelta(seconds=1)]
    assert (second.size, second.next_token) == (2, None)


async def test_a_context_without_turns_reads_as_empty(world: World) -> None:
    page = await _page(world, "never-used")

    assert (list(page.items), page.size, page.next_token) == ([], 20, None)


async def test_another_tenants_context_of_the_same_name_reads_as_empty_and_deletes_nothing(
    alice: Speaker, world: World
) -> None:
    await alice.say("alice's plan")

    bobs = await world.contexts.get_context(BOB, CONTEXT, size=None, token="")
    deleted = await world.contexts.delete_context(BOB, CONTEXT)

    assert (list(bobs.items), deleted) == ([], 0)
    assert [t.prompt for t in (await _page(world)).items] == ["alice's plan"]


async def test_a_page_token_of_one_context_is_refused_by_another(
    alice: Speaker, world: World
) -> None:
    for prompt in ("one", "two"):
        await alice.say(prompt)
    token = (await _page(world, size=1)).next_token
    assert token is not None

    with pytest.raises(InvalidArgument) as error:
        await _page(world, "another-context", size=1, token=token)
    with pytest.raises(InvalidArgument):
        await world.contexts.get_context(BOB, CONTEXT, size=1, token=token)

    assert error.value.message == "Invalid page_token"


async def test_deleting_a_context_removes_its_turns_and_the_next_execution_starts_afresh(
    alice: Speaker, world: World
) -> None:
    first, _ = await alice.say("one")
    await alice.say("two")
    await alice.say("elsewhere", context_id="other")

    deleted = await world.contexts.delete_context(ALICE, CONTEXT)
    again = await world.contexts.delete_context(ALICE, CONTEXT)
    _, fresh = await alice.say("three")

    assert (deleted, again) == (2, 0)
    assert fresh.history == ()
    assert [t.prompt for t in (await _page(world)).items] == ["three"]
    assert [t.prompt for t in (await _page(world, "other")).items] == ["elsewhere"]
    # The jobs themselves stay, with the context their turn was stored in.
    assert (await world.jobs.get_job(ALICE, first)).response == answer_to("one")


async def test_retention_removes_a_turn_with_its_job_and_keeps_the_younger_ones(
    alice: Speaker, world: World
) -> None:
    world.policy, world.retention_s = RetryPolicy(), RETENTION_S
    old, _ = await alice.say("old")
    world.clock.advance(RETENTION_S)
    await alice.say("young")

    assert await world.recovery().expire() == 1
    _, next_call = await alice.say("next")

    assert [t.prompt for t in (await _page(world)).items] == ["young", "next"]
    assert next_call.history == turns("young")
    assert old not in await world.job_ids()
