"""The spans of a job attempt, under the trace of the request that queued the job.

The job row keeps the submitter's W3C traceparent (server/tracing.py), and each claim
reads it back: every attempt, a retry's or a recovered job's too, on whichever worker,
joins that one trace. Off, each helper returns at once.
"""

from __future__ import annotations

import contextlib

from opentelemetry import trace

from server import tracing
from server.store.transitions import Attempt


def _attributes(attempt: Attempt) -> dict[str, str | int]:
    return {"agentq.job_id": attempt.job_id, "agentq.attempt": attempt.number}


def attempt_span(
    attempt: Attempt, *, claim_started_ns: int
) -> contextlib.AbstractContextManager[trace.Span | None]:
    """`job.claim` (from `claim_started_ns` to now), then `job.attempt` around the block.

    The claim is a span of its own made after the fact: the traceparent it joins comes
    back with the claim itself.
    """
    if not tracing.enabled():
        return tracing.OFF
    parent = tracing.context_of(attempt.traceparent)
    attributes = _attributes(attempt)
    tracing.tracer().start_span(
        "job.claim",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes=attributes,
        start_time=claim_started_ns,
    ).end()
    return tracing.span(
        "job.attempt", kind=trace.SpanKind.CONSUMER, attributes=attributes, parent=parent
    )


def outcome_span(
    attempt: Attempt, outcome: str
) -> contextlib.AbstractContextManager[trace.Span | None]:
    """The span of recording an attempt's outcome: the job's transition."""
    attributes = {**_attributes(attempt), "agentq.outcome": outcome}
    return tracing.span("job.finish", attributes=attributes)


def call_span(kind: str, round: int) -> contextlib.AbstractContextManager[trace.Span | None]:
    """The span of one provider call, a step of the run (a debate step's too)."""
    return tracing.span(
        f"provider.{kind}",
        kind=trace.SpanKind.CLIENT,
        attributes={"agentq.step.kind": kind, "agentq.step.round": round},
    )
