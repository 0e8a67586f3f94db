"""The compare-and-set transitions of jobs: each rule a value that every store applies.

A transition is one conditional UPDATE: the database decides which of two racing workers
(or sweepers) wins, so nothing relies on timing. An event takes its number from the same
row update (`jobs.event_seq`), so numbers never repeat or skip. On PostgreSQL the event row
is inserted by that same statement, through a data-modifying CTE; SQLite has none, so it
inserts the event with a second statement in the same transaction.

The rules (`claim`, `finish_attempt`, `record`, `cancel_pending`, `request_cancel`) are made
here and nowhere else, each as a `Transition`: the columns the job must hold, the values
it takes, its event and whether it stores the job's turn of its context, as data. The turn
goes in like the event: in the same statement on PostgreSQL, the same transaction on
SQLite, so it exists exactly when the job completed. The statement of each shape of
transition is built once and kept; the store (`server/store/jobs.py`) runs it on either
database.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CTE,
    ColumnElement,
    Executable,
    Float,
    Text,
    bindparam,
    cast,
    insert,
    select,
    update,
)
from sqlalchemy.sql.dml import Insert, Update

from server.store.contexts import store_turn
from server.store.event_log import job_event_deliveries, job_row_deliveries
from server.store.events import EventSpec, EventType
from server.store.models import JobStatus
from server.store.tables import agents, events, jobs


@dataclass(frozen=True, slots=True)
class Attempt:
    """A claimed attempt of a job: everything the worker needs to run and record it."""

    job_id: str
    number: int
    token: str
    agent_id: str
    prompt: str
    # None when the agent is gone (deleted): the attempt then fails.
    role: str | None
    # Spent by the job's earlier attempts.
    tokens_used: int
    # The conversation the job belongs to, if any: its attempt sees the context's
    # earlier turns, and its completion adds one.
    context_id: str | None
    # What the request asked of the run (docs/contract.md §3).
    enable_adversarial: bool = False
    enable_self_correction: bool = False
    max_debate_rounds: int = 3
    # JSON of the agent's own verification prompts; None when it has none.
    verification: str | None = None
    # The submitter's W3C traceparent: the attempt's spans join its trace.
    traceparent: str | None = None
    # Whose job it is, and since when it could run (queued, or its retry due): the
    # metrics count the attempt for its tenant and the wait before its claim.
    tenant_id: str = ""
    due_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """One compare-and-set change of a job, as data.

    The job changes only if each `expect` column equals its value and, with `due_by`, its
    next run is due by then. It then takes `values`, each `increment` column grows by one,
    and with an `event` its event_seq grows by one and the event is recorded under that
    number, with the job's attempt count, at `at`. With `turn`, the job's prompt and
    response are stored as a turn of its context, when it has one
    (`server/store/contexts.py`). A change that `starts_attempt` hands back what the
    attempt needs (see `claimed`).
    """

    job_id: str
    _: KW_ONLY
    expect: Mapping[str, Any]
    values: Mapping[str, Any]
    event: EventSpec | None = None
    at: datetime | None = None
    due_by: datetime | None = None
    increment: tuple[str, ...] = ()
    starts_attempt: bool = False
    turn: bool = False

    def __post_init__(self) -> None:
        if self.event is not None and self.at is None:
            raise ValueError("an event needs its time")

    @property
    def shape(self) -> Shape:
        """What the statement depends on: the columns, not their values."""
        return Shape(
            expect=tuple(self.expect),
            values=tuple(self.values),
            increment=self.increment,
            due=self.due_by is not None,
            event=self.event is not None,
            step=self.event is not None and self.event.step is not None,
            deliver=self.event is not None and self.event.type is not EventType.TOKEN,
            starts_attempt=self.starts_attempt,
            turn=self.turn,
        )

    @property
    def params(self) -> dict[str, Any]:
        """The parameters this change binds to its statement."""
        params: dict[str, Any] = {"job_id": self.job_id}
        params.update({f"expect_{k}": v for k, v in self.expect.items()})
        params.update({f"set_{k}": v for k, v in self.values.items()})
        if self.due_by is not None:
            params["due_by"] = self.due_by
        if self.event is not None:
            params.update(
                event_type=self.event.type.value,
                event_at=self.at,
                event_error=self.event.error,
                event_delay_s=self.event.delay_s,
                event_delta=self.event.delta,
            )
            step = self.event.step
            if step is not None:
                params.update(
                    step_kind=step.kind.value,
                    step_round=step.round,
                    step_tokens=step.tokens,
                    step_hash=step.hash,
                    step_text=step.text,
                    step_confidence=step.confidence,
                    step_evidence=step.evidence,
                )
        return params

    def statement(self, postgres: bool) -> Executable:
        """The prebuilt statement of this change's shape for the dialect."""
        return transition_statement(postgres, self.shape)


# The rules: every transition a job goes through is made by one of these.


def claim(job_id: str, *, now: datetime, token: str, lease_until: datetime) -> Transition:
    """A due pending job becomes running for one more attempt, held by `token`."""
    return Transition(
        job_id,
        expect={"status": JobStatus.PENDING},
        due_by=now,
        values={
            "status": JobStatus.RUNNING,
            "started_at": now,
            "run_token": token,
            "lease_expires_at": lease_until,
        },
        increment=("attempts",),
        event=EventSpec(EventType.STARTED),
        at=now,
        starts_attempt=True,
    )


def finish_attempt(
    job_id: str,
    *,
    token: str,
    values: Mapping[str, Any],
    event: EventSpec,
    at: datetime,
    unless_cancelled: bool = False,
    turn: bool = False,
) -> Transition:
    """The outcome of the attempt holding `token`: it lets go of the job and sets `values`.

    With `unless_cancelled`, a job whose cancel was requested is left alone too, so
    its attempt can record `cancelled` instead. With `turn` (a completion), the job's
    prompt and its new response are stored as a turn of its context.
    """
    expect: dict[str, Any] = {"status": JobStatus.RUNNING, "run_token": token}
    if unless_cancelled:
        expect["cancel_requested"] = False
    released = {"run_token": None, "lease_expires_at": None, **values}
    return Transition(job_id, expect=expect, values=released, event=event, at=at, turn=turn)


def record(job_id: str, *, token: str, event: EventSpec, at: datetime) -> Transition:
    """An event of a running attempt (a token delta), recorded while it holds the job."""
    expect = {"status": JobStatus.RUNNING, "run_token": token}
    return Transition(job_id, expect=expect, values={}, event=event, at=at)


def cancel_pending(job_id: str, *, at: datetime) -> Transition:
    """A job that no worker holds is cancelled at once."""
    return Transition(
        job_id,
        expect={"status": JobStatus.PENDING},
        values={"status": JobStatus.CANCELLED, "completed_at": at},
        event=EventSpec(EventType.CANCELLED),
        at=at,
    )


def request_cancel(job_id: str) -> Transition:
    """The worker of a running job is asked to stop; it records the cancel itself."""
    return Transition(
        job_id, expect={"status": JobStatus.RUNNING}, values={"cancel_requested": True}
    )


def claimed(change: Transition, row: Any) -> Attempt:
    """The attempt a claim started, from what its statement returned."""
    return Attempt(
        job_id=change.job_id,
        number=_field(row, "attempts"),
        token=change.values["run_token"],
        agent_id=_field(row, "agent_id"),
        prompt=_field(row, "prompt"),
        role=_field(row, "role"),
        tokens_used=_field(row, "tokens_used"),
        context_id=_field(row, "context_id"),
        enable_adversarial=_field(row, "enable_adversarial"),
        enable_self_correction=_field(row, "enable_self_correction"),
        max_debate_rounds=_field(row, "max_debate_rounds"),
        verification=_field(row, "verification"),
        traceparent=_field(row, "traceparent"),
        tenant_id=_field(row, "tenant_id"),
        due_at=_field(row, "next_run_at"),
    )


def _field(row: Any, name: str) -> Any:
    # A SQLAlchemy row has attributes, an asyncpg record and a mapping have keys.
    return getattr(row, name) if hasattr(row, name) else row[name]


# The statements.


@dataclass(frozen=True, slots=True)
class Shape:
    """The columns a transition compares, sets and counts up: one statement per shape."""

    expect: tuple[str, ...]
    values: tuple[str, ...]
    increment: tuple[str, ...]
    due: bool
    event: bool
    # The event is a step event, with its columns (a separate shape: other events
    # bind none of them).
    step: bool
    # The event goes to the webhooks' outbox too: every job event but a token delta.
    deliver: bool
    starts_attempt: bool
    turn: bool


def _param(column: str, prefix: str) -> ColumnElement[Any]:
    return bindparam(f"{prefix}_{column}", type_=jobs.c[column].type)


def _update(shape: Shape) -> Update:
    """UPDATE jobs SET <values>, <increments> WHERE id and the expected columns match."""
    where = [
        jobs.c.id == bindparam("job_id"),
        *(jobs.c[k] == _param(k, "expect") for k in shape.expect),
    ]
    if shape.due:
        where.append(jobs.c.next_run_at <= bindparam("due_by", type_=jobs.c.next_run_at.type))
    values: dict[str, Any] = {k: _param(k, "set") for k in shape.values}
    values.update({k: jobs.c[k] + 1 for k in shape.increment})
    if shape.event:
        values["event_seq"] = jobs.c.event_seq + 1
    return update(jobs).where(*where).values(values)


# The columns of a step event, each bound from the parameter of its name.
STEP_COLUMNS = (
    "step_kind",
    "step_round",
    "step_tokens",
    "step_hash",
    "step_text",
    "step_confidence",
    "step_evidence",
)


_EVENT_TYPE = bindparam("event_type", type_=events.c.type.type)
_EVENT_AT = bindparam("event_at", type_=events.c.created_at.type)
# SQLite: the outbox's deliveries of a transition's event, after the transition.
DELIVER_JOB_EVENT = job_row_deliveries(bindparam("job_id"), _EVENT_TYPE, _EVENT_AT)


def _event_from(source: CTE, *, step: bool) -> Insert:
    """INSERT the event of each row the `source` CTE updated, numbered by its event_seq."""
    # Casts: in a SELECT list a NULL parameter would otherwise be typed text.
    values: list[ColumnElement[Any]] = [
        source.c.id,
        source.c.event_seq,
        _EVENT_TYPE,
        _EVENT_AT,
        source.c.attempts,
        cast(bindparam("event_error"), Text),
        cast(bindparam("event_delay_s"), Float),
        cast(bindparam("event_delta"), Text),
    ]
    columns = ["job_id", "sequence", "type", "created_at", "attempt", "error", "delay_s", "delta"]
    if step:
        values += [cast(bindparam(name), events.c[name].type) for name in STEP_COLUMNS]
        columns += STEP_COLUMNS
    return insert(events).from_select(columns, select(*values))


def _of_agent(column: str) -> ColumnElement[Any]:
    """A column of the job's agent, NULL when the agent is deleted or gone."""
    live = agents.c.deleted_at.is_(None)
    query = select(agents.c[column]).where(agents.c.id == jobs.c.agent_id, live)
    return query.scalar_subquery().label(column)


# What a completion's turn is made of, returned into the CTE it is inserted from.
_TURN_COLUMNS = ("tenant_id", "context_id", "prompt", "response", "completed_at")


@functools.cache
def transition_statement(postgres: bool, shape: Shape) -> Executable:
    """The statement of one shape of transition: a row back if the job changed, else none."""
    returned: list[ColumnElement[Any]] = [jobs.c.id]
    if shape.event or shape.starts_attempt:
        returned += [jobs.c.event_seq, jobs.c.attempts]
    if shape.deliver or shape.starts_attempt:
        # The outbox's webhooks, and the metrics of a claim, are the tenant's.
        returned.append(jobs.c.tenant_id)
    if shape.starts_attempt:
        returned += [
            jobs.c.agent_id,
            jobs.c.prompt,
            jobs.c.tokens_used,
            jobs.c.context_id,
            jobs.c.enable_adversarial,
            jobs.c.enable_self_correction,
            jobs.c.max_debate_rounds,
            jobs.c.traceparent,
            _of_agent("role"),
            _of_agent("verification"),
            jobs.c.next_run_at,
        ]
    if not (postgres and (shape.event or shape.turn)):
        # SQLite stores the event and the turn with statements of their own (jobs.py).
        return _update(shape).returning(*returned)
    names = [column.name for column in returned]
    inside = [*returned, *(jobs.c[n] for n in _TURN_COLUMNS if shape.turn and n not in names)]
    source = _update(shape).returning(*inside).cte("changed")
    written = []
    if shape.event:
        written.append(_event_from(source, step=shape.step).cte("recorded"))
    if shape.turn:
        written.append(store_turn(source).cte("stored"))
    if shape.deliver:
        deliveries = job_event_deliveries(source, _EVENT_TYPE, _EVENT_AT)
        written.append(deliveries.cte("delivered"))
    # Only the columns a caller reads come back, not the turn's texts.
    return select(*(source.c[name] for name in names)).add_cte(*written)


DUE = select(jobs.c.status, jobs.c.next_run_at).where(jobs.c.id == bindparam("job_id"))
