"""The recovery sweeper: finds jobs whose message or worker was lost and runs them again."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Protocol

from server import metrics
from server.clock import Clock, utc_now
from server.queue import BatchQueue
from server.store.events import EventSpec, EventType
from server.store.models import JobStatus
from server.store.records import JobRecord
from server.store.store import Store, Tables
from server.store.transitions import finish_attempt
from server.worker.policy import RetryPolicy

log = logging.getLogger(__name__)

BATCH = 500


class Recovery:
    """Sweeps for lost runs, lost messages and expired jobs; any number of processes may sweep.

    Each sweeper takes only rows no other transaction holds (FOR UPDATE SKIP LOCKED) and
    changes them with compare-and-set updates. A sweeper therefore never waits on a row
    lock, so it cannot deadlock with another sweeper, nor with a worker or a request that
    holds some of the same jobs; sweepers in many processes split a backlog between them
    instead of queueing behind each other. (An advisory lock would make them take turns
    but would still wait on rows others hold; one UPDATE over many rows still locks them
    in whatever order its plan reads them.)

    A job is marked re-sent (its enqueued_at moved to now) and committed before its
    message goes out, as Execute does, so a worker never gets a message for a job not yet
    committed. When the send fails, the jobs are marked overdue again at once, so the next
    sweep sends them rather than one a whole requeue period later; only a process that
    dies between the commit and the send leaves its jobs for that later sweep.
    """

    def __init__(
        self,
        store: Store,
        queue: BatchQueue,
        policy: RetryPolicy,
        *,
        requeue_after_s: float,
        retention_s: float = 7 * 86400,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._queue = queue
        self._policy = policy
        self._requeue_after = timedelta(seconds=requeue_after_s)
        self._retention = timedelta(seconds=retention_s)
        self._clock = clock

    async def close(self) -> None:
        """Close the sweeper's connections."""
        await self._store.db.close()

    async def sweep(self) -> int:
        """Recover lost runs, re-send overdue messages, drop expired jobs; count touched."""
        now = self._clock()
        recovered = await self._recover_lost_runs(now)
        return recovered + await self._resend_overdue(now) + await self.expire()

    async def expire(self) -> int:
        """Delete finished jobs past retention with their events, keys and context turns,
        and emitted events and finished webhook deliveries as old, a batch at a time; how
        many went."""
        cutoff = self._clock() - self._retention

        async def delete_batch() -> int:
            async with self._store.transaction() as tx:
                job_ids = await tx.jobs.expired(finished_before=cutoff, limit=BATCH)
                if job_ids:
                    await tx.events.delete_for(job_ids)
                    await tx.keys.delete_for(job_ids)
                    await tx.contexts.delete_for(job_ids)
                    await tx.workflows.delete_runs(job_ids)
                    await tx.jobs.delete(job_ids)
                await tx.keys.delete_older_than(cutoff)
                await tx.agents.purge_deleted(limit=BATCH)
            return len(job_ids)

        deleted = await _in_batches(delete_batch)
        if deleted:
            log.info("retention removed %d finished jobs", deleted)
        # Emitted events are kept as long as jobs are (README, Event log).
        emitted = await _in_batches(
            lambda: self._store.event_log.delete_older_than(cutoff, limit=BATCH)
        )
        if emitted:
            log.info("retention removed %d emitted events", emitted)
        # Webhook deliveries sent or failed are kept as long (README, Webhooks).
        delivered = await _in_batches(
            lambda: self._store.deliveries.delete_finished_before(cutoff, limit=BATCH)
        )
        return deleted + emitted + delivered

    async def _recover_lost_runs(self, now: datetime) -> int:
        outcomes: list[tuple[JobRecord, str]] = []
        async with self._store.transaction() as tx:
            # Locked by this sweep, so each compare-and-set below finds its row free.
            lost = await tx.jobs.lost_runs(now=now, limit=BATCH)
            for job in lost:
                outcome = self._outcome(job)
                if await self._give_back(tx, job, now, outcome):
                    outcomes.append((job, outcome))
        # Counted once committed, as the jobs counters count the workers' outcomes.
        for job, outcome in outcomes:
            metrics.sweeper_recovered(outcome)
            metrics.jobs_counted(outcome, job.tenant_id)
        if outcomes:
            log.warning("recovered %d jobs whose worker was lost", len(outcomes))
        retry = [job.id for job, outcome in outcomes if outcome == "retried"]
        await self._send(retry, requeued_at=now)
        return len(outcomes)

    def _outcome(self, job: JobRecord) -> str:
        """What becomes of a lost run: `cancelled`, `failed` (its last attempt) or `retried`."""
        if job.cancel_requested:
            return "cancelled"
        return "failed" if job.attempts >= self._policy.max_attempts else "retried"

    async def _give_back(self, tx: Tables, job: JobRecord, now: datetime, outcome: str) -> bool:
        assert job.run_token is not None
        message = (
            f"Attempt {job.attempts} was lost: its worker stopped or it ran past "
            f"the time limit of {self._policy.time_limit_s:g}s"
        )
        values: dict[str, object]
        if outcome == "cancelled":
            values = {"status": JobStatus.CANCELLED, "completed_at": now}
            event = EventSpec(EventType.CANCELLED)
        elif outcome == "failed":
            values = {
                "status": JobStatus.FAILED,
                "completed_at": now,
                "error": message,
                "last_error": message,
                "response": "",
            }
            event = EventSpec(EventType.FAILED, error=message)
        else:
            values = {
                "status": JobStatus.PENDING,
                "next_run_at": now,
                "enqueued_at": now,
                "last_error": message,
            }
            event = EventSpec(EventType.RETRYING, error=message, delay_s=0.0)
        change = finish_attempt(job.id, token=job.run_token, values=values, event=event, at=now)
        return await tx.jobs.apply(change)

    async def _resend_overdue(self, now: datetime) -> int:
        """Re-send overdue messages a batch at a time, until none is left or a send fails."""

        async def resend_batch() -> int | None:
            async with self._store.transaction() as tx:
                job_ids = await tx.jobs.requeue_overdue(
                    before=now - self._requeue_after, now=now, limit=BATCH
                )
            return len(job_ids) if await self._send(job_ids, requeued_at=now) else None

        sent = await _in_batches(resend_batch)
        metrics.sweeper_resent(amount=sent)
        if sent:
            log.warning("re-sent %d pending jobs whose message was overdue", sent)
        return sent

    async def _send(self, job_ids: list[str], *, requeued_at: datetime) -> bool:
        """Send the jobs' messages in one batch; if that fails, make them overdue again."""
        if not job_ids:
            return True
        try:
            # The broker's client blocks; the sweep's loop goes on meanwhile.
            await asyncio.to_thread(self._queue.enqueue_many, job_ids)
        except Exception:
            # Any failure of the broker: the jobs are still pending in the database. A
            # message of a failed batch may have gone out all the same; a second one
            # for the job finds nothing to claim.
            log.warning(
                "could not send %d job messages (%s, ...); the next sweep sends them",
                len(job_ids),
                job_ids[0],
                exc_info=True,
            )
            await self._store.jobs.mark_unsent(
                job_ids, sent_at=requeued_at, overdue_at=requeued_at - self._requeue_after
            )
            return False
        return True


class Sweeper(Protocol):
    """What a sweeping thread runs: the recovery sweeper, the orchestrator, the dispatcher."""

    async def sweep(self) -> int:
        """One round of work."""
        ...

    async def close(self) -> None:
        """Release what it holds."""
        ...


class RecoveryThread(threading.Thread):
    """Runs sweeps every `interval_s` until stopped, on an event loop of its own.

    `open_recovery` builds the sweeper on the thread's loop, as a connection pool belongs
    to the loop that opened it. A failed sweep (or a failed start) is logged and tried
    again after the interval.
    """

    def __init__(
        self,
        open_recovery: Callable[[], Awaitable[Sweeper]],
        *,
        interval_s: float,
        name: str = "agentq-recovery",
    ) -> None:
        super().__init__(name=name, daemon=True)
        self._open = open_recovery
        self._interval_s = interval_s
        self._stopped = threading.Event()

    def run(self) -> None:
        asyncio.run(self._sweeps())

    async def _sweeps(self) -> None:
        recovery: Sweeper | None = None
        while not self._stopped.is_set():
            try:
                recovery = recovery or await self._open()
                await recovery.sweep()
            except Exception:
                # The thread's name says whose: the sweeper's, or the webhook dispatcher's.
                log.exception(
                    "%s: sweep failed; trying again in %.1fs", self.name, self._interval_s
                )
            await asyncio.to_thread(self._stopped.wait, self._interval_s)
        if recovery is not None:
            await recovery.close()

    def ask_to_stop(self) -> None:
        """Ask the thread to end after its current sweep; returns at once."""
        self._stopped.set()

    def stop(self) -> None:
        """Ask the thread to end after its current sweep, and wait for it."""
        self._stopped.set()
        self.join(timeout=10)


async def _in_batches(batch: Callable[[], Awaitable[int | None]]) -> int:
    """Run `batch` until it handles fewer than BATCH jobs or fails (None); the jobs handled."""
    handled = 0
    while (count := await batch()) is not None:
        handled += count
        if count < BATCH:
            break
    return handled
