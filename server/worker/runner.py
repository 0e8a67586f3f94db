"""One job attempt on the engine's loop: claim, run its calls, record the outcome.

The attempt's clock starts at its claim, which the engine makes only once it has a free
slot, so the time limit and the lease measure the attempt itself, never a wait inside
the worker. What the attempt runs (the answer, the safety judge, verification) is
server/worker/verification.py; its calls are server/worker/calls.py, where the time
limit and a cancel both stop a provider call by cancelling its coroutine, which closes
its connection at once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta
from typing import Any

from server import metrics, tracing
from server.clock import Clock, utc_now
from server.providers.base import Provider, ProviderError
from server.queue import JobQueue
from server.store import transitions
from server.store.events import EventSpec, EventType
from server.store.models import JobStatus
from server.store.transitions import Attempt
from server.worker import job_log, verification
from server.worker.calls import (
    AttemptCalls,
    CancelSignal,
    ClaimLost,
    JobCancelled,
    TimeLimitExceeded,
)
from server.worker.hashes import context_hash, merkle_root
from server.worker.history import ContextLimits, load_history
from server.worker.policy import RetryPolicy
from server.worker.store import AttemptStore
from server.worker.tokens import TokenBuffer
from server.worker.traces import outcome_span
from server.worker.verification import Plan, RunResult, SafetyRejected, VerifyConfig

__all__ = ["AttemptRunner", "CancelSignal"]

log = logging.getLogger(__name__)


class AttemptRunner:
    """Claims and runs attempts. Idempotent per message: only a successful claim runs."""

    def __init__(
        self,
        store: AttemptStore,
        provider: Provider,
        queue: JobQueue,
        policy: RetryPolicy,
        *,
        clock: Clock = utc_now,
        token_interval_s: float = 0.1,
        context_limits: ContextLimits | None = None,
        verify: VerifyConfig | None = None,
        meter: metrics.ProviderMeter | None = None,
    ) -> None:
        """`meter` counts the provider's calls under its name and model."""
        self.store = store
        self.provider = provider
        self._queue = queue
        self._policy = policy
        self._clock = clock
        self._lease = timedelta(seconds=policy.lease_s)
        self._token_interval_s = token_interval_s
        self._context_limits = context_limits or ContextLimits()
        self._verify = verify or VerifyConfig()
        self._meter = meter or metrics.ProviderMeter("unnamed", "unnamed")

    async def claim(self, job_id: str) -> Attempt | None:
        """Start an attempt of the job; None when there is nothing to run now."""
        now = self._clock()
        token = str(uuid.uuid4())
        attempt = await self.store.claim(
            job_id, now=now, token=token, lease_until=now + self._lease
        )
        if attempt is not None:
            # DEBUG, not INFO: a line per job would cost a busy worker more than its SQL.
            log.debug("job %s attempt %d started", job_id, attempt.number)
            waited = (now - attempt.due_at).total_seconds() if attempt.due_at else 0.0
            metrics.attempt_started(attempt.tenant_id, waited)
            return attempt
        due = await self.store.due_at(job_id)
        if due is not None and due > now:
            # The message came before the backoff ended: send it back for later.
            await self._send(job_id, (due - now).total_seconds())
        return None

    async def run(self, attempt: Attempt, signal: CancelSignal) -> None:
        """Run a claimed attempt to its recorded outcome."""
        job_log.start_clock()
        try:
            await self._attempt(attempt, signal)
        except asyncio.CancelledError:
            # Not a job cancel (that is JobCancelled): the worker is shutting down, and
            # the attempt was cut outside its calls.
            await self._give_back(attempt, tokens=0)
        except Exception:
            # Whatever broke, the claimed job must not sit in `running` until
            # its lease runs out: record the attempt as failed now.
            log.exception(
                "attempt %d of job %s failed unexpectedly", attempt.number, attempt.job_id
            )
            await self._after_error(attempt, "Internal error while running the job", True, 0)

    async def _attempt(self, attempt: Attempt, signal: CancelSignal) -> None:
        if attempt.role is None:
            await self._fail(attempt, "Agent not found", tokens=0)
            return
        history = await load_history(self.store, attempt, self._context_limits)
        plan = Plan.of(attempt, attempt.role, self._verify, history=history)
        tokens = TokenBuffer(
            lambda text: self._record(attempt, EventSpec(EventType.TOKEN, delta=text)),
            interval_s=self._token_interval_s,
        )
        limit = self._policy.time_limit_s
        calls = AttemptCalls(
            self.provider,
            attempt,
            signal=signal,
            deadline=asyncio.get_running_loop().time() + limit,
            tokens=tokens,
            record=lambda event: self._record(attempt, event),
            record_steps=not plan.calls_once,
            meter=self._meter,
        )
        try:
            result = await verification.run(plan, calls)
        except TimeLimitExceeded:
            await tokens.discard()
            message = f"Job exceeded its time limit of {limit:g}s"
            await self._after_error(attempt, message, True, calls.spent)
        except JobCancelled:
            await tokens.discard()
            await self._cancelled(attempt)
        except ProviderError as error:
            await tokens.discard()
            await self._after_error(attempt, error.message, error.retryable, calls.spent)
        except SafetyRejected as rejected:
            await self._fail(attempt, rejected.message, tokens=calls.spent)
        except ClaimLost:
            await tokens.discard()
            log.warning(
                "job %s attempt %d lost its claim; outcome dropped", attempt.job_id, attempt.number
            )
        except asyncio.CancelledError:
            # Not a job cancel (that is JobCancelled): the worker is shutting down.
            await tokens.discard()
            await self._give_back(attempt, tokens=calls.spent)
        else:
            await self._complete(attempt, attempt.role, result)

    async def _give_back(self, attempt: Attempt, *, tokens: int) -> None:
        """A shutdown cut the attempt: the job goes back at once rather than wait for its lease."""
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        message = "Attempt was interrupted: its worker shut down"
        await self._after_error(attempt, message, True, tokens, now=True)

    async def _record(self, attempt: Attempt, event: EventSpec) -> bool:
        """An event of the running attempt; False when it no longer holds its job."""
        return await self.store.apply(
            transitions.record(attempt.job_id, token=attempt.token, event=event, at=self._clock())
        )

    async def _complete(self, attempt: Attempt, role: str, result: RunResult) -> None:
        digest = context_hash(
            agent_id=attempt.agent_id, role=role, prompt=attempt.prompt, response=result.text
        )
        completed = await self._finish(
            attempt,
            {
                "status": JobStatus.COMPLETED,
                "completed_at": self._clock(),
                "response": result.text,
                # Every call of the run is a step: their tokens are what it spent.
                "tokens_used": attempt.tokens_used + sum(step.tokens for step in result.steps),
                "context_hash": digest,
                # One step (the answer alone): its hash is the digest, and so is the root.
                "merkle_root": merkle_root([step.hash for step in result.steps]),
                "verified": result.verified,
                "confidence": result.confidence,
                "debate_rounds": result.debate_rounds,
                "error": None,
            },
            EventSpec(EventType.COMPLETED),
            # The job's turn of its context is committed with its completion.
            turn=attempt.context_id is not None,
        )
        if completed and attempt.enable_adversarial:
            metrics.verification(verified=result.verified, rounds=result.debate_rounds)

    async def _after_error(
        self, attempt: Attempt, message: str, retryable: bool, tokens: int, *, now: bool = False
    ) -> None:
        if not retryable or attempt.number >= self._policy.max_attempts:
            await self._fail(attempt, message, tokens=tokens)
            return
        delay = 0.0 if now else self._policy.delay_after(attempt.number)
        due = self._clock() + timedelta(seconds=delay)
        values = {
            "status": JobStatus.PENDING,
            "next_run_at": due,
            "enqueued_at": due,
            "last_error": message,
            "tokens_used": attempt.tokens_used + tokens,
        }
        event = EventSpec(EventType.RETRYING, error=message, delay_s=delay)
        if await self._finish(attempt, values, event):
            log.debug(
                "job %s attempt %d failed (%s); retry in %.1fs",
                attempt.job_id,
                attempt.number,
                message,
                delay,
            )
            with tracing.message_span(attempt.job_id):
                await self._send(attempt.job_id, delay)

    async def _fail(self, attempt: Attempt, message: str, *, tokens: int) -> None:
        values = {
            "status": JobStatus.FAILED,
            "completed_at": self._clock(),
            "error": message,
            "last_error": message,
            "response": "",
            "tokens_used": attempt.tokens_used + tokens,
        }
        await self._finish(attempt, values, EventSpec(EventType.FAILED, error=message))

    async def _cancelled(self, attempt: Attempt) -> None:
        now = self._clock()
        values = {"status": JobStatus.CANCELLED, "completed_at": now}
        with outcome_span(attempt, JobStatus.CANCELLED):
            won = await self.store.apply(
                transitions.finish_attempt(
                    attempt.job_id,
                    token=attempt.token,
                    values=values,
                    event=EventSpec(EventType.CANCELLED),
                    at=now,
                )
            )
        if won:
            job_log.log_outcome(attempt, "cancelled")
        else:
            log.warning(
                "job %s attempt %d lost its claim; outcome dropped", attempt.job_id, attempt.number
            )

    async def _finish(
        self, attempt: Attempt, values: dict[str, Any], event: EventSpec, *, turn: bool = False
    ) -> bool:
        """Record the attempt's outcome; a cancel requested meanwhile wins over it."""
        # A job given back to the queue (pending again) is being retried.
        outcome = "retrying" if values["status"] == JobStatus.PENDING else values["status"]
        with outcome_span(attempt, str(outcome)):
            won = await self.store.apply(
                transitions.finish_attempt(
                    attempt.job_id,
                    token=attempt.token,
                    values=values,
                    event=event,
                    at=self._clock(),
                    unless_cancelled=True,
                    turn=turn,
                )
            )
        if won:
            job_log.log_outcome(attempt, str(outcome), error=values.get("last_error"))
            return True
        await self._cancelled(attempt)  # records nothing when the claim itself was lost
        return False

    async def _send(self, job_id: str, delay_s: float) -> None:
        # The broker client blocks; a default-executor thread keeps it off the loop.
        try:
            await asyncio.to_thread(self._queue.enqueue, job_id, delay_s=delay_s)
        except Exception:
            # Still pending in the database: the recovery sweeper sends it when overdue.
            log.warning("could not send job %s; recovery will", job_id, exc_info=True)
