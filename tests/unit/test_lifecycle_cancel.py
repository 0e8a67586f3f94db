"""Cancelling a job as its owner sees it: at once when pending, by its worker when running.

The events of a job's life are in test_lifecycle_events.
"""

from __future__ import annotations

import contextlib

import pytest

from server.errors import AgentQError, Conflict, NotFound
from server.providers.base import Completion, ProviderError
from server.store.models import JobStatus
from tests.fakes.provider import ScriptedProvider, Stream
from tests.unit.owners import Owner, unavailable
from tests.world import ALICE, ANSWER, BOB

# Cancelling a pending job.


async def test_cancelling_a_pending_job_cancels_it_at_once_with_a_cancelled_event(
    owner: Owner,
) -> None:
    job = await owner.execute()
    owner.world.clock.advance(3)

    cancelled = await owner.cancel(job)

    assert (cancelled.status, cancelled.completed_at) == (
        JobStatus.CANCELLED,
        owner.world.clock.now,
    )
    assert (await owner.job(job)).status == JobStatus.CANCELLED
    assert await owner.events(job) == [(1, "queued", 0), (2, "cancelled", 0)]


async def test_a_cancelled_job_is_never_run_by_a_later_message(owner: Owner) -> None:
    job = await owner.execute()
    await owner.cancel(job)
    provider = ScriptedProvider(ANSWER)

    await owner.run(owner.runner(provider), job)

    assert provider.calls == []
    final = await owner.job(job)
    assert (final.status, final.attempts) == (JobStatus.CANCELLED, 0)
    assert await owner.types(job) == ["queued", "cancelled"]
    assert owner.world.queue.calls == [(job, 0.0)]  # the execute's message only


async def test_a_job_waiting_for_its_retry_is_cancelled_at_once_and_not_retried(
    owner: Owner,
) -> None:
    job = await owner.execute()
    provider = ScriptedProvider(unavailable(), ANSWER)
    runner = owner.runner(provider, backoff_s=10)
    await owner.run(runner, job)

    await owner.cancel(job)
    owner.world.clock.advance(10)
    await owner.run(runner, job)  # the retry's delayed message

    assert len(provider.calls) == 1
    assert (await owner.job(job)).status == JobStatus.CANCELLED
    assert await owner.types(job) == ["queued", "started", "retrying", "cancelled"]


async def test_cancelling_a_cancelled_job_again_returns_it_unchanged(owner: Owner) -> None:
    job = await owner.execute()
    first = await owner.cancel(job)
    owner.world.clock.advance(60)

    second = await owner.cancel(job)

    assert (second.status, second.completed_at) == (JobStatus.CANCELLED, first.completed_at)
    assert await owner.types(job) == ["queued", "cancelled"]


# Cancelling a running job.


async def test_cancelling_a_running_job_asks_its_worker_to_stop_and_it_ends_cancelled(
    owner: Owner,
) -> None:
    job = await owner.execute()
    seen: list[tuple[str, bool]] = []

    async def cancelled_midway() -> Completion:
        answer = await owner.cancel(job)
        seen.append((answer.status, answer.cancel_requested))
        await owner.check()  # the worker's next cancel check
        return ANSWER

    provider = ScriptedProvider(cancelled_midway)
    await owner.run(owner.runner(provider), job)

    assert seen == [(JobStatus.RUNNING, True)]  # still running until its worker stops
    final = await owner.job(job)
    assert (final.status, final.completed_at, final.response) == (
        JobStatus.CANCELLED,
        owner.world.clock.now,
        None,
    )
    assert await owner.types(job) == ["queued", "started", "cancelled"]
    assert owner.world.queue.calls == [(job, 0.0)]
    assert provider.interrupted == 1


async def test_a_cancelled_stream_keeps_the_pieces_sent_before_the_cancel(owner: Owner) -> None:
    job = await owner.execute()

    async def cancel_after_the_first(index: int) -> None:
        if index == 0:
            await owner.cancel(job)
            await owner.check()

    stream = Stream(
        ("Revenue ", "grew ", "12%."), tokens_used=9, after_piece=cancel_after_the_first
    )
    await owner.run(owner.runner(ScriptedProvider(stream)), job)

    _, events = await owner.world.jobs.events_after(ALICE, job, 0)
    assert [(e.type, e.delta) for e in events] == [
        ("queued", None),
        ("started", None),
        ("token", "Revenue "),
        ("cancelled", None),
    ]
    assert (await owner.job(job)).status == JobStatus.CANCELLED


async def test_an_answer_that_comes_before_the_worker_sees_the_cancel_request_still_ends_cancelled(
    owner: Owner,
) -> None:
    job = await owner.execute()

    async def cancel_then_answer() -> Completion:
        # The request lands between two cancel checks: the worker never saw it.
        await owner.cancel(job)
        return ANSWER

    await owner.run(owner.runner(ScriptedProvider(cancel_then_answer)), job)

    final = await owner.job(job)
    assert (final.status, final.response, final.context_hash) == (JobStatus.CANCELLED, None, None)
    assert await owner.types(job) == ["queued", "started", "cancelled"]


async def test_an_attempt_that_fails_after_the_cancel_request_ends_cancelled_without_a_retry(
    owner: Owner,
) -> None:
    job = await owner.execute()

    async def cancel_then_fail() -> Completion:
        await owner.cancel(job)
        raise unavailable()

    await owner.run(owner.runner(ScriptedProvider(cancel_then_fail)), job)

    assert (await owner.job(job)).status == JobStatus.CANCELLED
    assert await owner.types(job) == ["queued", "started", "cancelled"]
    assert owner.world.queue.calls == [(job, 0.0)]  # no retry message


# Finished jobs.


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        (ANSWER, "completed"),
        (ProviderError("Provider rejected the request: HTTP 400", retryable=False), "failed"),
    ],
)
async def test_cancelling_a_finished_job_is_a_conflict_that_names_its_state(
    owner: Owner, outcome: Completion | ProviderError, status: str
) -> None:
    job = await owner.execute()
    await owner.run(owner.runner(ScriptedProvider(outcome)), job)
    before = await owner.events(job)

    with pytest.raises(Conflict) as error:
        await owner.cancel(job)

    assert error.value.message == f"Job {job} is already {status}"
    assert (await owner.job(job)).status == status
    assert await owner.events(job) == before


# Sub-agent jobs.


async def test_cancelling_a_job_cancels_its_unfinished_children_and_grandchildren_only(
    owner: Owner,
) -> None:
    parent = await owner.execute()
    child = await owner.execute(parent=parent)
    done_child = await owner.execute(parent=parent)
    await owner.run(owner.runner(ScriptedProvider(ANSWER)), done_child)
    grandchild = await owner.execute(parent=child)
    running_grandchild = await owner.execute(parent=child)
    during_cancel: dict[str, str] = {}

    async def cancel_the_parent_midway() -> Completion:
        await owner.cancel(parent)
        every_job = await owner.world.jobs.list_jobs(ALICE, size=100)
        during_cancel.update({j.id: j.status for j in every_job.items})
        await owner.check()
        return ANSWER

    await owner.run(owner.runner(ScriptedProvider(cancel_the_parent_midway)), running_grandchild)

    assert during_cancel == {
        parent: JobStatus.CANCELLED,
        child: JobStatus.CANCELLED,
        done_child: JobStatus.COMPLETED,
        grandchild: JobStatus.CANCELLED,
        running_grandchild: JobStatus.RUNNING,
    }
    assert (await owner.job(running_grandchild)).status == JobStatus.CANCELLED
    assert (await owner.job(done_child)).response == ANSWER.text
    assert await owner.types(done_child) == ["queued", "started", "completed"]


async def test_cancelling_a_child_leaves_its_parent_alone(owner: Owner) -> None:
    parent = await owner.execute()
    child = await owner.execute(parent=parent)

    await owner.cancel(child)

    assert (await owner.job(parent)).status == JobStatus.PENDING
    assert (await owner.job(child)).status == JobStatus.CANCELLED


async def test_cancel_reaches_an_unfinished_grandchild_below_a_finished_child(
    owner: Owner,
) -> None:
    # The child answered first; its own sub-agent job is still waiting.
    parent = await owner.execute()
    child = await owner.execute(parent=parent)
    grandchild = await owner.execute(parent=child)
    await owner.run(owner.runner(ScriptedProvider(ANSWER)), child)

    await owner.cancel(parent)

    assert (await owner.job(child)).status == JobStatus.COMPLETED
    assert (await owner.job(grandchild)).status == JobStatus.CANCELLED


async def test_a_sub_agent_job_spawned_after_its_parents_cancel_request_never_runs(
    owner: Owner,
) -> None:
    parent = await owner.execute()
    spawned: list[str] = []

    async def spawn_before_noticing_the_cancel() -> Completion:
        await owner.cancel(parent)
        with contextlib.suppress(AgentQError):  # refusing the spawn is fine too
            spawned.append(await owner.execute(parent=parent))
        await owner.check()
        return ANSWER

    await owner.run(owner.runner(ScriptedProvider(spawn_before_noticing_the_cancel)), parent)
    provider = ScriptedProvider(ANSWER)
    for child in spawned:
        await owner.run(owner.runner(provider), child)

    assert (await owner.job(parent)).status == JobStatus.CANCELLED
    assert provider.calls == []
    statuses = [(await owner.job(child)).status for child in spawned]
    assert statuses in ([], [JobStatus.CANCELLED])


# Other tenants.


async def test_another_tenant_can_neither_cancel_a_job_nor_read_its_events(owner: Owner) -> None:
    job = await owner.execute()

    with pytest.raises(NotFound) as cancel_error:
        await owner.world.jobs.cancel_job(BOB, job)
    with pytest.raises(NotFound) as events_error:
        await owner.world.jobs.events_after(BOB, job, 0)

    assert cancel_error.value.message == events_error.value.message == f"Job {job} not found"
    assert (await owner.job(job)).status == JobStatus.PENDING
    assert await owner.types(job) == ["queued"]
