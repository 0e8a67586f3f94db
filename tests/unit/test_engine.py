"""The execution engine runs admitted jobs on its own loop and stops cancelled calls."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from server.providers.base import Completion
from server.store.models import Job, JobStatus
from server.worker.engine import ExecutionEngine
from server.worker.policy import RetryPolicy
from server.worker.runner import AttemptRunner
from tests.unit.fakes import (
    FakeClock,
    FakeQueue,
    FakeStore,
    ScriptedProvider,
    attempt_runner,
    make_agent,
    make_job,
    slowly,
)

ANSWER = Completion(text="Revenue grew 12% on strong exports.", tokens_used=42)
WAIT_S = 5.0


class Worker:
    """An engine over a fake store, with one stored agent whose jobs it runs."""

    def __init__(self, provider: ScriptedProvider, *, concurrency: int = 4) -> None:
        self.store, self.clock, self.queue = FakeStore(), FakeClock(), FakeQueue()
        self.provider = provider
        self.agent = make_agent()
        self.store.put(self.agent)
        self.runner: AttemptRunner | None = None
        self.closed = False
        self.engine = ExecutionEngine(
            self._open_runner,
            send=self.queue.enqueue,
            concurrency=concurrency,
            cancel_poll_s=0.01,
        )

    async def _open_runner(self) -> AttemptRunner:
        self.runner = attempt_runner(
            self.store, self.provider, self.queue, RetryPolicy(), clock=self.clock
        )
        return self.runner

    def job(self, number: int = 0) -> Job:
        """A stored pending job, due now."""
        job = make_job(self.agent, id=f"00000000-0000-4000-8000-{number:012d}", at=self.clock.now)
        self.store.put(job)
        return job

    def status(self, job: Job) -> str:
        return str(self.store.jobs[job.id].status)

    def close(self, *, grace_s: float) -> None:
        """Stop the engine (once: a second close would wait on a stopped loop)."""
        if not self.closed:
            self.closed = True
            self.engine.close(grace_s=grace_s)

    def request_cancel(self, job: Job) -> None:
        """What CancelJob does to a running job."""
        with self.store.unit_of_work() as uow:
            assert uow.jobs.request_cancel(job.id)
            uow.commit()


def _until(condition: Callable[[], bool], *, within_s: float = WAIT_S) -> bool:
    """Whether the condition came true in time."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.fixture
def started() -> Iterator[Callable[[Worker], Worker]]:
    workers: list[Worker] = []

    def start(worker: Worker) -> Worker:
        worker.engine.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.close(grace_s=0)


def test_an_admitted_job_runs_to_its_outcome_and_closing_releases_the_provider(
    started: Callable[[Worker], Worker],
) -> None:
    worker = started(Worker(ScriptedProvider(ANSWER)))
    job = worker.job()

    assert worker.engine.admit(job.id)

    assert _until(lambda: worker.status(job) == JobStatus.COMPLETED)
    assert worker.store.jobs[job.id].response == ANSWER.text
    worker.close(grace_s=1)
    assert worker.provider.closed


def test_a_cancel_request_stops_the_running_call_within_a_check(
    started: Callable[[Worker], Worker],
) -> None:
    worker = started(Worker(ScriptedProvider(slowly(30, ANSWER))))
    job = worker.job()
    worker.engine.admit(job.id)
    assert _until(lambda: worker.engine.in_flight == 1)

    worker.request_cancel(job)

    assert _until(lambda: worker.status(job) == JobStatus.CANCELLED)
    assert worker.provider.interrupted == 1
    assert _until(lambda: worker.engine.in_flight == 0)


def test_jobs_run_side_by_side_up_to_the_concurrency(
    started: Callable[[Worker], Worker],
) -> None:
    worker = started(Worker(ScriptedProvider(*(slowly(30, ANSWER) for _ in range(3)))))
    jobs = [worker.job(n) for n in range(3)]

    for job in jobs:
        assert worker.engine.admit(job.id)

    assert _until(lambda: len(worker.provider.calls) == 3)
    assert {worker.status(job) for job in jobs} == {JobStatus.RUNNING}


def test_closing_interrupts_running_calls_and_gives_their_jobs_back_at_once(
    started: Callable[[Worker], Worker],
) -> None:
    worker = started(Worker(ScriptedProvider(slowly(30, ANSWER))))
    job = worker.job()
    worker.engine.admit(job.id)
    assert _until(lambda: worker.engine.in_flight == 1)

    worker.close(grace_s=0)

    row = worker.store.jobs[job.id]
    assert (row.status, row.run_token) == (JobStatus.PENDING, None)
    assert row.last_error == "Attempt was interrupted: its worker shut down"
    assert worker.queue.calls == [(job.id, 0.0)]
    assert not worker.engine.admit(job.id)  # a closed engine takes nothing more


def test_a_duplicate_message_for_a_running_job_leaves_its_cancel_check_in_place(
    started: Callable[[Worker], Worker],
) -> None:
    worker = started(Worker(ScriptedProvider(slowly(30, ANSWER))))
    job = worker.job()
    worker.engine.admit(job.id)
    assert _until(lambda: worker.engine.in_flight == 1)

    worker.engine.admit(job.id)  # a message sent again; its claim finds the job running
    time.sleep(0.05)
    worker.request_cancel(job)

    # A hundred cancel checks' time.
    assert _until(lambda: worker.status(job) == JobStatus.CANCELLED, within_s=1)
