"""A worker runs each job attempt once and records its outcome, or gives the job back."""

from __future__ import annotations

import asyncio

from sqlalchemy import update

from server.providers.base import Completion, ProviderError
from server.store.models import JobStatus
from server.store.tables import agents, jobs
from server.worker.hashes import context_hash, merkle_root
from server.worker.policy import RetryPolicy
from server.worker.runner import AttemptRunner, CancelSignal
from tests.fakes.provider import ProviderCall, ScriptedProvider, Stream, slowly
from tests.unit.one_job import OneJob
from tests.world import ALICE, ANSWER, World


class CancelCheck:
    """The engine's cancel poll made by hand: a test calls `check()` where a poll would be.

    As the engine does, it asks the store which of the watched jobs have a cancel request,
    and cancels the signals of their attempts.
    """

    def __init__(self, world: World) -> None:
        self._world = world
        self._signals: dict[str, CancelSignal] = {}

    def signal(self, job_id: str) -> CancelSignal:
        """A new signal to run the job's next attempt with, which `check()` cancels."""
        signal = self._signals[job_id] = CancelSignal()
        return signal

    async def check(self) -> None:
        """Look once for cancel requests of the watched jobs."""
        for job_id in await self._world.store.jobs.cancel_requested(list(self._signals)):
            self._signals[job_id].cancel()


# Success.


async def test_a_pending_job_runs_once_and_completes_with_its_answer_and_proof(
    one: OneJob,
) -> None:
    provider = ScriptedProvider(ANSWER)

    assert await one.run(one.runner(provider))

    row = await one.row()
    expected_hash = context_hash(
        agent_id=one.agent.id, role=one.agent.role, prompt=one.job.prompt, response=ANSWER.text
    )
    assert row.status == JobStatus.COMPLETED
    assert (row.response, row.tokens_used, row.error) == (ANSWER.text, 42, None)
    assert row.context_hash == expected_hash
    assert row.merkle_root == merkle_root([expected_hash]) == expected_hash
    assert (row.attempts, row.started_at, row.completed_at) == (1, one.clock.now, one.clock.now)
    assert (row.run_token, row.lease_expires_at) == (None, None)
    assert await one.events() == [(1, "queued", 0), (2, "started", 1), (3, "completed", 1)]
    assert one.queue.calls == []


async def test_the_provider_answers_the_jobs_prompt_in_the_agents_role(one: OneJob) -> None:
    provider = ScriptedProvider(ANSWER)

    await one.run(one.runner(provider))

    assert provider.calls == [ProviderCall(system=one.agent.role, prompt=one.job.prompt)]
    assert provider.calls[0].streams  # the worker always takes the pieces as they come


async def test_a_second_delivery_of_a_completed_job_does_not_run_it_again(one: OneJob) -> None:
    provider = ScriptedProvider(ANSWER, Completion(text="a different answer", tokens_used=1))
    runner = one.runner(provider)
    await one.run(runner)
    completed = await one.row()

    one.clock.advance(5)
    assert not await one.run(runner)

    assert len(provider.calls) == 1
    assert await one.row() == completed
    assert one.queue.calls == []


async def test_a_message_that_arrives_while_the_job_runs_is_ignored(one: OneJob) -> None:
    runner: AttemptRunner
    duplicates: list[object] = []

    async def deliver_again_midway() -> Completion:
        # A duplicate message, handled by another slot of the worker meanwhile.
        duplicates.append(await runner.claim(one.job.id))
        return ANSWER

    provider = ScriptedProvider(deliver_again_midway, Completion(text="twice!", tokens_used=1))
    runner = one.runner(provider)

    await one.run(runner)

    row = await one.row()
    assert duplicates == [None]
    assert len(provider.calls) == 1
    assert (row.status, row.response, row.attempts) == (JobStatus.COMPLETED, ANSWER.text, 1)
    assert one.queue.calls == []


async def test_a_message_for_an_unknown_job_does_nothing(one: OneJob) -> None:
    provider = ScriptedProvider(ANSWER)

    unknown = "00000000-0000-4000-8000-000000000000"
    assert not await one.world.run_job(one.runner(provider), unknown)

    assert provider.calls == []
    assert one.queue.calls == []
    assert (await one.row()).status == JobStatus.PENDING


async def test_a_job_whose_agent_was_deleted_before_it_ran_fails_without_calling_the_provider(
    one: OneJob,
) -> None:
    deleted = update(agents).where(agents.c.id == one.agent.id).values(deleted_at=one.clock())
    await one.world.store.db.run(deleted)
    provider = ScriptedProvider(ANSWER)

    await one.run(one.runner(provider))

    row = await one.row()
    assert provider.calls == []
    assert (row.status, row.error, row.attempts) == (JobStatus.FAILED, "Agent not found", 1)
    assert [kind for _, kind, _ in await one.events()] == ["queued", "started", "failed"]
    assert one.queue.calls == []


# Streaming.


async def test_streamed_pieces_are_recorded_in_order_between_start_and_end(one: OneJob) -> None:
    stream = Stream(("Revenue ", "grew ", "12%", " on strong exports."), tokens_used=11)
    answer = "Revenue grew 12% on strong exports."

    await one.run(one.runner(ScriptedProvider(stream)))

    events = await one.world.events(one.job.id)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert (events[0].type, events[1].type, events[-1].type) == ("queued", "started", "completed")
    tokens = events[2:-1]
    assert {e.type for e in tokens} == {"token"}
    assert "".join(e.delta or "" for e in tokens) == answer
    row = await one.row()
    assert (row.response, row.tokens_used) == (answer, 11)


# Shutting down.


async def test_an_attempt_interrupted_by_its_worker_shutting_down_is_given_back_at_once(
    one: OneJob,
) -> None:
    runner = one.runner(ScriptedProvider(slowly(30, ANSWER)), max_attempts=3, backoff_s=10)
    attempt = await runner.claim(one.job.id)
    assert attempt is not None
    running = asyncio.get_running_loop().create_task(runner.run(attempt, CancelSignal()))
    await asyncio.sleep(0.01)

    running.cancel()  # what the engine does to attempts still running at its close
    await running

    row = await one.row()
    assert (row.status, row.attempts, row.run_token) == (JobStatus.PENDING, 1, None)
    assert row.next_run_at == one.clock.now
    assert row.last_error == "Attempt was interrupted: its worker shut down"
    assert one.queue.calls == [(one.job.id, 0.0)]


# Lost claims.


async def test_an_attempt_that_recovery_took_back_has_its_answer_dropped(one: OneJob) -> None:
    policy = one.world.policy = RetryPolicy(time_limit_s=10, lease_grace_s=5)
    recovery = one.world.recovery(requeue_after_s=30)

    async def hang_past_the_lease() -> Completion:
        one.clock.advance(policy.lease_s + 1)
        await recovery.sweep()  # the sweeper decides this worker is lost
        return Completion(text="too late", tokens_used=7)

    runner = one.world.runner(ScriptedProvider(hang_past_the_lease, ANSWER))

    await one.run(runner)

    row = await one.row()
    assert (row.status, row.attempts, row.response) == (JobStatus.PENDING, 1, None)
    assert row.last_error is not None and row.last_error.startswith("Attempt 1 was lost")
    assert one.queue.calls == [(one.job.id, 0.0)]  # recovery's message only

    await one.run(runner)

    row = await one.row()
    assert (row.status, row.attempts, row.response) == (JobStatus.COMPLETED, 2, ANSWER.text)


async def test_a_failed_attempt_that_lost_its_claim_sends_no_retry(one: OneJob) -> None:
    async def lose_the_claim() -> Completion:
        # Another attempt holds the job now (recovery gave it back, another worker took it).
        taken = update(jobs).where(jobs.c.id == one.job.id).values(run_token="another-attempt")
        await one.world.store.db.run(taken)
        raise ProviderError("Provider returned HTTP 503", retryable=True, tokens_used=3)

    await one.run(one.runner(ScriptedProvider(lose_the_claim)))

    row = await one.row()
    assert (row.status, row.run_token) == (JobStatus.RUNNING, "another-attempt")
    assert (row.last_error, row.tokens_used) == (None, 0)
    assert [kind for _, kind, _ in await one.events()] == ["queued", "started"]
    assert one.queue.calls == []


# Cancels.


async def test_a_cancel_during_the_call_stops_it_and_the_job_ends_cancelled(one: OneJob) -> None:
    watch = CancelCheck(one.world)
    signal = watch.signal(one.job.id)

    async def cancelled_midway() -> Completion:
        await one.world.jobs.cancel_job(ALICE, one.job.id)
        await watch.check()  # the engine's cancel check finds the request
        return ANSWER

    await one.run(one.runner(ScriptedProvider(cancelled_midway)), signal)

    row = await one.row()
    assert (row.status, row.response, row.context_hash) == (JobStatus.CANCELLED, None, None)
    assert (row.completed_at, row.run_token) == (one.clock.now, None)
    assert [kind for _, kind, _ in await one.events()] == ["queued", "started", "cancelled"]
    assert one.queue.calls == []


async def test_a_cancel_requested_after_the_call_wins_over_its_answer(one: OneJob) -> None:
    async def cancel_unseen() -> Completion:
        # The request lands after the worker's last cancel check: only the database knows.
        await one.world.jobs.cancel_job(ALICE, one.job.id)
        return ANSWER

    await one.run(one.runner(ScriptedProvider(cancel_unseen)))

    row = await one.row()
    assert (row.status, row.response, row.tokens_used) == (JobStatus.CANCELLED, None, 0)
    assert [kind for _, kind, _ in await one.events()] == ["queued", "started", "cancelled"]


# Answers that cannot be recorded.


async def test_an_answer_that_is_not_valid_unicode_ends_the_attempt_instead_of_leaving_it_running(
    one: OneJob,
) -> None:
    # A JSON answer cut inside an emoji decodes to half a surrogate pair, which no
    # UTF-8 encoder (hashing, SQLite, PostgreSQL) accepts.
    provider = ScriptedProvider(Completion(text="Here you go \ud83d", tokens_used=3))

    await one.run(one.runner(provider))

    row = await one.row()
    assert row.status != JobStatus.RUNNING  # else it hangs until its lease runs out
    assert row.run_token is None
