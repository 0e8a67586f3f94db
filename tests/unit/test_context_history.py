"""An execution on a context sends its provider the context's earlier completed turns as chat
history, oldest first and within the bounds, and adds its own turn once it completes."""

from __future__ import annotations

import uuid

import pytest

from server.api.convert import job_message
from server.providers.base import Completion, ProviderError
from server.store.models import JobStatus
from server.worker.history import ContextLimits
from server.worker.runner import CancelSignal
from tests.fakes.provider import ScriptedProvider
from tests.unit.conversations import CONTEXT, Speaker, answer_to, turns
from tests.world import ALICE, BOB, World


@pytest.fixture
async def alice(world: World) -> Speaker:
    """ALICE with an agent of her tenant."""
    return Speaker(world, await world.add_agent())


async def _stored_turns(world: World, context_id: str = CONTEXT) -> list[str]:
    """The prompts of ALICE's turns of the context, oldest first."""
    page = await world.contexts.get_context(ALICE, context_id, size=100, token="")
    return [turn.prompt for turn in page.items]


async def test_an_execution_on_a_context_sends_its_earlier_turns_oldest_first(
    alice: Speaker,
) -> None:
    _, first = await alice.say("Where should we go in May?")
    _, second = await alice.say("And for how long?")
    _, third = await alice.say("Book it.")

    assert first.history == ()
    assert second.history == turns("Where should we go in May?")
    assert third.history == turns("Where should we go in May?", "And for how long?")
    # The role stays the system message and the prompt comes last, as before.
    assert (third.system, third.prompt) == (alice.agent.role, "Book it.")


async def test_an_execution_without_a_context_sends_no_history_and_adds_no_turn(
    alice: Speaker, world: World
) -> None:
    await alice.say("Plan a trip.")
    _, alone = await alice.say("Anything else?", context_id=None)

    assert alone.history == ()
    assert await _stored_turns(world) == ["Plan a trip."]


async def test_the_history_holds_the_newest_turns_up_to_the_turn_limit(
    alice: Speaker, world: World
) -> None:
    world.context_limits = ContextLimits(max_turns=2, max_chars=10_000)
    for prompt in ("one", "two", "three"):
        await alice.say(prompt)

    _, call = await alice.say("four")

    assert call.history == turns("two", "three")
    assert await _stored_turns(world) == ["one", "two", "three", "four"]


async def test_the_history_holds_the_newest_whole_turns_within_the_character_budget(
    alice: Speaker, world: World
) -> None:
    long, short = "l" * 100, "s" * 10
    for prompt in (short, long, short + "!", short + "?"):
        await alice.say(prompt)
    sizes = {p: len(p) + len(answer_to(p)) for p in (short + "!", short + "?", long)}
    # Room for the two newest turns and part of the long one before them: the long one
    # is dropped whole, and the short one before it with it (oldest first).
    budget = sizes[short + "!"] + sizes[short + "?"] + sizes[long] - 1
    world.context_limits = ContextLimits(max_turns=20, max_chars=budget)

    _, call = await alice.say("next")

    assert call.history == turns(short + "!", short + "?")


async def test_a_newest_turn_over_the_character_budget_leaves_the_history_empty(
    alice: Speaker, world: World
) -> None:
    await alice.say("short")
    await alice.say("x" * 500)
    world.context_limits = ContextLimits(max_turns=20, max_chars=100)

    _, call = await alice.say("next")

    assert call.history == ()


async def test_a_turn_limit_of_zero_sends_no_history_yet_keeps_the_turns(
    alice: Speaker, world: World
) -> None:
    world.context_limits = ContextLimits(max_turns=0, max_chars=10_000)
    await alice.say("one")

    _, call = await alice.say("two")

    assert call.history == ()
    assert await _stored_turns(world) == ["one", "two"]


async def test_failed_and_cancelled_executions_add_no_turn(alice: Speaker, world: World) -> None:
    await alice.say("kept")
    failed = await alice.queue("refused")
    await alice.run(failed, ProviderError("Provider returned HTTP 400: bad", retryable=False))
    pending_cancelled = await alice.queue("never run")
    await world.jobs.cancel_job(alice.principal, pending_cancelled)
    running_cancelled = await alice.queue("stopped midway")

    async def cancel_midway() -> Completion:
        await world.jobs.cancel_job(alice.principal, running_cancelled)
        return Completion("an answer nobody keeps", 5)

    await alice.run(running_cancelled, cancel_midway)
    _, call = await alice.say("next")

    ended = [failed, pending_cancelled, running_cancelled]
    statuses = [(await world.jobs.get_job(alice.principal, job)).status for job in ended]
    assert statuses == [JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.CANCELLED]
    assert call.history == turns("kept")
    assert await _stored_turns(world) == ["kept", "next"]


async def test_a_retry_sees_the_turns_completed_before_its_own_attempt_started(
    alice: Speaker,
) -> None:
    flaky = await alice.queue("flaky")
    first_attempt = await alice.run(flaky, ProviderError("Provider timed out", retryable=True))
    await alice.say("meanwhile")
    alice.world.clock.advance(60)  # past the retry's backoff

    retry = await alice.run(flaky, Completion(answer_to("flaky"), 10))

    assert first_attempt.calls[0].history == ()
    assert retry.calls[0].history == turns("meanwhile")
    assert await _stored_turns(alice.world) == ["meanwhile", "flaky"]


async def test_two_executions_on_one_context_at_once_each_see_the_turns_completed_before_it_started(
    alice: Speaker, world: World
) -> None:
    await alice.say("before both")
    first, second = await alice.queue("first"), await alice.queue("second")
    a = ScriptedProvider(Completion(answer_to("first"), 10))
    b = ScriptedProvider(Completion(answer_to("second"), 10))
    runner_a, runner_b = world.runner(a), world.runner(b)
    attempt_a, attempt_b = await runner_a.claim(first), await runner_b.claim(second)
    assert attempt_a is not None and attempt_b is not None

    world.clock.advance(1)
    await runner_a.run(attempt_a, CancelSignal())
    world.clock.advance(1)
    await runner_b.run(attempt_b, CancelSignal())
    _, after = await alice.say("after both")

    # Both started before either finished: neither sees the other's turn.
    assert a.calls[0].history == b.calls[0].history == turns("before both")
    # Both turns are stored, in the order they completed, for what starts after.
    assert after.history == turns("before both", "first", "second")


async def test_another_tenants_context_of_the_same_name_is_a_different_empty_one(
    alice: Speaker, world: World
) -> None:
    bob = Speaker(world, await world.add_agent(tenant_id=BOB.tenant_id), BOB)
    await alice.say("alice's secret plan")

    _, bobs = await bob.say("bob's question")
    _, alices = await alice.say("alice again")

    assert bobs.history == ()
    assert alices.history == turns("alice's secret plan")


async def test_with_auto_contexts_an_execution_without_one_starts_a_context_named_at_queue_time(
    alice: Speaker, world: World
) -> None:
    world.context_auto = True
    job_id = await alice.queue("Where to?", context_id=None)
    named = (await world.jobs.get_job(alice.principal, job_id)).context_id
    assert named is not None and str(uuid.UUID(named)) == named
    # A retry runs in the context stored on the job.
    await alice.run(job_id, ProviderError("Provider timed out", retryable=True))
    world.clock.advance(60)
    await alice.run(job_id, Completion(answer_to("Where to?"), 10))

    result = job_message(await world.jobs.get_job(alice.principal, job_id)).result
    _, follow_up = await alice.say("How long?", context_id=result.new_context_id)

    assert result.new_context_id == named
    assert follow_up.history == turns("Where to?")
    assert await _stored_turns(world, named) == ["Where to?", "How long?"]


async def test_without_auto_contexts_an_execution_without_one_has_no_context(
    alice: Speaker, world: World
) -> None:
    job_id, _ = await alice.say("Where to?", context_id=None)

    job = await world.jobs.get_job(alice.principal, job_id)
    assert job.context_id is None
    assert not job_message(job).result.HasField("new_context_id")


async def test_the_result_names_the_context_of_a_completed_job_and_not_of_a_failed_one(
    alice: Speaker, world: World
) -> None:
    done, _ = await alice.say("kept")
    failed = await alice.queue("refused")
    await alice.run(failed, ProviderError("Provider returned HTTP 400: bad", retryable=False))

    done_result = job_message(await world.jobs.get_job(alice.principal, done)).result
    failed_result = job_message(await world.jobs.get_job(alice.principal, failed)).result

    assert done_result.new_context_id == CONTEXT
    assert not failed_result.HasField("new_context_id")
