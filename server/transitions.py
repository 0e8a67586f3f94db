"""The compare-and-set transitions of jobs, in prebuilt Core SQL: one statement each on PostgreSQL.

A transition is one conditional UPDATE: the database decides which of two racing workers
(or sweepers) wins, so nothing relies on timing. An event takes its number from the same
row update (`jobs.event_seq`), so numbers never repeat or skip. On PostgreSQL the event row
is inserted by that same statement, through a data-modifying CTE; SQLite has none, so it
inserts the event with a second statement in the same transaction.

Each statement shape is built once and kept, with the parameters a call binds to it made
by one function per transition. `JobTransitions` runs them on a session or a connection
(the API, the sweeper, a SQLite worker); the worker's asyncpg store
(`server/worker/pg_attempts.py`) runs the same statements and parameters on PostgreSQL.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CTE,
    ColumnElement,
    Executable,
    Float,
    Table,
    Text,
    bindparam,
    cast,
    insert,
    select,
    true,
    update,
)
from sqlalchemy.engine import Connection, Row
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert, Update

from server.events import EventSpec, EventType
from server.models import Agent, Base, Job, JobEvent, JobStatus


def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


jobs = _table(Job)
events = _table(JobEvent)
agents = _table(Agent)

# Where the transitions run: a session's transaction (the API, the sweeper) or a bare
# connection (the worker's unit of work).
Database = Session | Connection


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


def _param(column: str, prefix: str) -> ColumnElement[Any]:
    return bindparam(f"{prefix}_{column}", type_=jobs.c[column].type)


def _update(expect: Sequence[str], values: Sequence[str], *, due: bool) -> Update:
    """UPDATE jobs SET <values> WHERE id and every `expect` column equal their parameters."""
    where = [jobs.c.id == bindparam("job_id"), *(jobs.c[k] == _param(k, "expect") for k in expect)]
    if due:
        where.append(jobs.c.next_run_at <= bindparam("due_by", type_=jobs.c.next_run_at.type))
    return update(jobs).where(*where).values({k: _param(k, "set") for k in values})


def _event_from(source: CTE) -> Insert:
    """INSERT the event of each row the `source` CTE updated, numbered by its event_seq."""
    # Casts: in a SELECT list a NULL parameter would otherwise be typed text.
    row = select(
        source.c.id,
        source.c.event_seq,
        bindparam("event_type", type_=events.c.type.type),
        bindparam("event_at", type_=events.c.created_at.type),
        source.c.attempts,
        cast(bindparam("event_error"), Text),
        cast(bindparam("event_delay_s"), Float),
        cast(bindparam("event_delta"), Text),
    )
    columns = ["job_id", "sequence", "type", "created_at", "attempt", "error", "delay_s", "delta"]
    return insert(events).from_select(columns, row)


def _agent_role() -> ColumnElement[Any]:
    """The role of the job's agent, NULL when the agent is deleted or gone."""
    live = agents.c.deleted_at.is_(None)
    query = select(agents.c.role).where(agents.c.id == jobs.c.agent_id, live)
    return query.scalar_subquery().label("role")


@functools.cache
def claim_statement(postgres: bool) -> Executable:
    claim = (
        _update(["status"], ["status", "started_at", "run_token", "lease_expires_at"], due=True)
        .values(attempts=jobs.c.attempts + 1, event_seq=jobs.c.event_seq + 1)
        .returning(
            jobs.c.id,
            jobs.c.event_seq,
            jobs.c.attempts,
            jobs.c.agent_id,
            jobs.c.prompt,
            jobs.c.tokens_used,
            _agent_role(),
        )
    )
    if not postgres:
        return claim
    claimed = claim.cte("claimed")
    started = _event_from(claimed).cte("started")
    return select(claimed).add_cte(started)


@functools.cache
def transition_statement(
    postgres: bool, expect: tuple[str, ...], values: tuple[str, ...], event: bool
) -> Executable:
    changed = _update(expect, values, due=False)
    if not event:
        return changed.returning(jobs.c.id)
    changed = changed.values(event_seq=jobs.c.event_seq + 1).returning(
        jobs.c.id, jobs.c.event_seq, jobs.c.attempts
    )
    if not postgres:
        return changed
    return _event_from(changed.cte("changed")).returning(events.c.sequence)


DUE = select(jobs.c.status, jobs.c.next_run_at).where(jobs.c.id == bindparam("job_id"))
_CANCEL_REQUESTED = select(jobs.c.id).where(
    jobs.c.id.in_(bindparam("job_ids", expanding=True)), jobs.c.cancel_requested == true()
)
_INSERT_EVENT = insert(events)


def _event_params(event: EventSpec, at: datetime | None) -> dict[str, Any]:
    if at is None:
        raise ValueError("an event needs its time")
    return {
        "event_type": event.type.value,
        "event_at": at,
        "event_error": event.error,
        "event_delay_s": event.delay_s,
        "event_delta": event.delta,
    }


def claim_params(
    job_id: str, *, now: datetime, token: str, lease_until: datetime
) -> dict[str, Any]:
    """The parameters of `claim_statement`: a due pending job becomes running for `token`."""
    return {
        "job_id": job_id,
        "expect_status": JobStatus.PENDING.value,
        "due_by": now,
        "set_status": JobStatus.RUNNING.value,
        "set_started_at": now,
        "set_run_token": token,
        "set_lease_expires_at": lease_until,
        **_event_params(EventSpec(EventType.STARTED), now),
    }


def claimed(job_id: str, token: str, row: Any) -> Attempt:
    """The attempt a row returned by `claim_statement` stands for."""
    return Attempt(
        job_id=job_id,
        number=_field(row, "attempts"),
        token=token,
        agent_id=_field(row, "agent_id"),
        prompt=_field(row, "prompt"),
        role=_field(row, "role"),
        tokens_used=_field(row, "tokens_used"),
    )


def _field(row: Any, name: str) -> Any:
    # A SQLAlchemy row has attributes, an asyncpg record has keys.
    return getattr(row, name) if hasattr(row, name) else row[name]


@dataclass(frozen=True, slots=True)
class Transition:
    """One conditional update: its statement's shape and the parameters of this call."""

    shape: tuple[tuple[str, ...], tuple[str, ...], bool]
    params: dict[str, Any]

    def statement(self, postgres: bool) -> Executable:
        """The prebuilt statement of this shape for the dialect."""
        return transition_statement(postgres, *self.shape)


def transition(
    job_id: str,
    *,
    expect: Mapping[str, Any],
    values: Mapping[str, Any],
    event: EventSpec | None = None,
    at: datetime | None = None,
) -> Transition:
    """Set `values` on the job if its columns equal `expect`, recording `event` at `at`."""
    params: dict[str, Any] = {"job_id": job_id}
    params.update({f"expect_{k}": v for k, v in expect.items()})
    params.update({f"set_{k}": v for k, v in values.items()})
    if event is not None:
        params.update(_event_params(event, at))
    return Transition((tuple(expect), tuple(values), event is not None), params)


def finish_attempt(
    job_id: str,
    *,
    token: str,
    values: Mapping[str, Any],
    event: EventSpec | None = None,
    at: datetime | None = None,
    unless_cancelled: bool = False,
) -> Transition:
    """Apply the outcome of the attempt holding `token`.

    With `unless_cancelled`, a job whose cancel was requested is left alone too, so
    its attempt can record `cancelled` instead.
    """
    expect: dict[str, Any] = {"status": JobStatus.RUNNING, "run_token": token}
    if unless_cancelled:
        expect["cancel_requested"] = False
    return transition(
        job_id,
        expect=expect,
        values={"run_token": None, "lease_expires_at": None, **values},
        event=event,
        at=at,
    )


def record(job_id: str, *, token: str, event: EventSpec, at: datetime) -> Transition:
    """Record an event of a running attempt (a token delta) while it holds the job."""
    expect = {"status": JobStatus.RUNNING, "run_token": token}
    return transition(job_id, expect=expect, values={}, event=event, at=at)


class JobTransitions:
    """The compare-and-set transitions of jobs, on a session or a connection."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @functools.cached_property
    def _postgres(self) -> bool:
        bind = self._db.get_bind() if isinstance(self._db, Session) else self._db
        return bind.dialect.name == "postgresql"

    def _execute(self, statement: Executable, params: Mapping[str, Any]) -> Row[Any] | None:
        """The first row the statement returns, if any."""
        if isinstance(self._db, Session):
            # A Core statement does not autoflush as an ORM one does: rows staged
            # in the session must be written before the UPDATE looks for them.
            self._db.flush()
        return self._db.execute(statement, params).first()

    def claim(
        self, job_id: str, *, now: datetime, token: str, lease_until: datetime
    ) -> Attempt | None:
        """Move a due pending job to running for one attempt; None if another got it."""
        params = claim_params(job_id, now=now, token=token, lease_until=lease_until)
        row = self._execute(claim_statement(self._postgres), params)
        if row is None:
            return None
        if not self._postgres:
            self._insert_event(params, row)
        return claimed(job_id, token, row)

    def due_at(self, job_id: str) -> datetime | None:
        """When a pending job may run next; None if it is not pending (or not there)."""
        row = self._execute(DUE, {"job_id": job_id})
        if row is None or row.status != JobStatus.PENDING:
            return None
        next_run_at: datetime = row.next_run_at
        return next_run_at

    def finish_attempt(
        self,
        job_id: str,
        *,
        token: str,
        values: Mapping[str, Any],
        event: EventSpec | None = None,
        at: datetime | None = None,
        unless_cancelled: bool = False,
    ) -> bool:
        """Apply the outcome of the attempt holding `token`; False if it lost the job.

        With `unless_cancelled`, a job whose cancel was requested is left alone
        too, so its attempt can record `cancelled` instead.
        """
        return self.apply(
            finish_attempt(
                job_id,
                token=token,
                values=values,
                event=event,
                at=at,
                unless_cancelled=unless_cancelled,
            )
        )

    def record(self, job_id: str, *, token: str, event: EventSpec, at: datetime) -> bool:
        """Record an event of a running attempt (a token delta) while it holds the job."""
        return self.apply(record(job_id, token=token, event=event, at=at))

    def cancel_pending(self, job_id: str, *, at: datetime, event: EventSpec) -> bool:
        """Cancel a job that no worker holds; False if it is not pending any more."""
        values = {"status": JobStatus.CANCELLED, "completed_at": at}
        expect = {"status": JobStatus.PENDING}
        return self.apply(transition(job_id, expect=expect, values=values, event=event, at=at))

    def request_cancel(self, job_id: str) -> bool:
        """Ask the worker of a running job to stop; False if it is not running."""
        expect = {"status": JobStatus.RUNNING}
        return self.apply(transition(job_id, expect=expect, values={"cancel_requested": True}))

    def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        """Which of these running jobs have a cancel request."""
        rows = self._db.execute(_CANCEL_REQUESTED, {"job_ids": list(job_ids)})
        return {row.id for row in rows}

    def apply(self, change: Transition) -> bool:
        """Run one transition; False when the job was not in the expected state."""
        row = self._execute(change.statement(self._postgres), change.params)
        if row is None:
            return False
        if change.shape[2] and not self._postgres:
            self._insert_event(change.params, row)
        return True

    def _insert_event(self, params: Mapping[str, Any], row: Any) -> None:
        """SQLite: insert the event of a row just updated, numbered by its event_seq."""
        event = {
            "job_id": params["job_id"],
            "sequence": row.event_seq,
            "type": params["event_type"],
            "created_at": params["event_at"],
            "attempt": row.attempts,
            "error": params["event_error"],
            "delay_s": params["event_delay_s"],
            "delta": params["event_delta"],
        }
        self._db.execute(_INSERT_EVENT, event)
