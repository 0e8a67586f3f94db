"""Running one job attempt on a worker: claim, call the provider, record the outcome."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from server.cancel_watch import CancelWatch
from server.clock import Clock, utc_now
from server.events import EventSpec, EventType
from server.models import Agent, Job, JobStatus
from server.proof import context_hash, merkle_root
from server.providers.base import Cancelled, Completion, Provider, ProviderError
from server.queue import JobQueue
from server.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how soon a failed attempt is tried again, and how long one may run."""

    max_attempts: int = 3
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    time_limit_s: float = 120.0
    lease_grace_s: float = 15.0

    def delay_after(self, attempt: int) -> float:
        """Exponential backoff: base, 2 x base, 4 x base, ... capped."""
        return float(min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1)))

    @property
    def lease_s(self) -> float:
        """How long a running attempt may go before it is taken for lost."""
        return self.time_limit_s + self.lease_grace_s


class JobRunner:
    """Runs job attempts. Idempotent per message: only a successful claim runs."""

    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        provider: Provider,
        queue: JobQueue,
        policy: RetryPolicy,
        *,
        clock: Clock = utc_now,
        cancel_watch: CancelWatch | None = None,
    ) -> None:
        self._uow = uow
        self._provider = provider
        self._queue = queue
        self._policy = policy
        self._clock = clock
        self.cancel_watch = cancel_watch or CancelWatch(uow)

    def run(self, job_id: str) -> None:
        """Handle one queue message for a job."""
        claimed = self._claim(job_id)
        if claimed is None:
            return
        job, agent, token = claimed
        try:
            self._attempt(job, agent, token)
        except Exception:
            # Whatever broke, the claimed job must not sit in `running` until
            # its lease runs out: record the attempt as failed now.
            log.exception("attempt %d of job %s failed unexpectedly", job.attempts, job_id)
            self._after_error(job, token, "Internal error while running the job", True, 0)

    def _attempt(self, job: Job, agent: Agent | None, token: str) -> None:
        if agent is None:
            self._fail(job, token, "Agent not found", tokens=0)
            return
        started = time.monotonic()
        cancel = self.cancel_watch.watch(job.id)
        try:
            completion = self._provider.complete(
                system=agent.role,
                prompt=job.prompt,
                timeout_s=self._policy.time_limit_s,
                cancel=cancel,
                on_delta=lambda delta: self._delta(job, token, delta),
            )
        except Cancelled:
            self._cancelled(job, token)
            return
        except ProviderError as error:
            self._after_error(job, token, error.message, error.retryable, error.tokens_used)
            return
        except Exception:
            log.exception("provider raised unexpectedly on job %s", job.id)
            self._after_error(job, token, "Provider failed unexpectedly", True, 0)
            return
        finally:
            self.cancel_watch.forget(job.id)
        if time.monotonic() - started > self._policy.time_limit_s:
            message = f"Job exceeded its time limit of {self._policy.time_limit_s:g}s"
            self._after_error(job, token, message, True, completion.tokens_used)
            return
        self._complete(job, agent, token, completion)

    def _delta(self, job: Job, token: str, delta: str) -> None:
        event = EventSpec(EventType.TOKEN, delta=delta)
        with self._uow() as uow:
            uow.jobs.record(job.id, token=token, event=event, at=self._clock())
            uow.commit()

    def _claim(self, job_id: str) -> tuple[Job, Agent | None, str] | None:
        now = self._clock()
        token = str(uuid.uuid4())
        lease_until = now + timedelta(seconds=self._policy.lease_s)
        with self._uow() as uow:
            if not uow.jobs.claim(job_id, now=now, token=token, lease_until=lease_until):
                job = uow.jobs.get(job_id)
                early = job is not None and job.job_status is JobStatus.PENDING
                delay = (job.next_run_at - now).total_seconds() if early and job else 0.0
                uow.commit()
                if early and delay > 0:
                    # The message came before the backoff ended: send it back for later.
                    self._queue.enqueue(job_id, delay_s=delay)
                return None
            job = uow.jobs.get(job_id)
            if job is None:  # pragma: no cover - the row was claimed in this transaction
                raise RuntimeError(f"claimed job {job_id} vanished")
            agent = uow.agents.get(job.agent_id)
            uow.commit()
        log.info("job %s attempt %d started", job_id, job.attempts)
        return job, agent, token

    def _complete(self, job: Job, agent: Agent, token: str, completion: Completion) -> None:
        # A model may cut a character in half (a lone surrogate), which neither
        # the hash nor the database can encode; store the readable rest.
        text = completion.text.encode("utf-8", "replace").decode("utf-8")
        digest = context_hash(agent_id=agent.id, role=agent.role, prompt=job.prompt, response=text)
        self._finish(
            job,
            token,
            {
                "status": JobStatus.COMPLETED,
                "completed_at": self._clock(),
                "response": text,
                "tokens_used": job.tokens_used + completion.tokens_used,
                "context_hash": digest,
                "merkle_root": merkle_root([digest]),
                "error": None,
            },
            EventSpec(EventType.COMPLETED),
        )

    def _after_error(
        self, job: Job, token: str, message: str, retryable: bool, tokens: int
    ) -> None:
        if not retryable or job.attempts >= self._policy.max_attempts:
            self._fail(job, token, message, tokens=tokens)
            return
        delay = self._policy.delay_after(job.attempts)
        due = self._clock() + timedelta(seconds=delay)
        values = {
            "status": JobStatus.PENDING,
            "next_run_at": due,
            "enqueued_at": due,
            "last_error": message,
            "tokens_used": job.tokens_used + tokens,
        }
        event = EventSpec(EventType.RETRYING, error=message, delay_s=delay)
        if self._finish(job, token, values, event):
            log.info(
                "job %s attempt %d failed (%s); retry in %.1fs",
                job.id,
                job.attempts,
                message,
                delay,
            )
            self._queue.enqueue(job.id, delay_s=delay)

    def _fail(self, job: Job, token: str, message: str, *, tokens: int) -> None:
        values = {
            "status": JobStatus.FAILED,
            "completed_at": self._clock(),
            "error": message,
            "last_error": message,
            "response": "",
            "tokens_used": job.tokens_used + tokens,
        }
        self._finish(job, token, values, EventSpec(EventType.FAILED, error=message))

    def _cancelled(self, job: Job, token: str) -> None:
        now = self._clock()
        values = {"status": JobStatus.CANCELLED, "completed_at": now}
        with self._uow() as uow:
            won = uow.jobs.finish_attempt(
                job.id, token=token, values=values, event=EventSpec(EventType.CANCELLED), at=now
            )
            uow.commit()
        if won:
            log.info("job %s attempt %d -> cancelled", job.id, job.attempts)
        else:
            log.warning("job %s attempt %d lost its claim; outcome dropped", job.id, job.attempts)

    def _finish(self, job: Job, token: str, values: dict[str, Any], event: EventSpec) -> bool:
        """Record the attempt's outcome; a cancel requested meanwhile wins over it."""
        now = self._clock()
        with self._uow() as uow:
            won = uow.jobs.finish_attempt(
                job.id, token=token, values=values, event=event, at=now, unless_cancelled=True
            )
            uow.commit()
        if won:
            log.info("job %s attempt %d -> %s", job.id, job.attempts, values["status"])
            return True
        self._cancelled(job, token)  # records nothing when the claim itself was lost
        return False
