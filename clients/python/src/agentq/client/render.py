"""How the user commands print: answers on stdout, status lines on stderr, or JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any

from agentq.client.models import Agent, EventType, Job, JobEvent


def _json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False), flush=True)


def _status(line: str) -> None:
    print(f"agentq: {line}", file=sys.stderr, flush=True)


def submission(job_id: str, *, as_json: bool) -> None:
    """A queued job's id."""
    if as_json:
        _json({"job_id": job_id})
    else:
        print(job_id)


def follow(events: Iterable[JobEvent], *, as_json: bool) -> str | None:
    """Print a job's events as they come; returns the type of its last event.

    The answer goes to stdout piece by piece as the provider streams it (and whole at
    the end when it never streamed), each step of the job to stderr.
    """
    streamed = False
    for event in events:
        if as_json:
            _json(event.to_dict())
        elif event.type is EventType.TOKEN:
            sys.stdout.write(event.delta)
            sys.stdout.flush()
            streamed = True
        else:
            if event.type is EventType.COMPLETED and event.result and not streamed:
                sys.stdout.write(event.result.response)
                streamed = True
            if streamed and event.type.final:
                print(flush=True)
            _status(_step(event))
        if event.type.final:
            return event.type.value
    return None


def _step(event: JobEvent) -> str:
    """The status line of one event of a job."""
    if event.type is EventType.QUEUED:
        return f"queued job {event.job_id}"
    if event.type is EventType.STARTED:
        return f"started (attempt {event.attempt})"
    if event.type is EventType.RETRYING:
        delay = f" in {event.delay_seconds:g}s" if event.delay_seconds is not None else ""
        return f"retrying{delay}: {event.error or 'the attempt failed'}"
    if event.type is EventType.COMPLETED:
        tokens = event.result.tokens_used if event.result else 0
        return f"completed ({tokens} tokens)"
    if event.type is EventType.FAILED:
        return (
            f"failed: {event.error or (event.result and event.result.error) or 'no reason given'}"
        )
    if event.type is EventType.STEP and event.step is not None:
        step = event.step
        round = f" round {step.round}" if step.round else ""
        score = f", confidence {step.confidence:g}" if step.confidence is not None else ""
        return f"step: {step.kind}{round} ({step.tokens} tokens{score})"
    return event.type.value


def answer(job: Job, *, as_json: bool) -> None:
    """A finished job: its answer on stdout, its outcome on stderr."""
    if as_json:
        _json(job.to_dict())
        return
    if job.result is not None and job.result.success:
        print(job.result.response)
    _status(job.status.value + (f": {job.error}" if job.error else ""))


def job(found: Job, *, as_json: bool) -> None:
    """One job's fields."""
    if as_json:
        _json(found.to_dict())
        return
    fields = found.to_dict()
    result = fields.pop("result") or {}
    for name, value in fields.items():
        if value is not None:
            print(f"{name}: {value}")
    for name in ("response", "tokens_used"):
        if name in result:
            print(f"{name}: {result[name]}")


def jobs(found: list[Job], *, as_json: bool) -> None:
    """A table of jobs, or a JSON array."""
    if as_json:
        _json([item.to_dict() for item in found])
        return
    for item in found:
        queued = item.queued_at.isoformat(timespec="seconds") if item.queued_at else "-"
        print(f"{item.id}  {item.status.value:<9}  {item.agent_id}  {queued}")


def agents(found: list[Agent], *, as_json: bool, one: bool = False) -> None:
    """A table of agents (or one agent's fields), or JSON."""
    if as_json:
        _json(found[0].to_dict() if one else [item.to_dict() for item in found])
        return
    if one:
        for name, value in found[0].to_dict().items():
            print(f"{name}: {value}")
        return
    for item in found:
        print(f"{item.id}  {item.name}")
