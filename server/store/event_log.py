"""The tenant-wide event log: job events (token deltas excepted) and emitted events, as one.

Job transitions keep writing their events to `job_events` alone, so they cost what they
did; the log reads that table beside `client_events`, the events clients emit, as one
UNION ALL with one id space: a job event's id is `job_<job id>_<sequence>` (the sequence
as ten digits, so that ids sort as their events happened), an emitted event's
`evt_<uuid>`, stored as such. Token deltas stay out: they are the per-job stream of an
answer, not things that happened to the tenant (README, Event log).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from typing import cast as typed

from sqlalchemy import (
    Column,
    ColumnElement,
    FromClause,
    Select,
    String,
    Text,
    bindparam,
    cast,
    delete,
    insert,
    literal_column,
    null,
    select,
    union_all,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.functions import FunctionElement

from server.paging import Cursor
from server.store.database import Row, Statements
from server.store.outbox import deliveries
from server.store.pages import newest_first
from server.store.records import EventRecord
from server.store.tables import client_events, events, jobs

JOB_TYPE_PREFIX = "job."
# Types the service itself writes: clients read them but may not emit or trigger on
# them, so no client can pass for a job's or a run's outcome (README, Event log).
RESERVED_PREFIXES = (JOB_TYPE_PREFIX, "workflow.")


def reserved_prefix(event_type: str) -> str | None:
    """The service's own prefix that `event_type` starts with, if any."""
    return next((p for p in RESERVED_PREFIXES if event_type.startswith(p)), None)


JOB_ID_PREFIX = "job_"
EMITTED_ID_PREFIX = "evt_"
SEQUENCE_DIGITS = 10


class _Padded(FunctionElement[str]):
    """An integer as text of SEQUENCE_DIGITS digits, zeros in front."""

    type = String()
    inherit_cache = True
    name = "padded"


@compiles(_Padded, "postgresql")
def _padded_postgres(element: _Padded, compiler: SQLCompiler, **kw: Any) -> str:
    return f"lpad(CAST({compiler.process(element.clauses, **kw)} AS TEXT), {SEQUENCE_DIGITS}, '0')"


@compiles(_Padded, "sqlite")
def _padded_sqlite(element: _Padded, compiler: SQLCompiler, **kw: Any) -> str:
    return f"printf('%0{SEQUENCE_DIGITS}d', {compiler.process(element.clauses, **kw)})"


@dataclass(frozen=True, slots=True)
class LogEventRecord:
    """One event of the log: an emitted event's data, or a job event as its job stores it."""

    id: str
    type: str
    created_at: datetime
    agent_id: str | None
    # The emitted data as compact JSON; None for a job event.
    data: str | None
    job_event: EventRecord | None

    @classmethod
    def of(cls, row: Row) -> LogEventRecord:
        """The record of a row of the log's statements: its own columns, then the job's."""
        values = tuple(row.values())
        id_, type_, at, agent_id, data = values[:_OWN_COLUMNS]
        job = EventRecord(*values[_OWN_COLUMNS:]) if data is None else None
        return cls(id_, type_, at, agent_id, data, job)


_OWN_COLUMNS = 5
_JOB_COLUMNS = EventRecord.columns(events)


def _text(value: str) -> ColumnElement[str]:
    return literal_column(f"'{value}'", String())


def job_event_id(job_id: ColumnElement[str], sequence: ColumnElement[int]) -> ColumnElement[str]:
    """A job event's id: `job_`, the job's id, `_` and its sequence as SEQUENCE_DIGITS digits."""
    return _text(JOB_ID_PREFIX) + job_id + _text("_") + _Padded(sequence)


def job_event_type(name: ColumnElement[str]) -> ColumnElement[str]:
    """A job event's type in the log: `job.` and the job event's name."""
    return _text(JOB_TYPE_PREFIX) + name


_JOB_EVENT_ID = job_event_id(events.c.job_id, events.c.sequence)


def job_event_deliveries(source: FromClause, name: ColumnElement[str], at: Any) -> Insert:
    """The outbox's deliveries of the job event a transition just numbered (README,
    Webhooks): `source` is the job's row after it (`id`, `tenant_id`, `event_seq`), `name`
    the job event's name, `at` its time.
    """
    event_id = job_event_id(source.c.id, source.c.event_seq)
    return deliveries(source.c.tenant_id, event_id, job_event_type(name), at, source)


def job_row_deliveries(job_id: ColumnElement[str], name: ColumnElement[str], at: Any) -> Insert:
    """`job_event_deliveries` read from the job's row itself, after its transition, by a
    statement of its own in the transition's transaction (SQLite has no data-modifying CTE).
    """
    row = select(jobs.c.id, jobs.c.tenant_id, jobs.c.event_seq).where(jobs.c.id == job_id)
    return job_event_deliveries(row.subquery("changed"), name, at)


def _job_events(*where: ColumnElement[bool]) -> Select[Any]:
    """The tenant's job events (no token deltas) as log rows."""
    return (
        select(
            _JOB_EVENT_ID.label("id"),
            job_event_type(events.c.type).label("type"),
            events.c.created_at.label("created_at"),
            jobs.c.agent_id,
            cast(null(), Text).label("data"),
            *[column.label(f"job_{column.name}") for column in _JOB_COLUMNS],
        )
        .select_from(events.join(jobs, jobs.c.id == events.c.job_id))
        .where(jobs.c.tenant_id == _TENANT, events.c.type != "token", *where)
    )


def _emitted(*where: ColumnElement[bool]) -> Select[Any]:
    """The tenant's emitted events as log rows, NULL where a job event has its fields."""
    return select(
        client_events.c.id,
        client_events.c.type,
        client_events.c.created_at,
        cast(null(), String).label("agent_id"),
        client_events.c.data,
        *[cast(null(), column.type).label(f"job_{column.name}") for column in _JOB_COLUMNS],
    ).where(client_events.c.tenant_id == _TENANT, *where)


_TENANT = bindparam("tenant_id", type_=String())
_SINCE = bindparam("since", type_=events.c.created_at.type)


@dataclass(frozen=True)
class LogFilter:
    """What a page of the log is limited to; None: no limit of that kind."""

    type: str | None = None
    job_id: str | None = None
    agent_id: str | None = None
    since: datetime | None = None

    def params(self) -> dict[str, Any]:
        """The filters' parameters, as the statement of their shape binds them."""
        values = {"type": self.type, "job_id": self.job_id, "agent_id": self.agent_id}
        return {name: value for name, value in values.items() if value is not None} | (
            {} if self.since is None else {"since": self.since}
        )


@functools.cache
def _page(by_type: bool, by_job: bool, by_agent: bool, since: bool, after: bool) -> Select[Any]:
    job_where: list[ColumnElement[bool]] = []
    emitted_where: list[ColumnElement[bool]] = []
    if by_type:
        job_where.append(job_event_type(events.c.type) == bindparam("type"))
        emitted_where.append(client_events.c.type == bindparam("type"))
    if by_job:
        job_where.append(events.c.job_id == bindparam("job_id"))
    if by_agent:
        job_where.append(jobs.c.agent_id == bindparam("agent_id"))
    if since:
        job_where.append(events.c.created_at >= _SINCE)
        emitted_where.append(client_events.c.created_at >= _SINCE)
    parts = [_job_events(*job_where)]
    # Emitted events belong to no job, so a job or agent filter leaves them out.
    if not (by_job or by_agent):
        parts.append(_emitted(*emitted_where))
    log = union_all(*parts).subquery("log")
    # The subquery's columns key the page as a table's would.
    at, key = typed(Column[Any], log.c.created_at), typed(Column[Any], log.c.id)
    return newest_first(select(*log.c), at, key, after=after)


_JOB_EVENT = _job_events(
    events.c.job_id == bindparam("job_id"), events.c.sequence == bindparam("sequence")
)
_EMITTED_EVENT = _emitted(client_events.c.id == bindparam("id"))
# Every column but `seq`, which the database numbers.
_ADD = insert(client_events).values(
    {name: bindparam(name) for name in ("id", "tenant_id", "type", "data", "created_at")}
)
# The outbox's deliveries of an emitted event, with the parameters of `_ADD`.
_DELIVER = deliveries(
    bindparam("tenant_id", type_=String()),
    bindparam("id", type_=String()),
    bindparam("type", type_=String()),
    bindparam("created_at", type_=client_events.c.created_at.type),
)
_EXPIRED = (
    select(client_events.c.seq)
    .where(client_events.c.created_at < bindparam("before", type_=client_events.c.created_at.type))
    .order_by(client_events.c.seq)
    .limit(bindparam("limit"))
)
_DELETE_EXPIRED = (
    delete(client_events)
    .where(client_events.c.seq.in_(_EXPIRED.scalar_subquery()))
    .returning(client_events.c.seq)
)


class EventLog:
    """The tenant-wide log: read across both tables, emitted events added and expired."""

    def __init__(self, run: Statements) -> None:
        self._run = run

    async def page(
        self, tenant_id: str, where: LogFilter, *, after: Cursor | None, limit: int
    ) -> list[LogEventRecord]:
        """Up to `limit` of the tenant's events, newest first, strictly after `after`."""
        query = _page(
            where.type is not None,
            where.job_id is not None,
            where.agent_id is not None,
            where.since is not None,
            after is not None,
        )
        params: dict[str, Any] = {"tenant_id": tenant_id, "limit": limit, **where.params()}
        if after is not None:
            params.update(after_at=after.at, after_id=after.id)
        return [LogEventRecord.of(row) for row in await self._run.all(query, params)]

    async def job_event(self, tenant_id: str, job_id: str, sequence: int) -> LogEventRecord | None:
        """The tenant's job event, unless it is a token delta or another tenant's."""
        params = {"tenant_id": tenant_id, "job_id": job_id, "sequence": sequence}
        row = await self._run.one(_JOB_EVENT, params)
        return None if row is None else LogEventRecord.of(row)

    async def emitted(self, tenant_id: str, event_id: str) -> LogEventRecord | None:
        """The tenant's emitted event of this id, if any."""
        row = await self._run.one(_EMITTED_EVENT, {"tenant_id": tenant_id, "id": event_id})
        return None if row is None else LogEventRecord.of(row)

    async def add(
        self, *, id: str, tenant_id: str, type: str, data: str, created_at: datetime
    ) -> None:
        """Store an emitted event; its `seq` is the next of the table's.

        Every emitted event is stored here, and nowhere else: its webhook deliveries go in
        with it, in the same transaction (the outbox, `server/store/outbox.py`).
        """
        values = {"id": id, "tenant_id": tenant_id, "type": type, "data": data}
        params = {**values, "created_at": created_at}
        async with self._run.atomic() as run:
            await run.run(_ADD, params)
            await run.run(_DELIVER, params)

    async def delete_older_than(self, before: datetime, *, limit: int) -> int:
        """Remove up to `limit` emitted events stored before `before`, oldest first; how many."""
        return len(await self._run.all(_DELETE_EXPIRED, {"before": before, "limit": limit}))
