"""A worker runs each job attempt once, retries with backoff, and records the outcome."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from server.providers.base import Completion, ProviderError
from server.recovery import Recovery
from server.store.models import Agent, Job, JobStatus
from server.worker.hashes import context_hash, merkle_root
from server.worker.policy import RetryPolicy
from server.worker.runner import AttemptRunner, CancelSignal
from tests.unit.fakes import (
    FakeClock,
    FakeQueue,
    FakeStore,
    ProviderCall,
    ScriptedProvider,
    Stream,
    attempt_runner,
    make_agent,
    make_job,
    run_job,
    slowly,
    snapshot,
)

ANSWER = Completion(text="Revenue grew 12% on strong exports.", tokens_used=42)


def _unavailable(tokens_used: int = 0, n: int = 503) -> ProviderError:
    return ProviderError(f"Provider returned HTTP {n}", retryable=True, tokens_used=tokens_used)


@dataclass
class World:
    """One stored agent with one pending, due job, and the fakes around them."""

    store: FakeStore
    clock: FakeClock
    queue: FakeQueue
    agent: Agent
    job: Job

    def runner(self, provider: ScriptedProvider, **policy: Any) -> AttemptRunner:
        return attempt_runner(
            self.store, provider, self.queue, RetryPolicy(**policy), clock=self.clock
        )

    def run(self, runner: AttemptRunner, signal: CancelSignal | None = None) -> bool:
        """Deliver one message for the job to the worker."""
        return run_job(runner, self.job.id, signal)

    @property
    def row(self) -> Job:
        """The job as committed now."""
        return self.store.jobs[self.job.id]

    def events(self) -> list[tuple[int, str, int]]:
        """(sequence, type, attempt) of the job's committed events."""
        return [(e.sequence, e.type, e.attempt) for e in self.store.events_of(self.job.id)]


@pytest.fixture
def world() -> World:
    store, clock = FakeStore(), FakeClock()
    agent = make_agent()
    job = make_job(agent, at=clock.now)
    store.put(agent, job)
    return World(store=store, clock=clock, queue=FakeQueue(), agent=agent, job=job)


# Success.


def test_a_pending_job_runs_once_and_completes_with_its_answer_and_proof(world: World) -> None:
    provider = ScriptedProvider(ANSWER)

    assert world.run(world.runner(provider))

    row = world.row
    expected_hash = context_hash(
        agent_id=world.agent.id,
        role=world.agent.role,
        prompt=world.job.prompt,
        response=ANSWER.text,
    )
    assert row.status == JobStatus.COMPLETED
    assert (row.response, row.tokens_used, row.error) == (ANSWER.text, 42, None)
    assert row.context_hash == expected_hash
    assert row.merkle_root == merkle_root([expected_hash]) == expected_hash
    assert (row.attempts, row.started_at, row.completed_at) == (1, world.clock.now, world.clock.now)
    assert (row.run_token, row.lease_expires_at) == (None, None)
    assert world.events() == [(1, "started", 1), (2, "completed", 1)]
    assert world.queue.calls == []


def test_the_provider_answers_the_jobs_prompt_in_the_agents_role(world: World) -> None:
    provider = ScriptedProvider(ANSWER)

    world.run(world.runner(provider))

    assert provider.calls == [ProviderCall(system=world.agent.role, prompt=world.job.prompt)]
    assert provider.calls[0].streams  # the worker always takes the pieces as they come


def test_a_second_delivery_of_a_completed_job_does_not_run_it_again(world: World) -> None:
    provider = ScriptedProvider(ANSWER, Completion(text="a different answer", tokens_used=1))
    runner = world.runner(provider)
    world.run(runner)
    completed = snapshot(world.row)

    world.clock.advance(5)
    assert not world.run(runner)

    assert len(provider.calls) == 1
    assert snapshot(world.row) == completed
    assert world.queue.calls == []


def test_a_message_that_arrives_while_the_job_runs_is_ignored(world: World) -> None:
    runner: AttemptRunner
    duplicates: list[object] = []

    async def deliver_again_midway() -> Completion:
        # A duplicate message, handled by another slot of the worker meanwhile.
        duplicates.append(await runner.claim(world.job.id))
        return ANSWER

    provider = ScriptedProvider(deliver_again_midway, Completion(text="twice!", tokens_used=1))
    runner = world.runner(provider)

    world.run(runner)

    assert duplicates == [None]
    assert len(provider.calls) == 1
    assert (world.row.status, world.row.response, world.row.attempts) == (
        JobStatus.COMPLETED,
        ANSWER.text,
        1,
    )
    assert world.queue.calls == []


def test_a_message_for_an_unknown_job_does_nothing(world: World) -> None:
    provider = ScriptedProvider(ANSWER)

    assert not run_job(world.runner(provider), "00000000-0000-4000-8000-000000000000")

    assert provider.calls == []
    assert world.queue.calls == []
    assert world.row.status == JobStatus.PENDING


def test_a_job_whose_agent_was_deleted_before_it_ran_fails_without_calling_the_provider(
    world: World,
) -> None:
    world.store.agents[world.agent.id].deleted_at = world.clock.now
    provider = ScriptedProvider(ANSWER)

    world.run(world.runner(provider))

    assert provider.calls == []
    assert (world.row.status, world.row.error, world.row.attempts) == (
        JobStatus.FAILED,
        "Agent not found",
        1,
    )
    assert [event.type for event in world.store.events_of(world.job.id)] == ["started", "failed"]
    assert world.queue.calls == []


# Streaming.


def test_streamed_pieces_are_recorded_in_order_between_start_and_end(world: World) -> None:
    stream = Stream(("Revenue ", "grew ", "12%", " on strong exports."), tokens_used=11)
    answer = "Revenue grew 12% on strong exports."

    world.run(world.runner(ScriptedProvider(stream)))

    events = world.store.events_of(world.job.id)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert (events[0].type, events[-1].type) == ("started", "completed")
    tokens = events[1:-1]
    assert {e.type for e in tokens} == {"token"}
    assert "".join(e.delta or "" for e in tokens) == answer
    assert (world.row.response, world.row.tokens_used) == (answer, 11)


# Retries.


def test_a_retryable_error_sends_the_job_back_to_pending_with_backoff(world: World) -> None:
    provider = ScriptedProvider(_unavailable())

    world.run(world.runner(provider, backoff_s=1))

    row = world.row
    assert row.status == JobStatus.PENDING
    assert row.attempts == 1
    assert row.next_run_at == world.clock.now + timedelta(seconds=1)
    assert row.last_error == "Provider returned HTTP 503"
    assert (row.error, row.completed_at, row.response, row.run_token) == (None, None, None, None)
    assert world.queue.calls == [(world.job.id, 1.0)]


def test_each_retry_waits_twice_as_long_as_the_one_before(world: World) -> None:
    provider = ScriptedProvider(_unavailable(), _unavailable(), _unavailable(), ANSWER)
    runner = world.runner(provider, max_attempts=4, backoff_s=1)

    for _ in range(4):
        world.run(runner)
        world.clock.set(world.row.next_run_at)

    assert [delay for _, delay in world.queue.calls] == [1.0, 2.0, 4.0]
    assert (world.row.status, world.row.attempts) == (JobStatus.COMPLETED, 4)


def test_backoff_stops_growing_at_its_maximum(world: World) -> None:
    errors = [_unavailable() for _ in range(4)]
    runner = world.runner(ScriptedProvider(*errors), max_attempts=5, backoff_s=1, backoff_max_s=3)

    for _ in range(4):
        world.run(runner)
        world.clock.set(world.row.next_run_at)

    assert [delay for _, delay in world.queue.calls] == [1.0, 2.0, 3.0, 3.0]


def test_after_the_last_attempt_fails_the_job_fails_with_the_last_error_and_all_tokens(
    world: World,
) -> None:
    provider = ScriptedProvider(
        _unavailable(tokens_used=3, n=502),
        _unavailable(tokens_used=4, n=503),
        _unavailable(tokens_used=5, n=504),
    )
    runner = world.runner(provider, max_attempts=3, backoff_s=1)

    for _ in range(3):
        world.run(runner)
        world.clock.set(world.row.next_run_at)

    row = world.row
    assert row.status == JobStatus.FAILED
    assert row.error == row.last_error == "Provider returned HTTP 504"
    assert (row.response, row.tokens_used, row.attempts) == ("", 3 + 4 + 5, 3)
    assert row.completed_at == world.clock.now
    assert row.context_hash is None
    assert [delay for _, delay in world.queue.calls] == [1.0, 2.0]  # no retry after the last
    assert [kind for _, kind, _ in world.events()] == [
        *(["started", "retrying"] * 2),
        "started",
        "failed",
    ]


def test_tokens_spent_on_failed_attempts_count_toward_a_later_success(world: World) -> None:
    runner = world.runner(ScriptedProvider(_unavailable(tokens_used=5), ANSWER))

    world.run(runner)
    world.clock.set(world.row.next_run_at)
    world.run(runner)

    row = world.row
    assert (row.status, row.attempts, row.tokens_used) == (JobStatus.COMPLETED, 2, 5 + 42)
    assert row.error is None


def test_a_permanent_error_fails_the_job_at_once(world: World) -> None:
    refused = ProviderError("Provider rejected the request: HTTP 400", retryable=False)
    provider = ScriptedProvider(refused, ANSWER)

    world.run(world.runner(provider, max_attempts=3))

    row = world.row
    assert row.status == JobStatus.FAILED
    assert row.error == "Provider rejected the request: HTTP 400"
    assert (row.attempts, row.response, row.completed_at) == (1, "", world.clock.now)
    assert len(provider.calls) == 1
    assert world.queue.calls == []


def test_an_unexpected_provider_exception_is_retried_without_leaking_its_text(
    world: World,
) -> None:
    provider = ScriptedProvider(KeyError("choices"))

    world.run(world.runner(provider, backoff_s=1))

    row = world.row
    assert (row.status, row.attempts) == (JobStatus.PENDING, 1)
    assert row.last_error == "Provider failed unexpectedly"
    assert world.queue.calls == [(world.job.id, 1.0)]


def test_a_timeout_error_escaping_the_provider_is_not_taken_for_the_time_limit(
    world: World,
) -> None:
    provider = ScriptedProvider(TimeoutError("a library's own"))

    world.run(world.runner(provider, backoff_s=1))

    row = world.row
    assert (row.status, row.attempts) == (JobStatus.PENDING, 1)
    assert row.last_error == "Provider failed unexpectedly"


def test_a_retry_whose_message_could_not_be_sent_is_sent_again_by_recovery(world: World) -> None:
    policy = RetryPolicy(backoff_s=10)
    runner = attempt_runner(
        world.store,
        ScriptedProvider(_unavailable(), ANSWER),
        world.queue,
        policy,
        clock=world.clock,
    )
    recovery = Recovery(
        world.store.unit_of_work, world.queue, policy, requeue_after_s=30, clock=world.clock
    )
    world.queue.error = ConnectionError("Redis is down")
    world.run(runner)  # the attempt is recorded; only its message is lost
    world.queue.error = None
    assert (world.row.status, world.row.last_error) == (
        JobStatus.PENDING,
        "Provider returned HTTP 503",
    )

    world.clock.advance(10 + 29)
    recovery.sweep()
    assert world.queue.calls == [(world.job.id, 10.0)]  # not overdue yet: due 10s, then 30s
    world.clock.advance(2)
    recovery.sweep()
    world.run(runner)

    assert world.queue.calls == [(world.job.id, 10.0), (world.job.id, 0.0)]
    assert (world.row.status, world.row.attempts) == (JobStatus.COMPLETED, 2)


def test_a_message_that_arrives_before_the_backoff_ends_waits_for_the_rest_of_it(
    world: World,
) -> None:
    provider = ScriptedProvider(_unavailable(), ANSWER)
    runner = world.runner(provider, backoff_s=10)
    world.run(runner)

    world.clock.advance(4)
    assert not world.run(runner)

    assert len(provider.calls) == 1
    assert (world.row.status, world.row.attempts) == (JobStatus.PENDING, 1)
    assert world.queue.calls == [(world.job.id, 10.0), (world.job.id, 6.0)]


# The time limit.


def test_the_time_limit_cuts_a_slow_call_and_the_attempt_is_retried(world: World) -> None:
    provider = ScriptedProvider(slowly(30, Completion(text="late", tokens_used=9)), ANSWER)
    runner = world.runner(provider, time_limit_s=0.05, backoff_s=1)

    started = time.monotonic()
    world.run(runner)

    assert time.monotonic() - started < 10  # cut at the limit, not left to answer
    row = world.row
    assert (row.status, row.attempts) == (JobStatus.PENDING, 1)
    assert row.last_error == "Job exceeded its time limit of 0.05s"
    assert (row.response, row.context_hash, row.tokens_used) == (None, None, 0)
    assert world.queue.calls == [(world.job.id, 1.0)]

    world.clock.set(row.next_run_at)
    world.run(runner)

    assert (world.row.status, world.row.attempts, world.row.response) == (
        JobStatus.COMPLETED,
        2,
        ANSWER.text,
    )


def test_a_last_attempt_cut_by_the_time_limit_fails_the_job(world: World) -> None:
    stalled = Stream(("Revenue ",), tokens_used=3, after_piece=lambda _: asyncio.sleep(30))

    world.run(world.runner(ScriptedProvider(stalled), max_attempts=1, time_limit_s=0.05))

    row = world.row
    assert (row.status, row.attempts) == (JobStatus.FAILED, 1)
    assert row.error == "Job exceeded its time limit of 0.05s"
    assert (row.response, row.context_hash) == ("", None)
    assert world.events()[-1][1] == "failed"
    assert world.queue.calls == []


# Shutting down.


def test_an_attempt_interrupted_by_its_worker_shutting_down_is_given_back_at_once(
    world: World,
) -> None:
    runner = world.runner(ScriptedProvider(slowly(30, ANSWER)), max_attempts=3, backoff_s=10)

    async def shut_down_midway() -> None:
        attempt = await runner.claim(world.job.id)
        assert attempt is not None
        running = asyncio.get_running_loop().create_task(runner.run(attempt, CancelSignal()))
        await asyncio.sleep(0.01)
        running.cancel()  # what the engine does to attempts still running at its close
        await running

    asyncio.run(shut_down_midway())

    row = world.row
    assert (row.status, row.attempts, row.run_token) == (JobStatus.PENDING, 1, None)
    assert row.next_run_at == world.clock.now
    assert row.last_error == "Attempt was interrupted: its worker shut down"
    assert world.queue.calls == [(world.job.id, 0.0)]


# Lost claims.


def test_an_attempt_that_recovery_took_back_has_its_answer_dropped(world: World) -> None:
    policy = RetryPolicy(time_limit_s=10, lease_grace_s=5)
    recovery = Recovery(
        world.store.unit_of_work, world.queue, policy, requeue_after_s=30, clock=world.clock
    )

    def hang_past_the_lease() -> Completion:
        world.clock.advance(policy.lease_s + 1)
        recovery.sweep()  # the sweeper decides this worker is lost
        return Completion(text="too late", tokens_used=7)

    provider = ScriptedProvider(hang_past_the_lease, ANSWER)
    runner = attempt_runner(world.store, provider, world.queue, policy, clock=world.clock)

    world.run(runner)

    row = world.row
    assert (row.status, row.attempts, row.response) == (JobStatus.PENDING, 1, None)
    assert row.last_error is not None and row.last_error.startswith("Attempt 1 was lost")
    assert world.queue.calls == [(world.job.id, 0.0)]  # recovery's message only

    world.run(runner)

    assert (world.row.status, world.row.attempts, world.row.response) == (
        JobStatus.COMPLETED,
        2,
        ANSWER.text,
    )


def test_a_failed_attempt_that_lost_its_claim_sends_no_retry(world: World) -> None:
    def lose_the_claim() -> Completion:
        # Another attempt holds the job now (recovery gave it back, another worker took it).
        world.store.jobs[world.job.id].run_token = "another-attempt"
        raise _unavailable(tokens_used=3)

    world.run(world.runner(ScriptedProvider(lose_the_claim)))

    row = world.row
    assert (row.status, row.run_token) == (JobStatus.RUNNING, "another-attempt")
    assert (row.last_error, row.tokens_used) == (None, 0)
    assert [kind for _, kind, _ in world.events()] == ["started"]
    assert world.queue.calls == []


# Cancels.


def test_a_cancel_during_the_call_stops_it_and_the_job_ends_cancelled(world: World) -> None:
    signal = CancelSignal()

    def cancelled_midway() -> Completion:
        world.store.jobs[world.job.id].cancel_requested = True
        signal.cancel()  # the engine's cancel check found the request
        return ANSWER

    world.run(world.runner(ScriptedProvider(cancelled_midway)), signal)

    row = world.row
    assert (row.status, row.response, row.context_hash) == (JobStatus.CANCELLED, None, None)
    assert (row.completed_at, row.run_token) == (world.clock.now, None)
    assert [kind for _, kind, _ in world.events()] == ["started", "cancelled"]
    assert world.queue.calls == []


def test_a_cancel_requested_after_the_call_wins_over_its_answer(world: World) -> None:
    def cancel_unseen() -> Completion:
        # The request lands after the worker's last cancel check: only the database knows.
        world.store.jobs[world.job.id].cancel_requested = True
        return ANSWER

    world.run(world.runner(ScriptedProvider(cancel_unseen)))

    row = world.row
    assert (row.status, row.response, row.tokens_used) == (JobStatus.CANCELLED, None, 0)
    assert [kind for _, kind, _ in world.events()] == ["started", "cancelled"]


# Answers that cannot be recorded.


def test_an_answer_that_is_not_valid_unicode_ends_the_attempt_instead_of_leaving_it_running(
    world: World,
) -> None:
    # A JSON answer cut inside an emoji decodes to half a surrogate pair, which no
    # UTF-8 encoder (hashing, SQLite, PostgreSQL) accepts.
    provider = ScriptedProvider(Completion(text="Here you go \ud83d", tokens_used=3))

    world.run(world.runner(provider))

    row = world.row
    assert row.status != JobStatus.RUNNING  # else it hangs until its lease runs out
    assert row.run_token is None
