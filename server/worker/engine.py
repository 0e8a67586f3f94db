"""The execution engine: up to `concurrency` attempts at once on one event loop.

Dramatiq delivers job messages to a few threads, which hand each to the engine
(`admit`) once one of its slots is free: a thread simply waits while all are busy, so a
worker holds no more than a few messages it cannot run yet, and the rest stay in the
queue for other workers. The job is claimed on the loop right after, so its clock (its
lease and time limit) starts when its provider work starts. A slot is held until the
attempt's outcome is recorded; a cancelled or timed-out call frees it at once.

A message is acknowledged once its job has a slot. From then on the job's row answers
for it: a worker that dies before the claim leaves the job pending, and the recovery
sweeper sends it again once its message is overdue; one that dies mid-attempt leaves a
lease that the sweeper recovers.

One task per engine asks the database, in one statement per interval, which of the
running jobs have a cancel request, and interrupts their provider calls.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable

from server import metrics
from server.worker.runner import AttemptRunner, CancelSignal
from server.worker.traces import attempt_span

log = logging.getLogger(__name__)

# How long closing may take beyond the grace period: interrupted attempts record their
# outcome, and the store and provider close their connections.
CLOSE_TIMEOUT_S = 30.0


class ExecutionEngine:
    """Runs job attempts on an event loop of its own thread; `admit` is its way in."""

    def __init__(
        self,
        open_runner: Callable[[], Awaitable[AttemptRunner]],
        *,
        send: Callable[[str], None],
        concurrency: int,
        cancel_poll_s: float,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
    ) -> None:
        self.concurrency = concurrency
        self._open_runner = open_runner
        self._send = send
        self._cancel_poll_s = cancel_poll_s
        self._loop_factory = loop_factory
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: AttemptRunner | None = None
        # Taken by a message thread before it hands a job over, given back when the job's
        # task ends: a thread-side semaphore, so that admitting costs no round trip to
        # the loop and a thread simply waits while every slot is busy.
        self._slots = threading.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: dict[str, CancelSignal] = {}
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
        asyncio.run_coroutine_threadsafe(self._open(), loop).result()
        # A slot is in use from its job's hand-over to its recorded outcome: one task each.
        metrics.watch_slots(lambda: len(self._tasks), self.concurrency)

    async def _open(self) -> None:
        self._runner = await self._open_runner()
        self._watch = asyncio.get_running_loop().create_task(self._watch_cancels())

    def admit(self, job_id: str) -> bool:
        """Hand a job over once a slot is free (from a message thread, which waits for it).

        False when the engine is closing and took nothing: the caller sends the
        message again for another worker.
        """
        if self._closing or self._loop is None:
            return False
        self._slots.acquire()
        if self._closing:
            self._slots.release()  # and so wakes the next waiter, which sees the same
            return False
        self._loop.call_soon_threadsafe(self._start, job_id)
        return True

    def _start(self, job_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._claim_and_run(job_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _claim_and_run(self, job_id: str) -> None:
        assert self._runner is not None
        signal: CancelSignal | None = None
        try:
            if self._closing:
                await asyncio.to_thread(self._send, job_id)
                return
            claim_started_ns = time.time_ns()
            attempt = await self._runner.claim(job_id)
            if attempt is None:
                return  # a duplicate message: the job runs elsewhere, or here already
            signal = self._running[job_id] = CancelSignal()
            with attempt_span(attempt, claim_started_ns=claim_started_ns):
                await self._runner.run(attempt, signal)
        except Exception:
            # The job is still pending (or its attempt recorded): the sweeper has it.
            log.exception("could not run job %s", job_id)
        finally:
            if signal is not None:
                del self._running[job_id]
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
                signal = self._running.get(job_id)
                if signal is not None:
                    signal.cancel()

    def stop_admitting(self) -> None:
        """Take no new job: waiting and later messages are handed back (`admit` is False)."""
        self._closing = True
        # Wakes the first waiting thread, which hands the slot on to the next.
        self._slots.release()

    def close(self, *, grace_s: float) -> None:
        """Let running attempts finish for up to `grace_s`, interrupt the rest, stop.

        Closing an engine that was never started, or again, does nothing.
        """
        self.stop_admitting()
        loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        try:
            closing = asyncio.run_coroutine_threadsafe(self._close(grace_s), loop)
            # Bounded, so that a stuck connection cannot keep the process from exiting.
            closing.result(timeout=grace_s + CLOSE_TIMEOUT_S)
        except TimeoutError:
            log.error("the engine did not close within %.0fs; stopping it anyway", grace_s)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)

    async def _close(self, grace_s: float) -> None:
        tasks = list(self._tasks)
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
