"""A job's life as its owner sees it: numbered events from queued to the end, and cancel."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import pytest

from server.auth.principal import Principal
from server.errors import AgentQError, Conflict, NotFound
from server.providers.base import Completion, ProviderError
from server.services import AgentService, JobService
from server.store.models import Agent, Job, JobStatus
from server.validation import agent_spec, execution_spec
from server.worker.policy import RetryPolicy
from server.worker.runner import AttemptRunner
from tests.unit.fakes import (
    FakeClock,
    FakeQueue,
    FakeStore,
    ManualCancelCheck,
    ScriptedProvider,
    Stream,
    attempt_runner,
    run_job,
)

ALICE = Principal(subject="alice", role="user", tenant_id="acme")
BOB = Principal(subject="bob", role="user", tenant_id="globex")
ANSWER = Completion(text="Revenue grew 12% on strong exports.", tokens_used=42)
UNAVAILABLE = "Provider returned HTTP 503"


def _unavailable() -> ProviderError:
    return ProviderError(UNAVAILABLE, retryable=True)


@dataclass
class World:
    """One agent of ALICE's, the services over a fake store, and a worker's cancel check."""

    store: FakeStore
    clock: FakeClock
    queue: FakeQueue
    watch: ManualCancelCheck
    agents: AgentService
    jobs: JobService
    agent: Agent

    def execute(self, *, parent: Job | None = None) -> Job:
        spec = execution_spec(
            prompt="Summarise the quarterly report.",
            context_id=None,
            enable_adversarial=False,
            enable_self_correction=False,
            max_debate_rounds=None,
        )
        parent_id = None if parent is None else parent.id
        return self.jobs.execute(ALICE, self.agent.id, spec, parent_job_id=parent_id)

    def runner(self, provider: ScriptedProvider, **policy: Any) -> AttemptRunner:
        return attempt_runner(
            self.store, provider, self.queue, RetryPolicy(**policy), clock=self.clock
        )

    def run(self, runner: AttemptRunner, job_id: str) -> bool:
        """Deliver one message for the job to the worker, its attempt watched for cancels."""
        return run_job(runner, job_id, self.watch.signal(job_id))

    def job(self, job_id: str) -> Job:
        return self.jobs.get_job(ALICE, job_id)

    def events(self, job_id: str, after: int = 0) -> list[tuple[int, str, int]]:
        """(sequence, type, attempt) of the job's events, as a watcher gets them."""
        _, events = self.jobs.events_after(ALICE, job_id, after)
        return [(e.sequence, e.type, e.attempt) for e in events]

    def types(self, job_id: str) -> list[str]:
        return [kind for _, kind, _ in self.events(job_id)]


@pytest.fixture
def world() -> World:
    store, clock, queue = FakeStore(), FakeClock(), FakeQueue()
    agents = AgentService(store.unit_of_work, clock=clock)
    spec = agent_spec(
        name="Researcher", role="You are a careful researcher.", max_depth=3, spawn_shadow=False
    )
    return World(
        store=store,
        clock=clock,
        queue=queue,
        watch=ManualCancelCheck(store.unit_of_work),
        agents=agents,
        jobs=JobService(store.unit_of_work, queue, clock=clock),
        agent=agents.create_agent(ALICE, spec),
    )


# Events.


def test_a_completed_job_tells_queued_started_and_completed_numbered_from_one(
    world: World,
) -> None:
    job = world.execute()
    assert world.events(job.id) == [(1, "queued", 0)]

    world.run(world.runner(ScriptedProvider(ANSWER)), job.id)

    assert world.events(job.id) == [(1, "queued", 0), (2, "started", 1), (3, "completed", 1)]
    assert world.events(job.id, after=1) == [(2, "started", 1), (3, "completed", 1)]
    assert world.events(job.id, after=3) == []


def test_event_times_are_when_each_transition_happened(world: World) -> None:
    queued_at = world.clock.now
    job = world.execute()
    started_at = world.clock.advance(5)

    def take_a_while() -> Completion:
        world.clock.advance(7)
        return ANSWER

    world.run(world.runner(ScriptedProvider(take_a_while)), job.id)

    _, events = world.jobs.events_after(ALICE, job.id, 0)
    assert [e.created_at for e in events] == [queued_at, started_at, world.clock.now]


def test_a_retried_job_tells_why_and_how_long_it_waits_before_its_second_attempt(
    world: World,
) -> None:
    job = world.execute()
    runner = world.runner(ScriptedProvider(_unavailable(), ANSWER), backoff_s=2)

    world.run(runner, job.id)
    world.clock.advance(2)
    world.run(runner, job.id)

    assert world.events(job.id) == [
        (1, "queued", 0),
        (2, "started", 1),
        (3, "retrying", 1),
        (4, "started", 2),
        (5, "completed", 2),
    ]
    _, events = world.jobs.events_after(ALICE, job.id, 2, limit=1)
    assert (events[0].error, events[0].delay_s) == (UNAVAILABLE, 2.0)


def test_a_failed_job_ends_with_a_failed_event_carrying_its_error(world: World) -> None:
    job = world.execute()
    refused = ProviderError("Provider rejected the request: HTTP 400", retryable=False)

    world.run(world.runner(ScriptedProvider(refused)), job.id)

    _, events = world.jobs.events_after(ALICE, job.id, 0)
    assert [(e.type, e.attempt) for e in events] == [("queued", 0), ("started", 1), ("failed", 1)]
    assert events[-1].error == "Provider rejected the request: HTTP 400"
    assert world.job(job.id).status == JobStatus.FAILED


def test_event_numbers_have_no_gaps_or_repeats_through_every_retry(world: World) -> None:
    job = world.execute()
    runner = world.runner(ScriptedProvider(*(_unavailable() for _ in range(4))), max_attempts=4)

    for _ in range(4):
        world.run(runner, job.id)
        world.clock.set(world.store.jobs[job.id].next_run_at)

    events = world.events(job.id)
    assert [sequence for sequence, _, _ in events] == list(range(1, 10))
    assert [kind for _, kind, _ in events] == [
        "queued",
        *(["started", "retrying"] * 3),
        "started",
        "failed",
    ]
    assert [attempt for _, kind, attempt in events if kind == "started"] == [1, 2, 3, 4]


def test_streamed_pieces_of_the_answer_arrive_as_token_events_between_start_and_end(
    world: World,
) -> None:
    job = world.execute()

    async def until_it_is_recorded(index: int) -> None:
        # Pieces further apart than a write takes are each an event of their own.
        for _ in range(2000):
            if len([e for e in world.store.events_of(job.id) if e.type == "token"]) > index:
                return
            await asyncio.sleep(0.001)

    stream = Stream(("Revenue ", "grew ", "12%."), tokens_used=9, after_piece=until_it_is_recorded)
    provider = ScriptedProvider(stream)

    world.run(world.runner(provider), job.id)

    _, events = world.jobs.events_after(ALICE, job.id, 0)
    assert [(e.sequence, e.type, e.delta) for e in events] == [
        (1, "queued", None),
        (2, "started", None),
        (3, "token", "Revenue "),
        (4, "token", "grew "),
        (5, "token", "12%."),
        (6, "completed", None),
    ]
    assert world.job(job.id).response == "Revenue grew 12%."
    assert provider.calls[0].streams


# Cancelling a pending job.


def test_cancelling_a_pending_job_cancels_it_at_once_with_a_cancelled_event(
    world: World,
) -> None:
    job = world.execute()
    world.clock.advance(3)

    cancelled = world.jobs.cancel_job(ALICE, job.id)

    assert (cancelled.status, cancelled.completed_at) == (JobStatus.CANCELLED, world.clock.now)
    assert world.job(job.id).status == JobStatus.CANCELLED
    assert world.events(job.id) == [(1, "queued", 0), (2, "cancelled", 0)]


def test_a_cancelled_job_is_never_run_by_a_later_message(world: World) -> None:
    job = world.execute()
    world.jobs.cancel_job(ALICE, job.id)
    provider = ScriptedProvider(ANSWER)

    world.run(world.runner(provider), job.id)

    assert provider.calls == []
    assert (world.job(job.id).status, world.job(job.id).attempts) == (JobStatus.CANCELLED, 0)
    assert world.types(job.id) == ["queued", "cancelled"]
    assert world.queue.calls == [(job.id, 0.0)]  # the execute's message only


def test_a_job_waiting_for_its_retry_is_cancelled_at_once_and_not_retried(world: World) -> None:
    job = world.execute()
    provider = ScriptedProvider(_unavailable(), ANSWER)
    runner = world.runner(provider, backoff_s=10)
    world.run(runner, job.id)

    world.jobs.cancel_job(ALICE, job.id)
    world.clock.advance(10)
    world.run(runner, job.id)  # the retry's delayed message

    assert len(provider.calls) == 1
    assert world.job(job.id).status == JobStatus.CANCELLED
    assert world.types(job.id) == ["queued", "started", "retrying", "cancelled"]


def test_cancelling_a_cancelled_job_again_returns_it_unchanged(world: World) -> None:
    job = world.execute()
    first = world.jobs.cancel_job(ALICE, job.id)
    world.clock.advance(60)

    second = world.jobs.cancel_job(ALICE, job.id)

    assert (second.status, second.completed_at) == (JobStatus.CANCELLED, first.completed_at)
    assert world.types(job.id) == ["queued", "cancelled"]


# Cancelling a running job.


def test_cancelling_a_running_job_asks_its_worker_to_stop_and_it_ends_cancelled(
    world: World,
) -> None:
    job = world.execute()
    seen: list[tuple[str, bool]] = []

    def cancelled_midway() -> Completion:
        answer = world.jobs.cancel_job(ALICE, job.id)
        seen.append((answer.status, answer.cancel_requested))
        world.watch.check()  # the worker's next cancel check
        return ANSWER

    provider = ScriptedProvider(cancelled_midway)
    world.run(world.runner(provider), job.id)

    assert seen == [(JobStatus.RUNNING, True)]  # still running until its worker stops
    final = world.job(job.id)
    assert (final.status, final.completed_at, final.response) == (
        JobStatus.CANCELLED,
        world.clock.now,
        None,
    )
    assert world.types(job.id) == ["queued", "started", "cancelled"]
    assert world.queue.calls == [(job.id, 0.0)]
    assert provider.interrupted == 1


def test_a_cancelled_stream_keeps_the_pieces_sent_before_the_cancel(world: World) -> None:
    job = world.execute()

    def cancel_after_the_first(index: int) -> None:
        if index == 0:
            world.jobs.cancel_job(ALICE, job.id)
            world.watch.check()

    stream = Stream(
        ("Revenue ", "grew ", "12%."), tokens_used=9, after_piece=cancel_after_the_first
    )
    world.run(world.runner(ScriptedProvider(stream)), job.id)

    _, events = world.jobs.events_after(ALICE, job.id, 0)
    assert [(e.type, e.delta) for e in events] == [
        ("queued", None),
        ("started", None),
        ("token", "Revenue "),
        ("cancelled", None),
    ]
    assert world.job(job.id).status == JobStatus.CANCELLED


def test_an_answer_that_comes_before_the_worker_sees_the_cancel_request_still_ends_cancelled(
    world: World,
) -> None:
    job = world.execute()

    def cancel_then_answer() -> Completion:
        # The request lands between two cancel checks: the worker never saw it.
        world.jobs.cancel_job(ALICE, job.id)
        return ANSWER

    world.run(world.runner(ScriptedProvider(cancel_then_answer)), job.id)

    final = world.job(job.id)
    assert (final.status, final.response, final.context_hash) == (JobStatus.CANCELLED, None, None)
    assert world.types(job.id) == ["queued", "started", "cancelled"]


def test_an_attempt_that_fails_after_the_cancel_request_ends_cancelled_without_a_retry(
    world: World,
) -> None:
    job = world.execute()

    def cancel_then_fail() -> Completion:
        world.jobs.cancel_job(ALICE, job.id)
        raise _unavailable()

    world.run(world.runner(ScriptedProvider(cancel_then_fail)), job.id)

    assert world.job(job.id).status == JobStatus.CANCELLED
    assert world.types(job.id) == ["queued", "started", "cancelled"]
    assert world.queue.calls == [(job.id, 0.0)]  # no retry message


# Finished jobs.


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        (ANSWER, "completed"),
        (ProviderError("Provider rejected the request: HTTP 400", retryable=False), "failed"),
    ],
)
def test_cancelling_a_finished_job_is_a_conflict_that_names_its_state(
    world: World, outcome: Completion | ProviderError, status: str
) -> None:
    job = world.execute()
    world.run(world.runner(ScriptedProvider(outcome)), job.id)
    before = world.events(job.id)

    with pytest.raises(Conflict) as error:
        world.jobs.cancel_job(ALICE, job.id)

    assert error.value.message == f"Job {job.id} is already {status}"
    assert world.job(job.id).status == status
    assert world.events(job.id) == before


# Sub-agent jobs.


def test_cancelling_a_job_cancels_its_unfinished_children_and_grandchildren_only(
    world: World,
) -> None:
    parent = world.execute()
    child = world.execute(parent=parent)
    done_child = world.execute(parent=parent)
    world.run(world.runner(ScriptedProvider(ANSWER)), done_child.id)
    grandchild = world.execute(parent=child)
    running_grandchild = world.execute(parent=child)
    during_cancel: dict[str, str] = {}

    def cancel_the_parent_midway() -> Completion:
        world.jobs.cancel_job(ALICE, parent.id)
        during_cancel.update({j: world.job(j).status for j in world.store.jobs})
        world.watch.check()
        return ANSWER

    world.run(world.runner(ScriptedProvider(cancel_the_parent_midway)), running_grandchild.id)

    assert during_cancel == {
        parent.id: JobStatus.CANCELLED,
        child.id: JobStatus.CANCELLED,
        done_child.id: JobStatus.COMPLETED,
        grandchild.id: JobStatus.CANCELLED,
        running_grandchild.id: JobStatus.RUNNING,
    }
    assert world.job(running_grandchild.id).status == JobStatus.CANCELLED
    assert world.job(done_child.id).response == ANSWER.text
    assert world.types(done_child.id) == ["queued", "started", "completed"]


def test_cancelling_a_child_leaves_its_parent_alone(world: World) -> None:
    parent = world.execute()
    child = world.execute(parent=parent)

    world.jobs.cancel_job(ALICE, child.id)

    assert world.job(parent.id).status == JobStatus.PENDING
    assert world.job(child.id).status == JobStatus.CANCELLED


def test_cancel_reaches_an_unfinished_grandchild_below_a_finished_child(world: World) -> None:
    # The child answered first; its own sub-agent job is still waiting.
    parent = world.execute()
    child = world.execute(parent=parent)
    grandchild = world.execute(parent=child)
    world.run(world.runner(ScriptedProvider(ANSWER)), child.id)

    world.jobs.cancel_job(ALICE, parent.id)

    assert world.job(child.id).status == JobStatus.COMPLETED
    assert world.job(grandchild.id).status == JobStatus.CANCELLED


def test_a_sub_agent_job_spawned_after_its_parents_cancel_request_never_runs(
    world: World,
) -> None:
    parent = world.execute()
    spawned: list[Job] = []

    def spawn_before_noticing_the_cancel() -> Completion:
        world.jobs.cancel_job(ALICE, parent.id)
        with contextlib.suppress(AgentQError):  # refusing the spawn is fine too
            spawned.append(world.execute(parent=parent))
        world.watch.check()
        return ANSWER

    world.run(world.runner(ScriptedProvider(spawn_before_noticing_the_cancel)), parent.id)
    provider = ScriptedProvider(ANSWER)
    for child in spawned:
        world.run(world.runner(provider), child.id)

    assert world.job(parent.id).status == JobStatus.CANCELLED
    assert provider.calls == []
    assert [world.job(child.id).status for child in spawned] in ([], [JobStatus.CANCELLED])


# Other tenants.


def test_another_tenant_can_neither_cancel_a_job_nor_read_its_events(world: World) -> None:
    job = world.execute()

    with pytest.raises(NotFound) as cancel_error:
        world.jobs.cancel_job(BOB, job.id)
    with pytest.raises(NotFound) as events_error:
        world.jobs.events_after(BOB, job.id, 0)

    assert cancel_error.value.message == events_error.value.message == f"Job {job.id} not found"
    assert world.job(job.id).status == JobStatus.PENDING
    assert world.types(job.id) == ["queued"]
