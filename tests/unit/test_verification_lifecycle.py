"""A run of several calls keeps the job rules: retries, cancels, the time limit, the guard."""

from __future__ import annotations

import asyncio
import json

from server.providers.base import Completion, ProviderError
from server.store.models import JobStatus
from server.store.transitions import Transition
from server.worker.hashes import merkle_root
from server.worker.prompts import SAFETY_JUDGE, safety_message
from server.worker.runner import CancelSignal
from server.worker.store import DatabaseAttemptStore
from server.worker.verification import VerifyConfig
from tests.fakes.provider import ProviderCall, ScriptedProvider, slowly
from tests.unit.debates import ANSWER, NOTHING, critique, debate, defence, verdict
from tests.world import ALICE, PROMPT, World

JUDGED = VerifyConfig(safety_judge=True)


def _safety(allow: bool, reason: str) -> Completion:
    return Completion(text=json.dumps({"allow": allow, "reason": reason}), tokens_used=8)


# Retries.


async def test_a_failed_step_gives_the_job_back_and_a_retry_runs_every_step_anew(
    world: World,
) -> None:
    job = await debate(world, rounds=1)
    busy = ProviderError("Provider returned HTTP 503", retryable=True, tokens_used=3)
    provider = ScriptedProvider(ANSWER, busy, ANSWER, NOTHING, verdict(0.9))
    runner = job.runner(provider, backoff_s=1)

    first = await job.run(runner)

    assert (first.status, first.last_error) == (JobStatus.PENDING, "Provider returned HTTP 503")
    assert first.tokens_used == 42 + 3  # the answer, and what the failed critique cost
    world.clock.set(first.next_run_at)
    second = await job.run(runner)

    assert second.status == JobStatus.COMPLETED
    events = await job.events()
    # The failed attempt's steps stay in the log under their attempt; they count once.
    assert [(e.type, e.step_kind, e.attempt) for e in events if e.type != "queued"] == [
        ("started", None, 1),
        ("step", "answer", 1),
        ("retrying", None, 1),
        ("started", None, 2),
        ("step", "answer", 2),
        ("step", "critique", 2),
        ("step", "verdict", 2),
        ("completed", None, 2),
    ]
    latest = [e for e in events if e.type == "step" and e.attempt == 2]
    assert second.tokens_used == 45 + sum(e.step_tokens or 0 for e in latest)
    assert second.merkle_root == merkle_root([e.step_hash or "" for e in latest])


async def test_a_permanent_error_in_a_step_fails_the_job_with_every_steps_tokens(
    world: World,
) -> None:
    job = await debate(world, rounds=1)
    refused = ProviderError("Provider returned HTTP 400: bad request", retryable=False)
    provider = ScriptedProvider(ANSWER, critique(), defence(), refused)

    row = await job.run(job.runner(provider))

    assert (row.status, row.error) == (JobStatus.FAILED, "Provider returned HTTP 400: bad request")
    assert row.tokens_used == 42 + 17 + 13
    assert (row.response, row.merkle_root, row.confidence) == ("", None, None)
    assert world.queue.calls == []


# Cancels.


async def test_a_cancel_during_a_critique_stops_it_and_no_later_step_runs(world: World) -> None:
    job = await debate(world, rounds=3)
    signal = CancelSignal()

    async def cancelled_midway() -> Completion:
        await world.jobs.cancel_job(ALICE, job.job.id)
        signal.cancel()  # the engine's cancel check found the request
        await asyncio.sleep(1)
        return critique()

    provider = ScriptedProvider(ANSWER, cancelled_midway, defence(), verdict(0.9))
    row = await job.run(job.runner(provider), signal)

    assert (row.status, row.response) == (JobStatus.CANCELLED, None)
    assert provider.interrupted == 1 and len(provider.calls) == 2
    assert [e.type for e in await job.events()][-2:] == ["step", "cancelled"]


class _CancelWhileRecording(DatabaseAttemptStore):
    """A store during whose first step write the engine's cancel check fires."""

    def __init__(self, world: World, signal: CancelSignal) -> None:
        super().__init__(world.store)
        self._signal = signal

    async def apply(self, change: Transition) -> bool:
        if change.event is not None and change.event.step is not None:
            self._signal.cancel()  # no call is running: only the request is noted
        return await super().apply(change)


async def test_a_cancel_requested_between_two_calls_stops_the_next_before_it_starts(
    world: World,
) -> None:
    job = await debate(world, rounds=3)
    signal = CancelSignal()
    provider = ScriptedProvider(ANSWER, critique(), defence(), verdict(0.9))
    runner = job.runner(provider)
    runner.store = _CancelWhileRecording(world, signal)

    row = await job.run(runner, signal)

    assert row.status == JobStatus.CANCELLED
    assert len(provider.calls) == 1


async def test_a_shutdown_during_a_step_gives_the_job_back_with_the_tokens_spent(
    world: World,
) -> None:
    job = await debate(world, rounds=3)
    runner = job.runner(ScriptedProvider(ANSWER, slowly(30, critique())))
    attempt = await runner.claim(job.job.id)
    assert attempt is not None
    running = asyncio.get_running_loop().create_task(runner.run(attempt, CancelSignal()))
    while len(await job.steps()) < 1:
        await asyncio.sleep(0.01)

    running.cancel()  # what the engine does to attempts still running at its close
    await running

    row = await job.row()
    assert (row.status, row.last_error) == (
        JobStatus.PENDING,
        "Attempt was interrupted: its worker shut down",
    )
    assert row.tokens_used == 42


# The time limit.


async def test_the_time_limit_bounds_the_whole_attempt_not_each_call(world: World) -> None:
    job = await debate(world, rounds=3)
    # Each call takes well under the limit; together they run past it.
    steps = [slowly(0.06, answer) for answer in (ANSWER, critique(), defence(), critique())]
    provider = ScriptedProvider(*steps, defence(), verdict(0.9))
    runner = job.runner(provider, time_limit_s=0.15, backoff_s=1)

    row = await job.run(runner)

    assert (row.status, row.last_error) == (
        JobStatus.PENDING,
        "Job exceeded its time limit of 0.15s",
    )
    assert len(provider.calls) == 3
    assert row.tokens_used == 42 + 17  # the two calls that ended in time


# The safety judge (AGENTQ_PROMPT_GUARD=judge).


async def test_the_safety_judge_screens_the_prompt_before_the_answer(world: World) -> None:
    job = await debate(world, adversarial=False)
    provider = ScriptedProvider(_safety(True, "An ordinary request."), ANSWER)

    row = await job.run(job.runner(provider, verify=JUDGED))

    assert provider.calls[0] == ProviderCall(SAFETY_JUDGE, safety_message(PROMPT))
    assert row.status == JobStatus.COMPLETED
    assert await job.kinds() == [("safety", 0), ("answer", 0)]
    steps = await job.steps()
    assert steps[0].step_evidence == "An ordinary request."
    assert row.tokens_used == 8 + 42
    assert row.merkle_root == merkle_root([s.step_hash or "" for s in steps])


async def test_a_prompt_the_safety_judge_rejects_fails_the_job_without_a_retry(
    world: World,
) -> None:
    job = await debate(world, adversarial=False)
    provider = ScriptedProvider(_safety(False, "It asks for the system prompt."))

    row = await job.run(job.runner(provider, verify=JUDGED))

    assert (row.status, row.error, row.attempts) == (
        JobStatus.FAILED,
        "Safety judge rejected input: It asks for the system prompt.",
        1,
    )
    assert len(provider.calls) == 1 and world.queue.calls == []
    assert row.tokens_used == 8
    assert [e.type for e in await job.events()] == ["queued", "started", "step", "failed"]


async def test_a_safety_verdict_unreadable_twice_rejects_the_prompt(world: World) -> None:
    job = await debate(world, adversarial=False)
    provider = ScriptedProvider(Completion("Allowed.", 2), Completion('{"allow": "yes"}', 3))

    row = await job.run(job.runner(provider, verify=JUDGED))

    assert row.status == JobStatus.FAILED
    assert row.error == (
        "Safety judge rejected input: its verdict could not be read "
        "(it has the keys ['allow'] instead of ['allow', 'reason'])"
    )
    assert "<unreadable>" in provider.calls[1].prompt
