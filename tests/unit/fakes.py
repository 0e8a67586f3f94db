"""In-memory fakes for unit tests: a database with units of work, a queue, a clock, a provider.

The fake repositories keep the semantics of `server/repository.py` and `server/store/events.py`
that the service layer relies on, so a unit test fails where the real database would:

- A unit of work sees committed rows plus its own changes; nothing it does is visible to
  others until `commit()`, and leaving the `with` block without committing drops it all.
- `get` and the queries hand out copies of the rows, one per unit of work and identity (an
  identity map), which stay readable after the unit of work ends. Like SQLAlchemy's
  `synchronize_session=False` UPDATEs, a transition does not change copies already handed
  out, and a row read back from the store holds its status as a plain string. Like the
  session, a change made to a handed-out copy is written at the next flush (a query, an
  UPDATE or the commit), column by changed column.
- Transitions are the values `server/store/transitions.py` makes, applied by one interpreter:
  the row changes only if every expected column still matches (and, for a claim, the job
  is due), and the transition says whether it did. One that records an event takes the
  event's number from the row's `event_seq` in the same update, and the event's attempt
  from the updated row. A claim hands back the attempt, with its agent's role read in the
  same statement (none once the agent is deleted).
- Queries page newest first by (queued_at / created_at, id), strictly after a cursor.
- Writing checks what the schema and driver check: NOT NULL columns, unique primary keys
  and unique columns such as an API key's digest (also against a twin another transaction
  committed meanwhile, as a unique index does), the job's agent, aware datetimes, text that
  encodes as UTF-8. A broken constraint raises `sqlalchemy.exc.IntegrityError`, as the
  driver's does.
- A tenant's limits row is locked as PostgreSQL locks a row: the first unit of work to
  write it (or to `lock()` it) holds it until it commits or ends, and another one that
  writes it meanwhile waits. Waiting on a lock held in the same thread would never end,
  so it raises AssertionError instead.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy import inspect
from sqlalchemy.orm import Mapper

from server.paging import Cursor
from server.providers.base import Completion, DeltaSink, Provider
from server.store.models import Agent, ApiKey, IdempotencyKey, Job, JobEvent, JobStatus, TenantLimit
from server.store.transitions import AbstractJobTransitions, Transition
from server.worker.policy import RetryPolicy
from server.worker.runner import AttemptRunner, CancelSignal
from server.worker.store import ThreadStore

Model = Agent | Job | JobEvent | IdempotencyKey | ApiKey | TenantLimit
Row = TypeVar("Row", bound=Model)
Identity = tuple[type, Hashable]

START = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
MODELS: tuple[type[Model], ...] = (Agent, Job, JobEvent, IdempotencyKey, ApiKey, TenantLimit)
UNFINISHED = (JobStatus.PENDING, JobStatus.RUNNING)
# Rows whose writes take a row lock held until the end of the transaction.
ROW_LOCKED: tuple[type[Model], ...] = (TenantLimit,)
LOCK_WAIT_S = 10.0


class IntegrityError(sa_exc.IntegrityError):
    """What the database would refuse to store, raised as the driver's error is."""

    def __init__(self, message: str) -> None:
        super().__init__(message, None, Exception(message))


def _columns(model: type[Model]) -> list[str]:
    mapper: Mapper[Any] = inspect(model)
    return [attribute.key for attribute in mapper.column_attrs]


_COLUMNS = {model: _columns(model) for model in MODELS}
_PRIMARY_KEY = {
    model: [column.key for column in model.__table__.primary_key.columns] for model in MODELS
}
_UNIQUE = {
    model: [column.key for column in model.__table__.columns if column.unique] for model in MODELS
}


def identity(row: Model) -> Hashable:
    """The primary key of a row: its id, or a tuple for a composite key."""
    values = tuple(getattr(row, key) for key in _PRIMARY_KEY[type(row)])
    return values[0] if len(values) == 1 else values


def _copy(row: Row) -> Row:
    """A detached copy of a row, as a fresh session would load it."""
    values = {key: getattr(row, key) for key in _COLUMNS[type(row)]}
    if isinstance(row, Job) and values["status"] is not None:
        # The column is a String: the database hands back "pending", not the enum.
        values["status"] = str(values["status"])
    return type(row)(**values)


def _insertable(row: Row) -> Row:
    """Apply column defaults as an INSERT would, and refuse what the schema refuses."""
    for column in type(row).__table__.columns:
        if getattr(row, column.key) is None and column.default is not None:
            setattr(row, column.key, column.default.arg)
        if getattr(row, column.key) is None and not column.nullable:
            raise IntegrityError(f"NOT NULL constraint failed: {column.table.name}.{column.key}")
        _check_storable(getattr(row, column.key))
    return row


def _clash(row: Model, others: Iterable[Model]) -> str | None:
    """The unique column `row` shares with another row, if any, as a unique index sees it."""
    own = identity(row)
    for column in _UNIQUE[type(row)]:
        value = getattr(row, column)
        if value is None:
            continue  # NULLs never clash in a unique index
        if any(identity(o) != own and getattr(o, column) == value for o in others):
            return f"{type(row).__tablename__}.{column}"
    return None


def _check_storable(value: object) -> None:
    """Refuse what a database driver refuses: naive datetimes, text that is not UTF-8."""
    if isinstance(value, datetime) and value.tzinfo is None:
        raise ValueError("naive datetimes are not stored")
    if isinstance(value, str):
        value.encode("utf-8")  # raises UnicodeEncodeError on a lone surrogate


class RowLocks:
    """Row locks held by units of work until they end, as PostgreSQL holds them."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._owners: dict[Identity, tuple[object, int]] = {}

    def acquire(self, key: Identity, owner: object) -> None:
        """Take the lock on a row for `owner`, waiting while another unit of work holds it."""
        deadline = time.monotonic() + LOCK_WAIT_S
        me = threading.get_ident()
        with self._changed:
            while (held := self._owners.get(key)) is not None and held[0] is not owner:
                if held[1] == me:
                    raise AssertionError(f"{key} is locked by another unit of work of this thread")
                if not self._changed.wait(deadline - time.monotonic()):
                    raise AssertionError(f"waited {LOCK_WAIT_S} s for the lock on {key}")
            self._owners[key] = (owner, me)

    def release_all(self, owner: object) -> None:
        """Release every lock `owner` holds (its transaction ended)."""
        with self._changed:
            for key in [key for key, (held, _) in self._owners.items() if held is owner]:
                del self._owners[key]
            self._changed.notify_all()


class FakeStore:
    """The committed rows of a fake database; tests may read and change them directly.

    `agents`, `jobs` and `api_keys` are keyed by id, `events` by (job_id, sequence), `keys`
    by (tenant_id, key) and `limits` by tenant_id.
    """

    def __init__(self) -> None:
        self.agents: dict[str, Agent] = {}
        self.jobs: dict[str, Job] = {}
        self.events: dict[tuple[str, int], JobEvent] = {}
        self.keys: dict[tuple[str, str], IdempotencyKey] = {}
        self.api_keys: dict[str, ApiKey] = {}
        self.limits: dict[str, TenantLimit] = {}
        self.commits = 0
        self.row_locks = RowLocks()
        self._before_next_commit: Callable[[], None] | None = None

    def unit_of_work(self) -> FakeUnitOfWork:
        """A new unit of work on this store: pass `store.unit_of_work` as the factory."""
        return FakeUnitOfWork(self)

    def put(self, *rows: Model) -> None:
        """Store rows as committed, as if another process had inserted them."""
        for row in rows:
            self.table(type(row))[identity(row)] = _copy(_insertable(row))

    def table(self, model: type) -> dict[Any, Any]:
        """The committed rows of one model, by identity."""
        tables: dict[type, dict[Any, Any]] = {
            Agent: self.agents,
            Job: self.jobs,
            JobEvent: self.events,
            IdempotencyKey: self.keys,
            ApiKey: self.api_keys,
            TenantLimit: self.limits,
        }
        return tables[model]

    def before_next_commit(self, action: Callable[[], None]) -> None:
        """Run `action` once, just before the next unit of work commits (a racing process)."""
        self._before_next_commit = action

    def events_of(self, job_id: str) -> list[JobEvent]:
        """The committed events of a job, by sequence."""
        return [event for (owner, _), event in sorted(self.events.items()) if owner == job_id]

    def take_before_commit(self) -> Callable[[], None] | None:
        """The pending one-shot action, now cleared."""
        action, self._before_next_commit = self._before_next_commit, None
        return action


class FakeUnitOfWork:
    """One transaction on a FakeStore, with the repositories of `server.unit_of_work`."""

    agents: FakeAgentRepository
    jobs: FakeJobRepository
    events: FakeEventRepository
    keys: FakeKeyRepository
    api_keys: FakeApiKeyRepository
    limits: FakeTenantLimitRepository

    def __init__(self, store: FakeStore) -> None:
        self._store = store

    def __enter__(self) -> Self:
        # Rows this transaction wrote or deleted, not yet committed; rows it inserted
        # (True when it replaced one it deleted); the copies it handed out and their
        # values when handed out, to find what the caller changed.
        self._written: dict[Identity, Model] = {}
        self._deleted: set[Identity] = set()
        self._inserted: dict[Identity, bool] = {}
        self._loaded: dict[Identity, Model] = {}
        self._pristine: dict[Identity, dict[str, Any]] = {}
        self._staged: list[Model] = []
        self.agents = FakeAgentRepository(self)
        self.jobs = FakeJobRepository(self)
        self.events = FakeEventRepository(self)
        self.keys = FakeKeyRepository(self)
        self.api_keys = FakeApiKeyRepository(self)
        self.limits = FakeTenantLimitRepository(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Whatever was not committed is rolled back.
        self._rollback()

    def commit(self) -> None:
        """Make this transaction's writes visible to every later unit of work."""
        action = self._store.take_before_commit()
        if action is not None:
            action()
        self.flush()
        for (model, row_id), replaced in self._inserted.items():
            if not replaced and row_id in self._store.table(model):
                # Another transaction committed the same key since: the unique index says no.
                raise IntegrityError(f"UNIQUE constraint failed: {model.__tablename__}")
            clash = _clash(self._written[(model, row_id)], list(self._store.table(model).values()))
            if clash is not None:
                raise IntegrityError(f"UNIQUE constraint failed: {clash}")
        for model, row_id in self._deleted:
            self._store.table(model).pop(row_id, None)
        for (model, row_id), row in self._written.items():
            self._store.table(model)[row_id] = _copy(row)
        self._rollback()
        self._store.commits += 1

    def _rollback(self) -> None:
        self._written.clear()
        self._deleted.clear()
        self._inserted.clear()
        self._staged.clear()
        self._store.row_locks.release_all(self)

    # What the repositories use.

    def flush(self) -> None:
        """Write changed copies and insert staged rows, as the session does before a query."""
        for key, obj in self._loaded.items():
            pristine = self._pristine.get(key)
            if pristine is None:
                continue  # staged, not inserted yet
            changed = {k: getattr(obj, k) for k in pristine if getattr(obj, k) != pristine[k]}
            row = self.current(*key)
            if changed and row is not None:
                self.write(row, changed)
                pristine.update(changed)
        staged, self._staged = self._staged, []
        for row in staged:
            key = (type(row), identity(row))
            if self.current(*key) is not None:
                raise IntegrityError(f"UNIQUE constraint failed: {type(row).__tablename__}")
            if isinstance(row, Job) and self.current(Agent, row.agent_id) is None:
                raise IntegrityError("FOREIGN KEY constraint failed: jobs.agent_id")
            clash = _clash(row, self._visible(type(row)))
            if clash is not None:
                raise IntegrityError(f"UNIQUE constraint failed: {clash}")
            self.lock_row(key)
            self._inserted[key] = key in self._deleted
            self._deleted.discard(key)
            self._written[key] = _copy(_insertable(row))
            self._pristine[key] = snapshot(row)

    def stage(self, row: Model) -> None:
        """Hold a new row until the next flush; it is this transaction's object for it."""
        self._loaded[(type(row), identity(row))] = row
        self._staged.append(row)

    def current(self, model: type[Row], row_id: Hashable) -> Row | None:
        """The row as this transaction sees it now (its own write, else the committed one)."""
        key = (model, row_id)
        if key in self._deleted:
            return None
        row = self._written.get(key) or self._store.table(model).get(row_id)
        return row  # type: ignore[return-value]

    def rows(self, model: type[Row]) -> list[Row]:
        """Every row of a model as this transaction sees it."""
        self.flush()
        return self._visible(model)

    def _visible(self, model: type[Row]) -> list[Row]:
        ids = set(self._store.table(model)) | {i for (m, i) in self._written if m is model}
        return [row for row_id in ids if (row := self.current(model, row_id)) is not None]

    def load(self, row: Row) -> Row:
        """The object this transaction hands out for a row: the same one every time."""
        key = (type(row), identity(row))
        if key not in self._loaded:
            self._loaded[key] = _copy(row)
            self._pristine[key] = snapshot(self._loaded[key])
        return self._loaded[key]  # type: ignore[return-value]

    def find(self, model: type[Row], row_id: Hashable) -> Row | None:
        """The object for an identity: the one already handed out, else a copy of the row."""
        key = (model, row_id)
        if key in self._deleted:
            return None
        if key in self._loaded:
            return self._loaded[key]  # type: ignore[return-value]
        row = self.current(model, row_id)
        return None if row is None else self.load(row)

    def lock_row(self, key: Identity) -> None:
        """Hold the lock on a row of a locked model until this transaction ends."""
        if key[0] in ROW_LOCKED:
            self._store.row_locks.acquire(key, self)

    def refresh(self, model: type[Row], row_id: Hashable) -> Row | None:
        """The object for an identity, its values read again (`populate_existing`)."""
        row = self.current(model, row_id)
        if row is None:
            return None
        found = self.load(row)
        values = snapshot(row)
        for key, value in values.items():
            setattr(found, key, value)
        self._pristine[(model, row_id)] = values
        return found

    def write(self, row: Model, values: dict[str, Any]) -> Model:
        """Change a row in this transaction; objects already handed out keep old values."""
        target = (type(row), identity(row))
        if target[0] in ROW_LOCKED:
            # Like PostgreSQL, an UPDATE that waited for the lock applies to the newest row.
            self.lock_row(target)
            row = self.current(*target) or row
        updated = _copy(row)
        for key, value in values.items():
            _check_storable(value)
            setattr(updated, key, value)
        self._written[(type(row), identity(row))] = updated
        return updated

    def delete(self, rows: Sequence[Model]) -> None:
        """Remove rows in this transaction; handed-out objects leave the identity map."""
        for row in rows:
            key = (type(row), identity(row))
            if isinstance(row, Agent) and any(j.agent_id == row.id for j in self.rows(Job)):
                raise IntegrityError("FOREIGN KEY constraint failed: jobs.agent_id")
            self._written.pop(key, None)
            self._loaded.pop(key, None)
            self._pristine.pop(key, None)
            self._inserted.pop(key, None)
            self._deleted.add(key)


def _newest_first(rows: list[Row], at: str, after: Cursor | None, limit: int) -> list[Row]:
    """Keyset paging: rows strictly after the cursor, newest (at, id) first."""
    if after is not None:
        rows = [
            row
            for row in rows
            if getattr(row, at) < after.at or (getattr(row, at) == after.at and row.id < after.id)
        ]
    rows.sort(key=lambda row: (getattr(row, at), row.id), reverse=True)
    return rows[:limit]


class FakeAgentRepository:
    """AgentRepository over a FakeUnitOfWork."""

    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    def add(self, agent: Agent) -> None:
        """Stage a new agent."""
        self._uow.stage(agent)

    def get(
        self, agent_id: str, *, tenant_id: str | None = None, include_deleted: bool = False
    ) -> Agent | None:
        """The agent, or None when it doesn't exist, is deleted or is another tenant's."""
        agent = _get(self._uow, Agent, agent_id, tenant_id)
        if agent is not None and agent.deleted_at is not None and not include_deleted:
            return None
        return agent

    def page(self, tenant_id: str, *, after: Cursor | None, limit: int) -> Sequence[Agent]:
        """Up to `limit` live agents of the tenant, newest first, strictly after `after`."""
        live = [
            row
            for row in self._uow.rows(Agent)
            if row.tenant_id == tenant_id and row.deleted_at is None
        ]
        return [self._uow.load(row) for row in _newest_first(live, "created_at", after, limit)]

    def purge_deleted(self, *, limit: int) -> int:
        """Remove deleted agents that no longer have any job; returns how many."""
        owners = {job.agent_id for job in self._uow.rows(Job)}
        gone = [
            row
            for row in self._uow.rows(Agent)
            if row.deleted_at is not None and row.id not in owners
        ][:limit]
        self._uow.delete(gone)
        return len(gone)


class FakeJobRepository(AbstractJobTransitions):
    """JobRepository over a FakeUnitOfWork; its transitions are the rules of the real one.

    Every transition is a `Transition` value of `server/store/transitions.py`, which `_change`
    interprets against the rows of the unit of work.
    """

    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    def add(self, job: Job) -> None:
        """Stage a new job."""
        self._uow.stage(job)

    def get(self, job_id: str, *, tenant_id: str | None = None) -> Job | None:
        """The job, or None when it doesn't exist or belongs to another tenant."""
        return _get(self._uow, Job, job_id, tenant_id)

    def page(
        self,
        tenant_id: str,
        *,
        agent_id: str | None,
        status: JobStatus | None,
        after: Cursor | None,
        limit: int,
    ) -> Sequence[Job]:
        """Up to `limit` jobs of the tenant, newest first, strictly after `after`."""
        rows = [
            row
            for row in self._uow.rows(Job)
            if row.tenant_id == tenant_id
            and (agent_id is None or row.agent_id == agent_id)
            and (status is None or row.status == status)
        ]
        return [self._uow.load(row) for row in _newest_first(rows, "queued_at", after, limit)]

    def children(self, job_ids: Sequence[str]) -> Sequence[Job]:
        """Jobs whose parent is one of `job_ids`, in any state."""
        return self._select(lambda row: row.parent_job_id in job_ids)

    def unfinished_of_agent(self, agent_id: str) -> Sequence[Job]:
        """Pending or running jobs of an agent."""
        return self._select(lambda row: row.agent_id == agent_id and row.status in UNFINISHED)

    def due_at(self, job_id: str) -> datetime | None:
        """When a pending job may run next; None if it is not pending (or not there)."""
        self._uow.flush()
        row = self._uow.current(Job, job_id)
        if row is None or row.status != JobStatus.PENDING:
            return None
        return row.next_run_at

    def lost_runs(self, *, now: datetime, limit: int) -> Sequence[Job]:
        """Running jobs whose lease ran out: their worker died or hung."""
        lost = [
            row
            for row in self._uow.rows(Job)
            if row.status == JobStatus.RUNNING
            and row.lease_expires_at is not None
            and row.lease_expires_at < now
        ]
        lost.sort(key=lambda row: row.lease_expires_at or now)
        return [self._uow.load(row) for row in lost[:limit]]

    def requeue_overdue(self, *, before: datetime, now: datetime, limit: int) -> list[str]:
        """Record a new message due `now` for up to `limit` pending jobs overdue since `before`."""
        overdue = [
            row
            for row in self._uow.rows(Job)
            if row.status == JobStatus.PENDING and row.enqueued_at < before
        ]
        overdue.sort(key=lambda row: row.enqueued_at)
        return [
            row.id
            for row in overdue[:limit]
            if self._set_enqueued_at(row.id, previous=row.enqueued_at, due=now)
        ]

    def mark_unsent(
        self, job_ids: Sequence[str], *, sent_at: datetime, overdue_at: datetime
    ) -> list[str]:
        """Make jobs requeued at `sent_at` whose message was not sent overdue since `overdue_at`."""
        return [
            job_id
            for job_id in job_ids
            if self._set_enqueued_at(job_id, previous=sent_at, due=overdue_at)
        ]

    def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        """Which of these running jobs have a cancel request."""
        return {row.id for row in self._uow.rows(Job) if row.id in job_ids and row.cancel_requested}

    def expired(self, *, finished_before: datetime, limit: int) -> list[str]:
        """Ids of jobs that finished before the cutoff (retention is over)."""
        return [
            row.id
            for row in self._uow.rows(Job)
            if JobStatus(row.status).finished
            and row.completed_at is not None
            and row.completed_at < finished_before
        ][:limit]

    def delete(self, job_ids: Sequence[str]) -> None:
        """Remove these jobs (their events and keys are removed by their repositories)."""
        self._uow.delete([row for row in self._uow.rows(Job) if row.id in job_ids])

    def _select(self, where: Callable[[Job], bool]) -> list[Job]:
        return [self._uow.load(row) for row in self._uow.rows(Job) if where(row)]

    def _set_enqueued_at(self, job_id: str, *, previous: datetime, due: datetime) -> bool:
        """One row of the sweeper's UPDATE: a new message for a job still pending as seen."""
        expect = {"status": JobStatus.PENDING, "enqueued_at": previous}
        return self.apply(Transition(job_id, expect=expect, values={"enqueued_at": due}))

    def _change(self, change: Transition) -> dict[str, Any] | None:
        """Apply a transition to the job as this unit of work sees it, as its UPDATE does.

        Returns the columns of the changed row (with its agent's role when the change
        starts an attempt), or None when the job is not in the expected state.
        """
        # An UPDATE flushes staged rows first, then sees the newest row.
        self._uow.flush()
        row = self._uow.current(Job, change.job_id)
        if row is None or any(getattr(row, k) != v for k, v in change.expect.items()):
            return None
        if change.due_by is not None and not row.next_run_at <= change.due_by:
            return None
        new = dict(change.values)
        new.update({column: getattr(row, column) + 1 for column in change.increment})
        if change.event is not None:
            new["event_seq"] = row.event_seq + 1
        updated = self._uow.write(row, new)
        assert isinstance(updated, Job)
        if change.event is not None and change.at is not None:
            event = change.event.row(
                change.job_id, sequence=updated.event_seq, attempt=updated.attempts, at=change.at
            )
            self._uow.stage(event)
        returned = snapshot(updated)
        if change.starts_attempt:
            # The agent's role as the same statement reads it: none once the agent is deleted.
            agent = self._uow.current(Agent, updated.agent_id)
            live = agent is not None and agent.deleted_at is None
            returned["role"] = agent.role if live and agent is not None else None
        return returned


class FakeEventRepository:
    """EventRepository over a FakeUnitOfWork."""

    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    def add(self, event: JobEvent) -> None:
        """Stage an event row."""
        self._uow.stage(event)

    def after(self, job_id: str, sequence: int, *, limit: int) -> Sequence[JobEvent]:
        """The job's events numbered above `sequence`, oldest first."""
        rows = [
            row
            for row in self._uow.rows(JobEvent)
            if row.job_id == job_id and row.sequence > sequence
        ]
        rows.sort(key=lambda row: row.sequence)
        return [self._uow.load(row) for row in rows[:limit]]

    def delete_for(self, job_ids: Sequence[str]) -> None:
        """Remove every event of these jobs."""
        self._uow.delete([row for row in self._uow.rows(JobEvent) if row.job_id in job_ids])


class FakeKeyRepository:
    """KeyRepository over a FakeUnitOfWork: keys are unique per (tenant_id, key)."""

    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    def get(self, tenant_id: str, key: str) -> IdempotencyKey | None:
        """The stored key, if any."""
        return self._uow.find(IdempotencyKey, (tenant_id, key))

    def add(self, key: IdempotencyKey) -> None:
        """Stage a new key; a concurrent twin makes the commit fail."""
        self._uow.stage(key)

    def discard(self, key: IdempotencyKey) -> None:
        """Remove a key whose retention is over."""
        self._uow.delete([key])

    def delete_for(self, job_ids: Sequence[str]) -> None:
        """Remove the keys of these jobs."""
        self._uow.delete([row for row in self._uow.rows(IdempotencyKey) if row.job_id in job_ids])

    def delete_older_than(self, cutoff: datetime) -> None:
        """Remove keys made before the cutoff."""
        self._uow.delete([row for row in self._uow.rows(IdempotencyKey) if row.created_at < cutoff])


class FakeApiKeyRepository:
    """ApiKeyRepository over a FakeUnitOfWork: digests are unique, as their index is."""

    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    def add(self, key: ApiKey) -> None:
        """Stage a new key; a twin digest makes the flush or the commit fail."""
        self._uow.stage(key)

    def by_digest(self, digest: str) -> ApiKey | None:
        """The key with this digest, live or not."""
        found = [row for row in self._uow.rows(ApiKey) if row.digest == digest]
        return self._uow.load(found[0]) if found else None

    def get(self, key_id: str) -> ApiKey | None:
        """The key with this id."""
        return self._uow.find(ApiKey, key_id)

    def all(self, *, tenant_id: str | None) -> Sequence[ApiKey]:
        """Keys newest first by (created_at, id), of one tenant or all."""
        rows = [
            row for row in self._uow.rows(ApiKey) if tenant_id is None or row.tenant_id == tenant_id
        ]
        rows.sort(key=lambda row: (row.created_at, row.id), reverse=True)
        return [self._uow.load(row) for row in rows]

    def touch(self, key_id: str, *, now: datetime, older_than: datetime) -> None:
        """Set last_used_at unless it is already newer than `older_than` (one write a minute)."""
        self._uow.flush()
        row = self._uow.current(ApiKey, key_id)
        if row is not None and (row.last_used_at is None or row.last_used_at < older_than):
            self._uow.write(row, {"last_used_at": now})


class FakeTenantLimitRepository:
    """TenantLimitRepository over a FakeUnitOfWork, with the row lock of `lock()`."""

    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    def get(self, tenant_id: str) -> TenantLimit | None:
        """The tenant's overrides, if any."""
        return self._uow.find(TenantLimit, tenant_id)

    def add(self, limit: TenantLimit) -> None:
        """Stage a tenant's first overrides."""
        self._uow.stage(limit)

    def lock(self, tenant_id: str) -> TenantLimit:
        """Hold the tenant's row until the unit of work ends, creating it if absent."""
        self._uow.flush()
        key = (TenantLimit, tenant_id)
        self._uow.lock_row(key)
        if self._uow.current(TenantLimit, tenant_id) is None:
            # INSERT .. ON CONFLICT DO NOTHING: no unique check left for the commit.
            self._uow.write(_insertable(TenantLimit(tenant_id=tenant_id)), {})
        limit = self._uow.refresh(TenantLimit, tenant_id)
        assert limit is not None
        return limit

    def unfinished_jobs(self, tenant_id: str) -> int:
        """How many of the tenant's jobs are pending or running."""
        return sum(
            1
            for row in self._uow.rows(Job)
            if row.tenant_id == tenant_id and row.status in UNFINISHED
        )


def _get(uow: FakeUnitOfWork, model: type[Row], row_id: str, tenant_id: str | None) -> Row | None:
    found = uow.find(model, row_id)
    if found is None or (tenant_id is not None and found.tenant_id != tenant_id):
        return None
    return found


@dataclass
class FakeQueue:
    """A JobQueue that records every (job_id, delay_s) call; set `error` to make it fail.

    `on_enqueue`, when set, is called with each call's job id and delay before it is
    recorded, e.g. to look at the store at the moment a message is sent.
    """

    calls: list[tuple[str, float]] = field(default_factory=list)
    error: Exception | None = None
    on_enqueue: Callable[[str, float], None] | None = None

    def enqueue(self, job_id: str, *, delay_s: float = 0.0) -> None:
        """Record one message, or raise `error`."""
        if self.on_enqueue is not None:
            self.on_enqueue(job_id, delay_s)
        self.calls.append((job_id, delay_s))
        if self.error is not None:
            raise self.error

    def enqueue_many(self, job_ids: Sequence[str]) -> None:
        """Record one message per job, as `enqueue` does, or raise at the first that fails."""
        for job_id in job_ids:
            self.enqueue(job_id)


class FakeClock:
    """A Clock that stands still until a test sets or advances it (aware UTC)."""

    def __init__(self, now: datetime = START) -> None:
        self.set(now)

    def __call__(self) -> datetime:
        return self.now

    def set(self, now: datetime) -> None:
        """Jump to a point in time."""
        if now.tzinfo is None:
            raise ValueError("the clock keeps aware datetimes only")
        self.now = now.astimezone(UTC)

    def advance(self, seconds: float) -> datetime:
        """Move forward and return the new time."""
        self.now += timedelta(seconds=seconds)
        return self.now


class ManualCancelCheck:
    """The engine's cancel check without its task: a test calls `check()` where a poll would be.

    As the engine does, it asks the store which of the watched jobs have a cancel request,
    and cancels the signals of their attempts.
    """

    def __init__(self, units: Callable[[], FakeUnitOfWork]) -> None:
        self._units = units
        self._signals: dict[str, CancelSignal] = {}

    def signal(self, job_id: str) -> CancelSignal:
        """A new signal to run the job's next attempt with, which `check()` cancels."""
        signal = self._signals[job_id] = CancelSignal()
        return signal

    def check(self) -> None:
        """Look once for cancel requests of the watched jobs."""
        with self._units() as uow:
            cancelled = uow.jobs.cancel_requested(list(self._signals))
        for job_id in cancelled:
            self._signals[job_id].cancel()


@dataclass(frozen=True)
class ProviderCall:
    """The arguments of one call to a provider (whether it streamed is not compared)."""

    system: str
    prompt: str
    streams: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class Stream:
    """A provider step that sends `pieces` to `on_delta` one by one, then answers with them.

    `after_piece`, when set, is called (and awaited, when async) with each piece's index
    after it was sent, e.g. to cancel the job midway.
    """

    pieces: tuple[str, ...]
    tokens_used: int
    after_piece: Callable[[int], Awaitable[None] | None] | None = None


Step = Completion | BaseException | Stream | Callable[[], Completion | Awaitable[Completion]]


class ScriptedProvider:
    """A Provider that plays back its steps in order and records every call.

    A step is a Completion to return, an exception to raise, a Stream of token deltas, or a
    callable, plain or async, whose result is returned (it may raise, sleep or change the
    world, as a real call can). Like a real call awaiting its connection, a step yields to
    the loop after each streamed piece and before it answers, so a cancel made meanwhile
    lands inside the call. `interrupted` counts the calls stopped by a cancel.
    """

    def __init__(self, *steps: Step) -> None:
        self._steps = list(steps)
        self.calls: list[ProviderCall] = []
        self.interrupted = 0
        self.closed = False

    async def complete(
        self, *, system: str, prompt: str, on_delta: DeltaSink | None = None
    ) -> Completion:
        """The next scripted answer."""
        self.calls.append(ProviderCall(system, prompt, streams=on_delta is not None))
        if not self._steps:
            raise AssertionError(f"provider called {len(self.calls)} times; not scripted")
        try:
            return await self._play(self._steps.pop(0), on_delta)
        except asyncio.CancelledError:
            self.interrupted += 1
            raise

    async def _play(self, step: Step, on_delta: DeltaSink | None) -> Completion:
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, Completion):
            completion = step
        elif isinstance(step, Stream):
            completion = await self._stream(step, on_delta)
        else:
            answer = step()
            completion = await answer if isinstance(answer, Awaitable) else answer
        await asyncio.sleep(0)
        return completion

    async def _stream(self, step: Stream, on_delta: DeltaSink | None) -> Completion:
        for index, piece in enumerate(step.pieces):
            if on_delta is not None:
                on_delta(piece)
            if step.after_piece is not None:
                hooked = step.after_piece(index)
                if hooked is not None:
                    await hooked
            await asyncio.sleep(0)
        return Completion(text="".join(step.pieces), tokens_used=step.tokens_used)

    async def aclose(self) -> None:
        """Note that the provider was closed."""
        self.closed = True


def slowly(seconds: float, completion: Completion) -> Callable[[], Awaitable[Completion]]:
    """A provider step that takes `seconds` of wall-clock time, then answers."""

    async def answer() -> Completion:
        await asyncio.sleep(seconds)
        return completion

    return answer


def attempt_runner(
    store: FakeStore,
    provider: Provider,
    queue: FakeQueue,
    policy: RetryPolicy,
    *,
    clock: FakeClock,
) -> AttemptRunner:
    """An AttemptRunner on the fake store, as a SQLite worker runs one; no token coalescing.

    Its units of work run on one thread, so they never overlap.
    """
    attempts = ThreadStore(store.unit_of_work, threads=1)
    return AttemptRunner(attempts, provider, queue, policy, clock=clock, token_interval_s=0)


def run_job(runner: AttemptRunner, job_id: str, signal: CancelSignal | None = None) -> bool:
    """Handle one message for the job as the engine does: claim it, then run the attempt.

    True when the message started an attempt.
    """

    async def claim_and_run() -> bool:
        attempt = await runner.claim(job_id)
        if attempt is None:
            return False
        await runner.run(attempt, signal or CancelSignal())
        return True

    return asyncio.run(claim_and_run())


def make_agent(*, tenant_id: str = "acme", **overrides: Any) -> Agent:
    """A valid agent row, not stored."""
    values: dict[str, Any] = {
        "id": "0b7c2d56-2f4e-4a8e-9a51-6f0c5d1e8a01",
        "tenant_id": tenant_id,
        "name": "Researcher",
        "role": "You are a careful research assistant.",
        "max_depth": 3,
        "spawn_shadow": False,
        "generation": 0,
        "fitness": 0.0,
        "created_at": START,
    }
    return Agent(**(values | overrides))


def make_job(agent: Agent, *, at: datetime = START, **overrides: Any) -> Job:
    """A valid job row of `agent`, pending and due at `at`, not stored."""
    values: dict[str, Any] = {
        "id": "5d1e8a01-6f0c-4a8e-9a51-0b7c2d562f4e",
        "tenant_id": agent.tenant_id,
        "agent_id": agent.id,
        "status": JobStatus.PENDING,
        "prompt": "Summarise the quarterly report.",
        "context_id": None,
        "enable_adversarial": False,
        "enable_self_correction": False,
        "max_debate_rounds": 3,
        "attempts": 0,
        "queued_at": at,
        "next_run_at": at,
        "enqueued_at": at,
        "tokens_used": 0,
        "verified": False,
    }
    return Job(**(values | overrides))


def snapshot(row: Model) -> dict[str, Any]:
    """Every column of a row, to compare a row before and after."""
    return {key: getattr(row, key) for key in _COLUMNS[type(row)]}
