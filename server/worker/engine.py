"""The execution engine: up to `concurrency` attempts at once on one event loop.

Dramatiq delivers job messages to a few threads, which hand each to the engine
(`admit`). The engine claims the job only once one of its slots is free, so a job's
clock (its lease and time limit) starts when its provider work starts, and a worker
holds no more than a few messages it cannot run yet: the rest stay in the queue for
other workers. A slot is held from the claim to the recorded outcome, so a cancelled
or timed-out call frees it at once.

A message is acknowledged once its attempt is claimed: from then on the job's row, its
lease and the recovery sweeper answer for it, as they always did for a worker that died
mid-attempt.

One task per engine asks the database, in one statement per interval, which of the
running jobs have a cancel request, and interrupts their provider calls.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from server.worker.runner import AttemptRunner, CancelSignal

log = logging.getLogger(__name__)

T = TypeVar("T")


class ExecutionEngine:
    """Runs job attempts on an event loop of its own thread; `admit` is its way in."""

    def __init__(
        self,
        open_runner: Callable[[], Awaitable[AttemptRunner]],
        *,
        concurrency: int,
        cancel_poll_s: float,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
    ) -> None:
        self.concurrency = concurrency
        self._open_runner = open_runner
        self._cancel_poll_s = cancel_poll_s
        self._loop_factory = loop_factory
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: AttemptRunner | None = None
        self._slots: asyncio.Semaphore | None = None
        self._running: dict[str, tuple[asyncio.Task[None], CancelSignal]] = {}
        self._closing = False
        self._watch: asyncio.Task[None] | None = None

    @property
    def in_flight(self) -> int:
        """Attempts running now."""
        return len(self._running)

    def start(self) -> None:
        """Start the loop thread and open the runner's store and provider on it."""
        loop = self._loop = self._loop_factory()
        self._thread = threading.Thread(target=loop.run_forever, name="agentq-engine", daemon=True)
        self._thread.start()
        self._call(self._open())

    async def _open(self) -> None:
        self._runner = await self._open_runner()
        self._slots = asyncio.Semaphore(self.concurrency)
        self._watch = asyncio.get_running_loop().create_task(self._watch_cancels())

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None, "the engine is not started"
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def admit(self, job_id: str) -> bool:
        """Run the job once a slot is free (from a message thread; blocks until claimed).

        False when the engine is closing and took nothing: the caller sends the
        message again for another worker.
        """
        if self._closing or self._loop is None:
            return False
        return self._call(self._admit(job_id))

    async def _admit(self, job_id: str) -> bool:
        assert self._slots is not None and self._runner is not None
        await self._slots.acquire()
        if self._closing:
            self._slots.release()
            return False
        try:
            attempt = await self._runner.claim(job_id)
        except BaseException:
            self._slots.release()
            raise
        if attempt is None:
            self._slots.release()
            return True
        signal = CancelSignal()
        task = asyncio.get_running_loop().create_task(self._run(attempt.job_id, attempt, signal))
        self._running[job_id] = (task, signal)
        return True

    async def _run(self, job_id: str, attempt: Any, signal: CancelSignal) -> None:
        assert self._slots is not None and self._runner is not None
        try:
            await self._runner.run(attempt, signal)
        finally:
            self._running.pop(job_id, None)
            self._slots.release()

    async def _watch_cancels(self) -> None:
        assert self._runner is not None
        while True:
            await asyncio.sleep(self._cancel_poll_s)
            if not self._running:
                continue
            try:
                cancelled = await self._runner.store.cancel_requested(list(self._running))
            except Exception:
                log.warning("could not check for cancelled jobs", exc_info=True)
                continue
            for job_id in cancelled:
                running = self._running.get(job_id)
                if running is not None:
                    running[1].cancel()

    def stop_admitting(self) -> None:
        """Take no new job: waiting and later messages are handed back (`admit` is False)."""
        self._closing = True
        if self._loop is not None and self._slots is not None:
            self._loop.call_soon_threadsafe(_wake_all, self._slots)

    def close(self, *, grace_s: float) -> None:
        """Let running attempts finish for up to `grace_s`, interrupt the rest, stop."""
        self.stop_admitting()
        if self._loop is None or self._thread is None:
            return
        try:
            self._call(self._close(grace_s))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    async def _close(self, grace_s: float) -> None:
        tasks = [task for task, _ in self._running.values()]
        if tasks:
            log.info("waiting up to %.0fs for %d running attempts", grace_s, len(tasks))
            _, unfinished = await asyncio.wait(tasks, timeout=grace_s)
            for task in unfinished:
                task.cancel()  # the runner gives each job back at once
            if unfinished:
                await asyncio.wait(unfinished, timeout=10)
        if self._watch is not None:
            self._watch.cancel()
        if self._runner is not None:
            await self._runner.provider.aclose()
            await self._runner.store.aclose()


def _wake_all(slots: asyncio.Semaphore) -> None:
    # One extra slot wakes the first waiter, which sees the engine closing and hands
    # the slot on to the next, and so on.
    slots.release()
