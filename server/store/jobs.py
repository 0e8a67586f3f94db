"""Jobs: queueing one, reading, listing, the transitions, and the sweeper's queries.

The statements are built once, with named parameters, and run by either adapter. Where
a change must also record an event, PostgreSQL does both in one statement (a
data-modifying CTE) and SQLite, which has none, in two statements of one transaction.
The sweeper's selects lock what they take with FOR UPDATE SKIP LOCKED: a row another
transaction holds is left for a later sweep, so a sweeper never waits on a row lock.
SQLite renders no FOR UPDATE; it has one writer, and each update re-checks its condition.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Executable,
    Select,
    and_,
    bindparam,
    delete,
    exists,
    false,
    func,
    insert,
    literal,
    select,
    true,
    update,
)

from server.paging import Cursor
from server.store.contexts import STORE_TURN_OF_JOB
from server.store.database import Row, Statements
from server.store.event_log import job_event_deliveries, job_row_deliveries
from server.store.events import EventType
from server.store.models import JobStatus
from server.store.pages import newest_first
from server.store.records import JobRecord
from server.store.tables import agents, events, jobs, tenant_limits
from server.store.transitions import (
    DELIVER_JOB_EVENT,
    DUE,
    STEP_COLUMNS,
    Attempt,
    Transition,
    claim,
    claimed,
)

UNFINISHED = (JobStatus.PENDING, JobStatus.RUNNING)
FINISHED = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)
_COLUMNS = JobRecord.columns(jobs)


def _param(name: str) -> Any:
    return bindparam(name, type_=jobs.c[name].type)


@dataclass(frozen=True)
class NewJob:
    """A job to queue: what the request asked for, and where it sits in a tree."""

    id: str
    tenant_id: str
    agent_id: str
    prompt: str
    context_id: str | None
    enable_adversarial: bool
    enable_self_correction: bool
    max_debate_rounds: int
    queued_at: datetime
    parent_job_id: str | None = None
    depth: int = 0
    # The submitter's W3C traceparent, when tracing is on (README.md, Tracing).
    traceparent: str | None = None

    @property
    def params(self) -> dict[str, Any]:
        """The parameters of the queueing statement."""
        return dict(self.__dict__)


# What a new job holds: the request, and a fresh run state whose first event (QUEUED,
# number 1) goes in with it. The job is stored only for a live agent of its tenant.
_NEW_JOB: dict[str, ColumnElement[Any]] = {
    "id": _param("id"),
    "tenant_id": _param("tenant_id"),
    "agent_id": agents.c.id,
    "status": literal(JobStatus.PENDING.value, jobs.c.status.type),
    "prompt": _param("prompt"),
    "context_id": _param("context_id"),
    "enable_adversarial": _param("enable_adversarial"),
    "enable_self_correction": _param("enable_self_correction"),
    "max_debate_rounds": _param("max_debate_rounds"),
    "attempts": literal(0),
    "queued_at": _param("queued_at"),
    "next_run_at": bindparam("queued_at", type_=jobs.c.queued_at.type),
    "enqueued_at": bindparam("queued_at", type_=jobs.c.queued_at.type),
    "tokens_used": literal(0),
    "verified": false(),
    "debate_rounds": literal(0),
    "parent_job_id": _param("parent_job_id"),
    "depth": _param("depth"),
    "cancel_requested": false(),
    "event_seq": literal(1),
    "traceparent": _param("traceparent"),
}


@functools.cache
def _queue(postgres: bool, unless_capped: bool) -> Executable:
    """INSERT the job if its agent is live (and, `unless_capped`, its tenant has no cap)."""
    live_agent = [
        agents.c.id == _param("agent_id"),
        agents.c.tenant_id == _param("tenant_id"),
        agents.c.deleted_at.is_(None),
    ]
    if unless_capped:
        capped = exists().where(
            tenant_limits.c.tenant_id == _param("tenant_id"),
            tenant_limits.c.max_unfinished_jobs.is_not(None),
        )
        live_agent.append(~capped)
    source = select(*_NEW_JOB.values()).where(*live_agent)
    stored = insert(jobs).from_select(list(_NEW_JOB), source)
    if not postgres:
        return stored.returning(jobs.c.id)
    job = stored.returning(jobs.c.id, jobs.c.tenant_id, jobs.c.event_seq).cte("job")
    queued = insert(events).from_select(
        ["job_id", "sequence", "type", "created_at", "attempt"],
        select(job.c.id, literal(1), _QUEUED_TYPE, _QUEUED_AT, literal(0)),
    )
    delivered = job_event_deliveries(job, _QUEUED_TYPE, _QUEUED_AT)
    return select(job.c.id).add_cte(queued.cte("queued"), delivered.cte("delivered"))


_QUEUED_TYPE = literal(EventType.QUEUED.value, events.c.type.type)
_QUEUED_AT = bindparam("queued_at", type_=events.c.created_at.type)
# SQLite: the outbox's deliveries of a job's QUEUED event, after the job is stored.
_DELIVER_QUEUED = job_row_deliveries(_param("id"), _QUEUED_TYPE, _QUEUED_AT)


_QUEUED_EVENT = insert(events).values(
    job_id=bindparam("id"), sequence=1, type=_QUEUED_TYPE, created_at=_QUEUED_AT, attempt=0
)

_GET = select(*_COLUMNS).where(jobs.c.id == _param("id"), jobs.c.tenant_id == _param("tenant_id"))
_CHILDREN = select(*_COLUMNS).where(jobs.c.parent_job_id.in_(bindparam("ids", expanding=True)))
_UNFINISHED_OF_AGENT = select(*_COLUMNS).where(
    jobs.c.agent_id == _param("agent_id"), jobs.c.status.in_([s.value for s in UNFINISHED])
)
_UNFINISHED_COUNT = select(func.count()).where(
    jobs.c.tenant_id == _param("tenant_id"), jobs.c.status.in_([s.value for s in UNFINISHED])
)
_CANCEL_REQUESTED = select(jobs.c.id).where(
    jobs.c.id.in_(bindparam("ids", expanding=True)), jobs.c.cancel_requested == true()
)
_INSERT_EVENT = insert(events)


@functools.cache
def _page(by_agent: bool, by_status: bool, after: bool) -> Select[Any]:
    query = select(*_COLUMNS).where(jobs.c.tenant_id == _param("tenant_id"))
    if by_agent:
        query = query.where(jobs.c.agent_id == _param("agent_id"))
    if by_status:
        query = query.where(jobs.c.status == _param("status"))
    return newest_first(query, jobs.c.queued_at, jobs.c.id, after=after)


_LOST_RUNS = (
    select(*_COLUMNS)
    .where(
        jobs.c.status == JobStatus.RUNNING.value,
        jobs.c.lease_expires_at < bindparam("now", type_=jobs.c.lease_expires_at.type),
    )
    .order_by(jobs.c.lease_expires_at)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)
_OVERDUE = (
    select(jobs.c.id)
    .where(
        jobs.c.status == JobStatus.PENDING.value,
        jobs.c.enqueued_at < bindparam("before", type_=jobs.c.enqueued_at.type),
    )
    .order_by(jobs.c.enqueued_at)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)
_SENT_AT = (
    select(jobs.c.id)
    .where(
        jobs.c.id.in_(bindparam("ids", expanding=True)),
        jobs.c.status == JobStatus.PENDING.value,
        jobs.c.enqueued_at == bindparam("sent_at", type_=jobs.c.enqueued_at.type),
    )
    .with_for_update(skip_locked=True)
)
_EXPIRED = (
    select(jobs.c.id)
    .where(
        jobs.c.status.in_([s.value for s in FINISHED]),
        jobs.c.completed_at < bindparam("before", type_=jobs.c.completed_at.type),
    )
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)
_DELETE = delete(jobs).where(jobs.c.id.in_(bindparam("ids", expanding=True)))


def _set_enqueued_at(condition: ColumnElement[bool]) -> Executable:
    """UPDATE enqueued_at of the listed jobs still matching `condition`; their ids."""
    return (
        update(jobs)
        .where(jobs.c.id.in_(bindparam("ids", expanding=True)), condition)
        .values(enqueued_at=bindparam("value", type_=jobs.c.enqueued_at.type))
        .returning(jobs.c.id)
    )


_REQUEUE = _set_enqueued_at(
    and_(
        jobs.c.status == JobStatus.PENDING.value,
        jobs.c.enqueued_at < bindparam("before", type_=jobs.c.enqueued_at.type),
    )
)
_UNSEND = _set_enqueued_at(
    and_(
        jobs.c.status == JobStatus.PENDING.value,
        jobs.c.enqueued_at == bindparam("sent_at", type_=jobs.c.enqueued_at.type),
    )
)


class Jobs:
    """Jobs, always looked up within one tenant but by the sweeper and the worker."""

    def __init__(self, run: Statements) -> None:
        self._run = run
        self._postgres = run.dialect == "postgresql"

    async def queue(self, job: NewJob, *, unless_capped: bool = False) -> bool:
        """Store a pending job and its QUEUED event; False if its agent is not live.

        With `unless_capped`, also False when the tenant has a cap of its own, which only
        a count under the tenant's lock may check.
        """
        statement = _queue(self._postgres, unless_capped)
        if self._postgres:  # one statement stores both
            return await self._run.one(statement, job.params) is not None
        async with self._run.atomic() as run:
            stored = await run.one(statement, job.params)
            if stored is not None:
                params = {"id": job.id, "queued_at": job.queued_at}
                await run.run(_QUEUED_EVENT, params)
                await run.run(_DELIVER_QUEUED, params)
        return stored is not None

    async def get(self, job_id: str, *, tenant_id: str) -> JobRecord | None:
        """The tenant's job, or None when it doesn't exist or is another tenant's."""
        row = await self._run.one(_GET, {"id": job_id, "tenant_id": tenant_id})
        return None if row is None else JobRecord.of(row)

    async def page(
        self,
        tenant_id: str,
        *,
        agent_id: str | None,
        status: JobStatus | None,
        after: Cursor | None,
        limit: int,
    ) -> list[JobRecord]:
        """Up to `limit` jobs of the tenant, newest first, strictly after `after`."""
        query = _page(agent_id is not None, status is not None, after is not None)
        params: dict[str, Any] = {"tenant_id": tenant_id, "limit": limit}
        params.update(agent_id=agent_id, status=status)
        if after is not None:
            params.update(after_at=after.at, after_id=after.id)
        return [JobRecord.of(row) for row in await self._run.all(query, params)]

    async def children(self, job_ids: Sequence[str]) -> list[JobRecord]:
        """Jobs whose parent is one of `job_ids`, in any state."""
        return [JobRecord.of(r) for r in await self._run.all(_CHILDREN, {"ids": list(job_ids)})]

    async def unfinished_of_agent(self, agent_id: str) -> list[JobRecord]:
        """Pending or running jobs of an agent."""
        rows = await self._run.all(_UNFINISHED_OF_AGENT, {"agent_id": agent_id})
        return [JobRecord.of(row) for row in rows]

    async def unfinished_count(self, tenant_id: str) -> int:
        """How many of the tenant's jobs are pending or running."""
        row = await self._run.one(_UNFINISHED_COUNT, {"tenant_id": tenant_id})
        assert row is not None
        return int(next(iter(row.values())))

    # The transitions (`server/store/transitions.py`).

    async def change(self, change: Transition) -> Row | None:
        """Apply one transition: what its statement returns, None if the job did not match."""
        statement = change.statement(self._postgres)
        if self._postgres or (change.event is None and not change.turn):  # one does it all
            return await self._run.one(statement, change.params)
        async with self._run.atomic() as run:
            row = await run.one(statement, change.params)
            if row is not None and change.event is not None:
                await run.run(_INSERT_EVENT, _event_row(change, row))
            if row is not None and change.turn:
                await run.run(STORE_TURN_OF_JOB, {"job_id": change.job_id})
            if row is not None and change.shape.deliver:
                await run.run(DELIVER_JOB_EVENT, change.params)
        return row

    async def apply(self, change: Transition) -> bool:
        """Run one transition; False when the job was not in the expected state."""
        return await self.change(change) is not None

    async def claim(
        self, job_id: str, *, now: datetime, token: str, lease_until: datetime
    ) -> Attempt | None:
        """Move a due pending job to running for one attempt; None if another got it."""
        change = claim(job_id, now=now, token=token, lease_until=lease_until)
        row = await self.change(change)
        return None if row is None else claimed(change, row)

    async def due_at(self, job_id: str) -> datetime | None:
        """When a pending job may run next; None if it is not pending (or not there)."""
        row = await self._run.one(DUE, {"job_id": job_id})
        if row is None or row["status"] != JobStatus.PENDING:
            return None
        due: datetime = row["next_run_at"]
        return due

    async def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        """Which of these jobs have a cancel request."""
        rows = await self._run.all(_CANCEL_REQUESTED, {"ids": list(job_ids)})
        return {row["id"] for row in rows}

    # The sweeper's.

    async def lost_runs(self, *, now: datetime, limit: int) -> list[JobRecord]:
        """Running jobs whose lease ran out (their worker died or hung), locked for the sweep."""
        rows = await self._run.all(_LOST_RUNS, {"now": now, "limit": limit})
        return [JobRecord.of(row) for row in rows]

    async def requeue_overdue(self, *, before: datetime, now: datetime, limit: int) -> list[str]:
        """Mark up to `limit` pending jobs overdue since `before` as sent `now`; their ids."""
        ids = await self._ids(_OVERDUE, {"before": before, "limit": limit})
        return await self._ids(_REQUEUE, {"ids": ids, "before": before, "value": now}, ids)

    async def mark_unsent(
        self, job_ids: Sequence[str], *, sent_at: datetime, overdue_at: datetime
    ) -> list[str]:
        """Make jobs marked sent at `sent_at`, whose message did not go, overdue again."""
        ids = await self._ids(_SENT_AT, {"ids": list(job_ids), "sent_at": sent_at})
        params = {"ids": ids, "sent_at": sent_at, "value": overdue_at}
        return await self._ids(_UNSEND, params, ids)

    async def expired(self, *, finished_before: datetime, limit: int) -> list[str]:
        """Ids of jobs that finished before the cutoff (retention is over), locked."""
        return await self._ids(_EXPIRED, {"before": finished_before, "limit": limit})

    async def delete(self, job_ids: Sequence[str]) -> None:
        """Remove these jobs (their events and keys are removed by their own stores)."""
        await self._run.run(_DELETE, {"ids": list(job_ids)})

    async def _ids(
        self, statement: Executable, params: Mapping[str, Any], only: list[str] | None = None
    ) -> list[str]:
        # An update of an empty id list has nothing to do.
        if only is not None and not only:
            return []
        return [row["id"] for row in await self._run.all(statement, params)]


def _event_row(change: Transition, row: Row) -> dict[str, Any]:
    """SQLite: the event of a row just changed, numbered by its new event_seq."""
    assert change.event is not None
    event = {
        "job_id": change.job_id,
        "sequence": row["event_seq"],
        "type": change.event.type.value,
        "created_at": change.at,
        "attempt": row["attempts"],
        "error": change.event.error,
        "delay_s": change.event.delay_s,
        "delta": change.event.delta,
    }
    if change.event.step is not None:
        # The step's parameters are named after its columns.
        params = change.params
        event.update((name, params[name]) for name in STEP_COLUMNS)
    return event
