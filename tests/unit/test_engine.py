"""The execution engine runs admitted jobs on its own loop and stops cancelled calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from server.providers.base import Completion
from server.store.models import Base, JobStatus
from server.store.records import JobRecord
from server.store.sqlite import SqliteDatabase
from server.store.store import Store
from server.worker.engine import ExecutionEngine
from server.worker.runner import AttemptRunner
from tests.fakes.clock import FakeClock
from tests.fakes.provider import ScriptedProvider, slowly
from tests.fakes.queue import FakeQueue
from tests.world import ALICE, World

ANSWER = Completion(text="Revenue grew 12% on strong exports.", tokens_used=42)
WAIT_S = 5.0

T = TypeVar("T")


async def _file_store(path: Path) -> Store:
    """The store on a SQLite file, as a worker on SQLite has it: a pool of connections."""
    return Store(SqliteDatabase.open(f"sqlite:///{path}", pool_size=4))


class Worker:
    """An engine on a SQLite file, with one stored agent whose jobs it runs.

    The engine opens its store on its own loop; the test reads and writes the same file
    through a world of its own, on a loop of its own (`on_test_loop`).
    """

    def __init__(self, path: Path, provider: ScriptedProvider, *, concurrency: int = 4) -> None:
        self.path = path
        self.clock, self.queue = FakeClock(), FakeQueue()
        self.provider = provider
        self.closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._test_loop = asyncio.Runner()
        self.world = World(self.on_test_loop(_file_store(path)), clock=self.clock, queue=self.queue)
        self.on_test_loop(self._create_schema())
        self.agent = self.on_test_loop(self.world.add_agent())
        self.engine = ExecutionEngine(
            self._open_runner,
            send=self.queue.enqueue,
            concurrency=concurrency,
            cancel_poll_s=0.01,
            loop_factory=self._new_loop,
        )

    async def _create_schema(self) -> None:
        db = self.world.store.db
        assert isinstance(db, SqliteDatabase)
        await db.run_sync(Base.metadata.create_all)

    def _new_loop(self) -> asyncio.AbstractEventLoop:
        self._loop = asyncio.new_event_loop()
        return self._loop

    async def _open_runner(self) -> AttemptRunner:
        # The engine's own store, on its loop, as a worker opens it.
        own = World(await _file_store(self.path), clock=self.clock, queue=self.queue)
        return own.runner(self.provider)

    def on_test_loop(self, work: Coroutine[Any, Any, T]) -> T:
        """Run `work` on the test's loop (not the engine's)."""
        return self._test_loop.run(work)

    def job(self) -> JobRecord:
        """A stored pending job, due now."""
        return self.on_test_loop(self.world.add_job(self.agent))

    def running_job(self) -> JobRecord:
        """A stored job, admitted and waited on until its provider call is under way."""
        job = self.job()
        self.engine.admit(job.id)
        assert _until(lambda: self.engine.in_flight == 1)
        return job

    def row(self, job: JobRecord) -> JobRecord:
        row = self.on_test_loop(self.world.job(job.id))
        assert row is not None
        return row

    def status(self, job: JobRecord) -> str:
        return self.row(job).status

    def close(self, *, grace_s: float) -> None:
        """Stop the engine (once: a second close would wait on a stopped loop)."""
        if not self.closed:
            self.closed = True
            self.engine.close(grace_s=grace_s)

    def release(self) -> None:
        """Close the engine and its loop, then the test's store and loop."""
        self.close(grace_s=0)
        if self._loop is not None:
            self._loop.close()
        self.on_test_loop(self.world.store.db.close())
        self._test_loop.close()

    def request_cancel(self, job: JobRecord) -> None:
        """What CancelJob does to a running job."""
        self.on_test_loop(self.world.jobs.cancel_job(ALICE, job.id))


def _until(condition: Callable[[], bool], *, within_s: float = WAIT_S) -> bool:
    """Whether the condition came true in time."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Callable[[ScriptedProvider], Worker]]:
    """Start a worker with this provider; every one is released after the test."""
    workers: list[Worker] = []

    def start(provider: ScriptedProvider) -> Worker:
        worker = Worker(tmp_path / f"agentq-{len(workers)}.db", provider)
        workers.append(worker)
        worker.engine.start()
        return worker

    yield start
    for worker in workers:
        worker.release()


def test_an_admitted_job_runs_to_its_outcome_and_closing_releases_the_provider(
    started: Callable[[ScriptedProvider], Worker],
) -> None:
    worker = started(ScriptedProvider(ANSWER))
    job = worker.job()

    assert worker.engine.admit(job.id)

    assert _until(lambda: worker.status(job) == JobStatus.COMPLETED)
    assert worker.row(job).response == ANSWER.text
    worker.close(grace_s=1)
    assert worker.provider.closed


def test_a_cancel_request_stops_the_running_call_within_a_check(
    started: Callable[[ScriptedProvider], Worker],
) -> None:
    worker = started(ScriptedProvider(slowly(30, ANSWER)))
    job = worker.running_job()

    worker.request_cancel(job)

    assert _until(lambda: worker.status(job) == JobStatus.CANCELLED)
    assert worker.provider.interrupted == 1
    assert _until(lambda: worker.engine.in_flight == 0)


def test_jobs_run_side_by_side_up_to_the_concurrency(
    started: Callable[[ScriptedProvider], Worker],
) -> None:
    worker = started(ScriptedProvider(*(slowly(30, ANSWER) for _ in range(3))))
    jobs = [worker.job() for _ in range(3)]

    for job in jobs:
        assert worker.engine.admit(job.id)

    assert _until(lambda: len(worker.provider.calls) == 3)
    assert {worker.status(job) for job in jobs} == {JobStatus.RUNNING}


def test_closing_interrupts_running_calls_and_gives_their_jobs_back_at_once(
    started: Callable[[ScriptedProvider], Worker],
) -> None:
    worker = started(ScriptedProvider(slowly(30, ANSWER)))
    job = worker.running_job()

    worker.close(grace_s=0)

    row = worker.row(job)
    assert (row.status, row.run_token) == (JobStatus.PENDING, None)
    assert row.last_error == "Attempt was interrupted: its worker shut down"
    assert worker.queue.calls == [(job.id, 0.0)]
    assert not worker.engine.admit(job.id)  # a closed engine takes nothing more


def test_a_duplicate_message_for_a_running_job_leaves_its_cancel_check_in_place(
    started: Callable[[ScriptedProvider], Worker],
) -> None:
    worker = started(ScriptedProvider(slowly(30, ANSWER)))
    job = worker.running_job()

    worker.engine.admit(job.id)  # a message sent again; its claim finds the job running
    time.sleep(0.05)
    worker.request_cancel(job)

    # A hundred cancel checks' time.
    assert _until(lambda: worker.status(job) == JobStatus.CANCELLED, within_s=1)
