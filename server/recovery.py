"""The recovery sweeper: finds jobs whose message or worker was lost and runs them again."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from server.clock import Clock, utc_now
from server.events import EventSpec, EventType
from server.models import Job, JobStatus
from server.queue import JobQueue
from server.unit_of_work import UnitOfWork
from server.worker.policy import RetryPolicy

log = logging.getLogger(__name__)

BATCH = 500


class Recovery:
    """One sweep at a time; any number of processes may sweep, transitions are CAS."""

    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        queue: JobQueue,
        policy: RetryPolicy,
        *,
        requeue_after_s: float,
        retention_s: float = 7 * 86400,
        clock: Clock = utc_now,
    ) -> None:
        self._uow = uow
        self._queue = queue
        self._policy = policy
        self._requeue_after = timedelta(seconds=requeue_after_s)
        self._retention = timedelta(seconds=retention_s)
        self._clock = clock

    def sweep(self) -> int:
        """Recover lost runs, re-send overdue messages, drop expired jobs; count touched."""
        return self._recover_lost_runs() + self._resend_overdue() + self.expire()

    def expire(self) -> int:
        """Delete finished jobs past retention with their events and keys, a batch at a time."""
        cutoff = self._clock() - self._retention
        deleted = 0
        while True:
            with self._uow() as uow:
                job_ids = uow.jobs.expired(finished_before=cutoff, limit=BATCH)
                if job_ids:
                    uow.events.delete_for(job_ids)
                    uow.keys.delete_for(job_ids)
                    uow.jobs.delete(job_ids)
                uow.keys.delete_older_than(cutoff)
                uow.agents.purge_deleted(limit=BATCH)
                uow.commit()
            deleted += len(job_ids)
            if len(job_ids) < BATCH:
                break
        if deleted:
            log.info("retention removed %d finished jobs", deleted)
        return deleted

    def _recover_lost_runs(self) -> int:
        now = self._clock()
        recovered = 0
        with self._uow() as uow:
            lost = list(uow.jobs.lost_runs(now=now, limit=BATCH))
            retry: list[str] = []
            for job in lost:
                if self._give_back(uow, job, now):
                    recovered += 1
                    if job.attempts < self._policy.max_attempts and not job.cancel_requested:
                        retry.append(job.id)
            uow.commit()
        self._send(retry)
        if recovered:
            log.warning("recovered %d jobs whose worker was lost", recovered)
        return recovered

    def _give_back(self, uow: UnitOfWork, job: Job, now: datetime) -> bool:
        assert job.run_token is not None
        message = (
            f"Attempt {job.attempts} was lost: its worker stopped or it ran past "
            f"the time limit of {self._policy.time_limit_s:g}s"
        )
        values: dict[str, object]
        if job.cancel_requested:
            values = {"status": JobStatus.CANCELLED, "completed_at": now}
            event = EventSpec(EventType.CANCELLED)
        elif job.attempts >= self._policy.max_attempts:
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
        return uow.jobs.finish_attempt(
            job.id, token=job.run_token, values=values, event=event, at=now
        )

    def _resend_overdue(self) -> int:
        now = self._clock()
        resend: list[str] = []
        with self._uow() as uow:
            for job in uow.jobs.overdue_pending(before=now - self._requeue_after, limit=BATCH):
                if uow.jobs.mark_enqueued(job.id, previous=job.enqueued_at, due=now):
                    resend.append(job.id)
            uow.commit()
        self._send(resend)
        if resend:
            log.warning("re-sent %d pending jobs whose message was overdue", len(resend))
        return len(resend)

    def _send(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            try:
                self._queue.enqueue(job_id)
            except Exception:
                # Still pending in the database: the next overdue sweep sends it.
                log.warning("could not enqueue job %s; will retry", job_id, exc_info=True)


class RecoveryThread(threading.Thread):
    """Runs sweeps every `interval_s` until stopped; a failed sweep is logged, not fatal."""

    def __init__(self, recovery: Recovery, *, interval_s: float) -> None:
        super().__init__(name="agentq-recovery", daemon=True)
        self._recovery = recovery
        self._interval_s = interval_s
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.is_set():
            try:
                self._recovery.sweep()
            except Exception:
                log.exception("recovery sweep failed; trying again in %.1fs", self._interval_s)
            self._stopped.wait(self._interval_s)

    def stop(self) -> None:
        """Ask the thread to end after its current sweep."""
        self._stopped.set()
        self.join(timeout=10)
