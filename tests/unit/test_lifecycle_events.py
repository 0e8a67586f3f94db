"""A job's life as its owner sees it: numbered events from queued to the end.

Cancelling is in test_lifecycle_cancel.
"""

from __future__ import annotations

import asyncio

from server.providers.base import Completion, ProviderError
from server.store.models import JobStatus
from server.store.transitions import Transition
from server.worker.runner import AttemptRunner
from server.worker.store import DatabaseAttemptStore
from tests.fakes.provider import ScriptedProvider, Stream
from tests.unit.owners import UNAVAILABLE, Owner, unavailable
from tests.world import ALICE, ANSWER


async def test_a_completed_job_tells_queued_started_and_completed_numbered_from_one(
    owner: Owner,
) -> None:
    job = await owner.execute()
    assert await owner.events(job) == [(1, "queued", 0)]

    await owner.run(owner.runner(ScriptedProvider(ANSWER)), job)

    assert await owner.events(job) == [(1, "queued", 0), (2, "started", 1), (3, "completed", 1)]
    assert await owner.events(job, after=1) == [(2, "started", 1), (3, "completed", 1)]
    assert await owner.events(job, after=3) == []


async def test_event_times_are_when_each_transition_happened(owner: Owner) -> None:
    clock = owner.world.clock
    queued_at = clock.now
    job = await owner.execute()
    started_at = clock.advance(5)

    def take_a_while() -> Completion:
        clock.advance(7)
        return ANSWER

    await owner.run(owner.runner(ScriptedProvider(take_a_while)), job)

    _, events = await owner.world.jobs.events_after(ALICE, job, 0)
    assert [e.created_at for e in events] == [queued_at, started_at, clock.now]


async def test_a_retried_job_tells_why_and_how_long_it_waits_before_its_second_attempt(
    owner: Owner,
) -> None:
    job = await owner.execute()
    runner = owner.runner(ScriptedProvider(unavailable(), ANSWER), backoff_s=2)

    await owner.run(runner, job)
    owner.world.clock.advance(2)
    await owner.run(runner, job)

    assert await owner.events(job) == [
        (1, "queued", 0),
        (2, "started", 1),
        (3, "retrying", 1),
        (4, "started", 2),
        (5, "completed", 2),
    ]
    _, events = await owner.world.jobs.events_after(ALICE, job, 2, limit=1)
    assert (events[0].error, events[0].delay_s) == (UNAVAILABLE, 2.0)


async def test_a_failed_job_ends_with_a_failed_event_carrying_its_error(owner: Owner) -> None:
    job = await owner.execute()
    refused = ProviderError("Provider rejected the request: HTTP 400", retryable=False)

    await owner.run(owner.runner(ScriptedProvider(refused)), job)

    _, events = await owner.world.jobs.events_after(ALICE, job, 0)
    assert [(e.type, e.attempt) for e in events] == [("queued", 0), ("started", 1), ("failed", 1)]
    assert events[-1].error == "Provider rejected the request: HTTP 400"
    assert (await owner.job(job)).status == JobStatus.FAILED


async def test_event_numbers_have_no_gaps_or_repeats_through_every_retry(owner: Owner) -> None:
    job = await owner.execute()
    runner = owner.runner(ScriptedProvider(*(unavailable() for _ in range(4))), max_attempts=4)

    for _ in range(4):
        await owner.run(runner, job)
        owner.world.clock.set((await owner.job(job)).next_run_at)

    events = await owner.events(job)
    assert [sequence for sequence, _, _ in events] == list(range(1, 10))
    assert [kind for _, kind, _ in events] == [
        "queued",
        *(["started", "retrying"] * 3),
        "started",
        "failed",
    ]
    assert [attempt for _, kind, attempt in events if kind == "started"] == [1, 2, 3, 4]


class CountingStore(DatabaseAttemptStore):
    """The runner's store, counting the transitions it has finished applying."""

    applied = 0

    async def apply(self, change: Transition) -> bool:
        applied = await super().apply(change)
        self.applied += 1
        return applied


async def test_streamed_pieces_of_the_answer_arrive_as_token_events_between_start_and_end(
    owner: Owner,
) -> None:
    job = await owner.execute()
    world = owner.world
    store = CountingStore(world.store)

    async def until_it_is_recorded(index: int) -> None:
        # Pieces further apart than a write takes are each an event of their own. Until
        # the answer, the runner's only transitions are its token events.
        for _ in range(2000):
            if store.applied > index:
                return
            await asyncio.sleep(0.001)

    stream = Stream(("Revenue ", "grew ", "12%."), tokens_used=9, after_piece=until_it_is_recorded)
    provider = ScriptedProvider(stream)
    runner = AttemptRunner(
        store, provider, world.queue, world.policy, clock=world.clock, token_interval_s=0
    )

    await owner.run(runner, job)

    _, events = await world.jobs.events_after(ALICE, job, 0)
    assert [(e.sequence, e.type, e.delta) for e in events] == [
        (1, "queued", None),
        (2, "started", None),
        (3, "token", "Revenue "),
        (4, "token", "grew "),
        (5, "token", "12%."),
        (6, "completed", None),
    ]
    assert (await owner.job(job)).response == "Revenue grew 12%."
    assert provider.calls[0].streams
