"""A failed or timed-out attempt is retried with backoff, until the job's last attempt."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from server.providers.base import Completion, ProviderError
from server.store.models import JobStatus
from server.worker.policy import RetryPolicy
from tests.fakes.provider import ScriptedProvider, Stream, slowly
from tests.unit.one_job import OneJob
from tests.world import ANSWER


def _unavailable(tokens_used: int = 0, n: int = 503) -> ProviderError:
    return ProviderError(f"Provider returned HTTP {n}", retryable=True, tokens_used=tokens_used)


async def test_a_retryable_error_sends_the_job_back_to_pending_with_backoff(one: OneJob) -> None:
    provider = ScriptedProvider(_unavailable())

    await one.run(one.runner(provider, backoff_s=1))

    row = await one.row()
    assert row.status == JobStatus.PENDING
    assert row.attempts == 1
    assert row.next_run_at == one.clock.now + timedelta(seconds=1)
    assert row.last_error == "Provider returned HTTP 503"
    assert (row.error, row.completed_at, row.response, row.run_token) == (None, None, None, None)
    assert one.queue.calls == [(one.job.id, 1.0)]


async def test_each_retry_waits_twice_as_long_as_the_one_before(one: OneJob) -> None:
    provider = ScriptedProvider(_unavailable(), _unavailable(), _unavailable(), ANSWER)
    runner = one.runner(provider, max_attempts=4, backoff_s=1)

    await one.run_when_due(runner, 4)

    row = await one.row()
    assert [delay for _, delay in one.queue.calls] == [1.0, 2.0, 4.0]
    assert (row.status, row.attempts) == (JobStatus.COMPLETED, 4)


async def test_backoff_stops_growing_at_its_maximum(one: OneJob) -> None:
    errors = [_unavailable() for _ in range(4)]
    runner = one.runner(ScriptedProvider(*errors), max_attempts=5, backoff_s=1, backoff_max_s=3)

    await one.run_when_due(runner, 4)

    assert [delay for _, delay in one.queue.calls] == [1.0, 2.0, 3.0, 3.0]


async def test_after_the_last_attempt_fails_the_job_fails_with_the_last_error_and_all_tokens(
    one: OneJob,
) -> None:
    provider = ScriptedProvider(
        _unavailable(tokens_used=3, n=502),
        _unavailable(tokens_used=4, n=503),
        _unavailable(tokens_used=5, n=504),
    )
    runner = one.runner(provider, max_attempts=3, backoff_s=1)

    await one.run_when_due(runner, 3)

    row = await one.row()
    assert row.status == JobStatus.FAILED
    assert row.error == row.last_error == "Provider returned HTTP 504"
    assert (row.response, row.tokens_used, row.attempts) == ("", 3 + 4 + 5, 3)
    assert row.completed_at == one.clock.now
    assert row.context_hash is None
    assert [delay for _, delay in one.queue.calls] == [1.0, 2.0]  # no retry after the last
    assert [event.type for event in await one.world.events(one.job.id)] == [
        "queued",
        *(["started", "retrying"] * 2),
        "started",
        "failed",
    ]


async def test_tokens_spent_on_failed_attempts_count_toward_a_later_success(one: OneJob) -> None:
    runner = one.runner(ScriptedProvider(_unavailable(tokens_used=5), ANSWER))

    await one.run_when_due(runner, 2)

    row = await one.row()
    assert (row.status, row.attempts, row.tokens_used) == (JobStatus.COMPLETED, 2, 5 + 42)
    assert row.error is None


async def test_a_permanent_error_fails_the_job_at_once(one: OneJob) -> None:
    refused = ProviderError("Provider rejected the request: HTTP 400", retryable=False)
    provider = ScriptedProvider(refused, ANSWER)

    await one.run(one.runner(provider, max_attempts=3))

    row = await one.row()
    assert row.status == JobStatus.FAILED
    assert row.error == "Provider rejected the request: HTTP 400"
    assert (row.attempts, row.response, row.completed_at) == (1, "", one.clock.now)
    assert len(provider.calls) == 1
    assert one.queue.calls == []


async def test_an_unexpected_provider_exception_is_retried_without_leaking_its_text(
    one: OneJob,
) -> None:
    provider = ScriptedProvider(KeyError("choices"))

    await one.run(one.runner(provider, backoff_s=1))

    row = await one.row()
    assert (row.status, row.attempts) == (JobStatus.PENDING, 1)
    assert row.last_error == "Provider failed unexpectedly"
    assert one.queue.calls == [(one.job.id, 1.0)]


async def test_a_timeout_error_escaping_the_provider_is_not_taken_for_the_time_limit(
    one: OneJob,
) -> None:
    provider = ScriptedProvider(TimeoutError("a library's own"))

    await one.run(one.runner(provider, backoff_s=1))

    row = await one.row()
    assert (row.status, row.attempts) == (JobStatus.PENDING, 1)
    assert row.last_error == "Provider failed unexpectedly"


async def test_a_retry_whose_message_could_not_be_sent_is_sent_again_by_recovery(
    one: OneJob,
) -> None:
    one.world.policy = RetryPolicy(backoff_s=10)
    runner = one.world.runner(ScriptedProvider(_unavailable(), ANSWER))
    recovery = one.world.recovery(requeue_after_s=30)
    one.queue.error = ConnectionError("Redis is down")
    await one.run(runner)  # the attempt is recorded; only its message is lost
    one.queue.error = None
    row = await one.row()
    assert (row.status, row.last_error) == (JobStatus.PENDING, "Provider returned HTTP 503")

    one.clock.advance(10 + 29)
    await recovery.sweep()
    assert one.queue.calls == [(one.job.id, 10.0)]  # not overdue yet: due 10s, then 30s
    one.clock.advance(2)
    await recovery.sweep()
    await one.run(runner)

    row = await one.row()
    assert one.queue.calls == [(one.job.id, 10.0), (one.job.id, 0.0)]
    assert (row.status, row.attempts) == (JobStatus.COMPLETED, 2)


async def test_a_message_that_arrives_before_the_backoff_ends_waits_for_the_rest_of_it(
    one: OneJob,
) -> None:
    provider = ScriptedProvider(_unavailable(), ANSWER)
    runner = one.runner(provider, backoff_s=10)
    await one.run(runner)

    one.clock.advance(4)
    assert not await one.run(runner)

    row = await one.row()
    assert len(provider.calls) == 1
    assert (row.status, row.attempts) == (JobStatus.PENDING, 1)
    assert one.queue.calls == [(one.job.id, 10.0), (one.job.id, 6.0)]


# The time limit.


async def test_the_time_limit_cuts_a_slow_call_and_the_attempt_is_retried(one: OneJob) -> None:
    provider = ScriptedProvider(slowly(30, Completion(text="late", tokens_used=9)), ANSWER)
    runner = one.runner(provider, time_limit_s=0.05, backoff_s=1)

    started = time.monotonic()
    await one.run(runner)

    assert time.monotonic() - started < 10  # cut at the limit, not left to answer
    row = await one.row()
    assert (row.status, row.attempts) == (JobStatus.PENDING, 1)
    assert row.last_error == "Job exceeded its time limit of 0.05s"
    assert (row.response, row.context_hash, row.tokens_used) == (None, None, 0)
    assert one.queue.calls == [(one.job.id, 1.0)]

    one.clock.set(row.next_run_at)
    await one.run(runner)

    row = await one.row()
    assert (row.status, row.attempts, row.response) == (JobStatus.COMPLETED, 2, ANSWER.text)


async def test_a_last_attempt_cut_by_the_time_limit_fails_the_job(one: OneJob) -> None:
    stalled = Stream(("Revenue ",), tokens_used=3, after_piece=lambda _: asyncio.sleep(30))

    await one.run(one.runner(ScriptedProvider(stalled), max_attempts=1, time_limit_s=0.05))

    row = await one.row()
    assert (row.status, row.attempts) == (JobStatus.FAILED, 1)
    assert row.error == "Job exceeded its time limit of 0.05s"
    assert (row.response, row.context_hash) == ("", None)
    assert (await one.world.events(one.job.id))[-1].type == "failed"
    assert one.queue.calls == []
