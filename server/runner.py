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
from server.models import JobStatus
from server.proof import context_hash, merkle_root
from server.providers.base import Cancelled, Completion, Provider, ProviderError
from server.queue import JobQueue
from server.transitions import Attempt
from server.worker_uow import WorkerUnitOfWork

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
        uow: Callable[[], WorkerUnitOfWork],
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
        self._lease = timedelta(seconds=policy.lease_s)
        self.cancel_watch = cancel_watch or CancelWatch(uow)

    def run(self, job_id: str) -> None:
        """Handle one queue message for a job."""
        attempt = self._claim(job_id)
        if attempt is None:
            return
        try:
            self._attempt(attempt)
        except Exception:
            # Whatever broke, the claimed job must not sit in `running` until
            # its lease runs out: record the attempt as failed now.
            log.exception("attempt %d of job %s failed unexpectedly", attempt.number, job_id)
            self._after_error(attempt, "Internal error while running the job", True, 0)

    def _attempt(self, attempt: Attempt) -> None:
        if attempt.role is None:
            self._fail(attempt, "Agent not found", tokens=0)
            return
        started = time.monotonic()
        cancel = self.cancel_watch.watch(attempt.job_id)
        try:
            completion = self._provider.complete(
                system=attempt.role,
                prompt=attempt.prompt,
                timeout_s=self._policy.time_limit_s,
                cancel=cancel,
                on_delta=lambda delta: self._delta(attempt, delta),
            )
        except Cancelled:
            self._cancelled(attempt)
            return
        except ProviderError as error:
            self._after_error(attempt, error.message, error.retryable, error.tokens_used)
            return
        except Exception:
            log.exception("provider raised unexpectedly on job %s", attempt.job_id)
            self._after_error(attempt, "Provider failed unexpectedly", True, 0)
            return
        finally:
            self.cancel_watch.forget(attempt.job_id)
        if time.monotonic() - started > self._policy.time_limit_s:
            message = f"Job exceeded its time limit of {self._policy.time_limit_s:g}s"
            self._after_error(attempt, message, True, completion.tokens_used)
            return
        self._complete(attempt, attempt.role, completion)

    def _delta(self, attempt: Attempt, delta: str) -> None:
        event = EventSpec(EventType.TOKEN, delta=delta)
        with self._uow() as uow:
            uow.jobs.record(attempt.job_id, token=attempt.token, event=event, at=self._clock())
            uow.commit()

    def _claim(self, job_id: str) -> Attempt | None:
        now = self._clock()
        token = str(uuid.uuid4())
        with self._uow() as uow:
            attempt = uow.jobs.claim(job_id, now=now, token=token, lease_until=now + self._lease)
            due = uow.jobs.due_at(job_id) if attempt is None else None
            uow.commit()
        if attempt is None:
            if due is not None and due > now:
                # The message came before the backoff ended: send it back for later.
                self._queue.enqueue(job_id, delay_s=(due - now).total_seconds())
            return None
        # DEBUG, not INFO: a line per job would cost a busy worker more than its SQL.
        log.debug("job %s attempt %d started", job_id, attempt.number)
        return attempt

    def _complete(self, attempt: Attempt, role: str, completion: Completion) -> None:
        # A model may cut a character in half (a lone surrogate), which neither
        # the hash nor the database can encode; store the readable rest.
        text = completion.text.encode("utf-8", "replace").decode("utf-8")
        digest = context_hash(
            agent_id=attempt.agent_id, role=role, prompt=attempt.prompt, response=text
        )
        self._finish(
            attempt,
            {
                "status": JobStatus.COMPLETED,
                "completed_at": self._clock(),
                "response": text,
                "tokens_used": attempt.tokens_used + completion.tokens_used,
                "context_hash": digest,
                "merkle_root": merkle_root([digest]),
                "error": None,
            },
            EventSpec(EventType.COMPLETED),
        )

    def _after_error(self, attempt: Attempt, message: str, retryable: bool, tokens: int) -> None:
        if not retryable or attempt.number >= self._policy.max_attempts:
            self._fail(attempt, message, tokens=tokens)
            return
        delay = self._policy.delay_after(attempt.number)
        due = self._clock() + timedelta(seconds=delay)
        values = {
            "status": JobStatus.PENDING,
            "next_run_at": due,
            "enqueued_at": due,
            "last_error": message,
            "tokens_used": attempt.tokens_used + tokens,
        }
        event = EventSpec(EventType.RETRYING, error=message, delay_s=delay)
        if self._finish(attempt, values, event):
            log.info(
                "job %s attempt %d failed (%s); retry in %.1fs",
                attempt.job_id,
                attempt.number,
                message,
                delay,
            )
            self._queue.enqueue(attempt.job_id, delay_s=delay)

    def _fail(self, attempt: Attempt, message: str, *, tokens: int) -> None:
        values = {
            "status": JobStatus.FAILED,
            "completed_at": self._clock(),
            "error": message,
            "last_error": message,
            "response": "",
            "tokens_used": attempt.tokens_used + tokens,
        }
        self._finish(attempt, values, EventSpec(EventType.FAILED, error=message))

    def _cancelled(self, attempt: Attempt) -> None:
        now = self._clock()
        values = {"status": JobStatus.CANCELLED, "completed_at": now}
        event = EventSpec(EventType.CANCELLED)
        with self._uow() as uow:
            won = uow.jobs.finish_attempt(
                attempt.job_id, token=attempt.token, values=values, event=event, at=now
            )
            uow.commit()
        if won:
            log.info("job %s attempt %d -> cancelled", attempt.job_id, attempt.number)
        else:
            log.warning(
                "job %s attempt %d lost its claim; outcome dropped", attempt.job_id, attempt.number
            )

    def _finish(self, attempt: Attempt, values: dict[str, Any], event: EventSpec) -> bool:
        """Record the attempt's outcome; a cancel requested meanwhile wins over it."""
        now = self._clock()
        with self._uow() as uow:
            won = uow.jobs.finish_attempt(
                attempt.job_id,
                token=attempt.token,
                values=values,
                event=event,
                at=now,
                unless_cancelled=True,
            )
            uow.commit()
        if won:
            log.debug("job %s attempt %d -> %s", attempt.job_id, attempt.number, values["status"])
            return True
        self._cancelled(attempt)  # records nothing when the claim itself was lost
        return False
