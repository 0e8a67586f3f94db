"""The provider calls of one attempt: each bounded and stoppable, each a step of the run.

An attempt may make several calls (adversarial verification, the safety judge). They
share the attempt's time limit: each runs until the attempt's deadline at most, so the
whole attempt stays within it. A cancel stops whichever call is running, and one
requested between two calls stops the next before it starts. Only the calls are
interrupted, never the writes between them: a statement cut midway would leave its
connection in doubt.

Each call is a step: its hash is made as context_hash is (server/worker/hashes.py), over
the call's own system message, user message and answer, so the first answer's hash is
the result's context_hash. When the run records steps, each becomes a `step` event as it
ends, after the token events of its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from server.metrics import ProviderMeter
from server.providers.base import Completion, Message, Provider, ProviderError
from server.store.events import EventSpec, EventType, StepKind, StepSpec
from server.store.transitions import Attempt
from server.worker.hashes import context_hash
from server.worker.tokens import TokenBuffer
from server.worker.traces import call_span

log = logging.getLogger(__name__)


class CancelSignal:
    """Tells a running attempt that its job was cancelled.

    Only a provider call is interrupted: while the attempt records a step or an
    outcome, a cancel request is left to the database, where the outcome's
    compare-and-set yields to it (`unless_cancelled`), and to the next call, which
    does not start.
    """

    def __init__(self) -> None:
        self.requested = False
        self._calling: asyncio.Task[Any] | None = None

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """The span in which a cancel stops the current task."""
        self._calling = asyncio.current_task()
        try:
            yield
        finally:
            self._calling = None

    def cancel(self) -> None:
        """Record the request, and interrupt the provider call if one is under way."""
        self.requested = True
        if self._calling is not None:
            self._calling.cancel()


class TimeLimitExceeded(Exception):
    """The attempt's deadline passed during a call."""


class JobCancelled(Exception):
    """The job was cancelled during a call, or before the next one."""


class ClaimLost(Exception):
    """The attempt no longer holds its job (recovered as lost): nothing more is recorded."""


class AttemptCalls:
    """Makes an attempt's calls and records them as steps.

    `spent` is the tokens of every call made so far, a failed one's included when its
    provider reported them. `record` writes one event of the attempt (False when the
    attempt lost its job); `record_steps` says whether steps become events at all: a run
    of one call records none (its one step is its result).
    """

    def __init__(
        self,
        provider: Provider,
        attempt: Attempt,
        *,
        signal: CancelSignal,
        deadline: float,
        tokens: TokenBuffer,
        record: Callable[[EventSpec], Awaitable[bool]],
        record_steps: bool,
        meter: ProviderMeter,
    ) -> None:
        self._provider = provider
        self._meter = meter
        self._attempt = attempt
        self._signal = signal
        self._deadline = deadline
        self._tokens = tokens
        self._record = record
        self._record_steps = record_steps
        self.spent = 0
        self.steps: list[StepSpec] = []

    async def call(
        self,
        kind: StepKind,
        round: int,
        *,
        system: str,
        prompt: str,
        history: Sequence[Message] = (),
        shown: bool = False,
        recorded: bool = True,
    ) -> StepSpec:
        """One call as a step; `shown` streams its answer as token events.

        Not `recorded`, the caller records the step itself once it has read the answer
        (a verdict's confidence and evidence go with it).
        """
        with call_span(kind.value, round) as span:
            completion = await self._complete(system, prompt, history, shown=shown)
            if span is not None:
                span.set_attribute("agentq.step.tokens", completion.tokens_used)
        self.spent += completion.tokens_used
        if shown:
            await self._tokens.finish()
        # A model may cut a character in half (a lone surrogate), which neither the hash
        # nor the database can encode; keep the readable rest.
        text = completion.text.encode("utf-8", "replace").decode("utf-8")
        digest = context_hash(
            agent_id=self._attempt.agent_id, role=system, prompt=prompt, response=text
        )
        step = StepSpec(kind, round, completion.tokens_used, digest, text)
        if recorded:
            await self.record(step)
        return step

    async def record(self, step: StepSpec) -> None:
        """Add the step to the run, and record its event when the run records steps."""
        self.steps.append(step)
        if self._record_steps and not await self._record(EventSpec(EventType.STEP, step=step)):
            raise ClaimLost

    async def show(self, text: str) -> None:
        """Write an answer that was not streamed (it was held back) as its token event."""
        self._tokens.add(text)
        await self._tokens.finish()

    async def _complete(
        self, system: str, prompt: str, history: Sequence[Message], *, shown: bool
    ) -> Completion:
        """One provider call, counted in the metrics with its time, tokens and error."""
        if self._signal.requested:
            raise JobCancelled
        started = time.perf_counter()
        try:
            completion = await self._call(system, prompt, history, shown=shown)
        except TimeLimitExceeded:
            self._meter.call(time.perf_counter() - started, 0, "time_limit")
            raise
        except ProviderError as error:
            kind = "retryable" if error.retryable else "fatal"
            self._meter.call(time.perf_counter() - started, error.tokens_used, kind)
            raise
        except BaseException:
            # Cancelled (the job, or the worker shutting down): a call, not an error.
            self._meter.call(time.perf_counter() - started, 0)
            raise
        self._meter.call(time.perf_counter() - started, completion.tokens_used)
        return completion

    async def _call(
        self, system: str, prompt: str, history: Sequence[Message], *, shown: bool
    ) -> Completion:
        deadline = asyncio.timeout_at(self._deadline)
        try:
            with self._signal.interruptible():
                async with deadline:
                    return await self._provider.complete(
                        system=system,
                        prompt=prompt,
                        history=history,
                        on_delta=self._tokens.add if shown else None,
                    )
        except TimeoutError:
            if deadline.expired():
                raise TimeLimitExceeded from None
            # A provider's own TimeoutError escaped it: a bug there, not the limit.
            log.exception("provider raised unexpectedly on job %s", self._attempt.job_id)
            raise ProviderError("Provider failed unexpectedly", retryable=True) from None
        except asyncio.CancelledError:
            if not self._signal.requested:
                raise  # the worker is shutting down
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            raise JobCancelled from None
        except ProviderError as error:
            self.spent += error.tokens_used
            raise
        except Exception:
            log.exception("provider raised unexpectedly on job %s", self._attempt.job_id)
            raise ProviderError("Provider failed unexpectedly", retryable=True) from None
