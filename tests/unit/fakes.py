"""In-memory fakes for unit tests: a database with units of work, a queue, a clock, a provider.

The fake repositories keep the semantics of `server/repository.py` that the service layer
relies on, so a unit test fails where the real database would:

- A unit of work sees committed rows plus its own changes; nothing it does is visible to
  others until `commit()`, and leaving the `with` block without committing drops it all.
- `get` and the queries hand out copies of the rows, one per unit of work and id (an
  identity map), which stay readable after the unit of work ends. Like SQLAlchemy's
  `synchronize_session=False` UPDATEs, a transition does not change copies already handed
  out, and a row read back from the store holds its status as a plain string.
- `claim`, `finish_attempt` and `mark_enqueued` are compare-and-set: they change the row
  only if it is still in the expected state, and say whether they did.
- Writing checks what the schema and driver check: NOT NULL columns, a unique id, the job's
  agent, aware datetimes, text that encodes as UTF-8.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

from sqlalchemy import inspect
from sqlalchemy.orm import Mapper

from server.models import Agent, Job, JobStatus
from server.providers.base import Completion

Row = TypeVar("Row", bound=Agent | Job)

START = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


class IntegrityError(Exception):
    """What the database would refuse to store."""


def _columns(model: type[Agent | Job]) -> list[str]:
    mapper: Mapper[Any] = inspect(model)
    return [attribute.key for attribute in mapper.column_attrs]


_COLUMNS = {Agent: _columns(Agent), Job: _columns(Job)}


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


def _check_storable(value: object) -> None:
    """Refuse what a database driver refuses: naive datetimes, text that is not UTF-8."""
    if isinstance(value, datetime) and value.tzinfo is None:
        raise ValueError("naive datetimes are not stored")
    if isinstance(value, str):
        value.encode("utf-8")  # raises UnicodeEncodeError on a lone surrogate


class FakeStore:
    """The committed rows of a fake database; tests may read and change them directly."""

    def __init__(self) -> None:
        self.agents: dict[str, Agent] = {}
        self.jobs: dict[str, Job] = {}
        self.commits = 0

    def unit_of_work(self) -> FakeUnitOfWork:
        """A new unit of work on this store: pass `store.unit_of_work` as the factory."""
        return FakeUnitOfWork(self)

    def put(self, *rows: Agent | Job) -> None:
        """Store rows as committed, as if another process had inserted them."""
        for row in rows:
            self.table(type(row))[row.id] = _copy(_insertable(row))

    def table(self, model: type) -> dict[str, Any]:
        """The committed rows of one model, by id."""
        return self.agents if model is Agent else self.jobs


class FakeUnitOfWork:
    """One transaction on a FakeStore, with the repositories of `server.unit_of_work`."""

    agents: FakeAgentRepository
    jobs: FakeJobRepository

    def __init__(self, store: FakeStore) -> None:
        self._store = store

    def __enter__(self) -> Self:
        # Rows this transaction wrote, not yet committed; and the copies it handed out.
        self._written: dict[tuple[type, str], Agent | Job] = {}
        self._loaded: dict[tuple[type, str], Agent | Job] = {}
        self._staged: list[Agent | Job] = []
        self.agents = FakeAgentRepository(self)
        self.jobs = FakeJobRepository(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Whatever was not committed is rolled back.
        self._written.clear()
        self._staged.clear()

    def commit(self) -> None:
        """Make this transaction's writes visible to every later unit of work."""
        self.flush()
        for (model, row_id), row in self._written.items():
            self._store.table(model)[row_id] = _copy(row)
        self._written.clear()
        self._store.commits += 1

    # What the repositories use.

    def flush(self) -> None:
        """Insert the staged rows, as the session does before a query or commit."""
        staged, self._staged = self._staged, []
        for row in staged:
            model = type(row)
            if self.current(model, row.id) is not None:
                raise IntegrityError(f"UNIQUE constraint failed: {model.__tablename__}.id")
            if isinstance(row, Job) and self.current(Agent, row.agent_id) is None:
                raise IntegrityError("FOREIGN KEY constraint failed: jobs.agent_id")
            self._written[(model, row.id)] = _copy(_insertable(row))

    def stage(self, row: Agent | Job) -> None:
        """Hold a new row until the next flush; it is this transaction's object for its id."""
        self._loaded[(type(row), row.id)] = row
        self._staged.append(row)

    def current(self, model: type[Row], row_id: str) -> Row | None:
        """The row as this transaction sees it now (its own write, else the committed one)."""
        row = self._written.get((model, row_id)) or self._store.table(model).get(row_id)
        return row  # type: ignore[return-value]

    def rows(self, model: type[Row]) -> list[Row]:
        """Every row of a model as this transaction sees it."""
        self.flush()
        ids = set(self._store.table(model)) | {i for (m, i) in self._written if m is model}
        return [row for row_id in ids if (row := self.current(model, row_id)) is not None]

    def load(self, row: Row) -> Row:
        """The object this transaction hands out for a row: the same one every time."""
        key = (type(row), row.id)
        if key not in self._loaded:
            self._loaded[key] = _copy(row)
        return self._loaded[key]  # type: ignore[return-value]

    def find(self, model: type[Row], row_id: str) -> Row | None:
        """The object for an id: the one already handed out, else a copy of the row."""
        if (model, row_id) in self._loaded:
            return self._loaded[(model, row_id)]  # type: ignore[return-value]
        row = self.current(model, row_id)
        return None if row is None else self.load(row)

    def write(self, row: Job, values: dict[str, Any]) -> None:
        """Change a row in this transaction; objects already handed out keep old values."""
        updated = _copy(row)
        for key, value in values.items():
            _check_storable(value)
            setattr(updated, key, value)
        self._written[(Job, row.id)] = updated


class FakeAgentRepository:
    """AgentRepository over a FakeUnitOfWork."""

    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    def add(self, agent: Agent) -> None:
        """Stage a new agent."""
        self._uow.stage(agent)

    def get(self, agent_id: str, *, tenant_id: str | None = None) -> Agent | None:
        """The agent, or None when it doesn't exist or belongs to another tenant."""
        return _get(self._uow, Agent, agent_id, tenant_id)


class FakeJobRepository:
    """JobRepository over a FakeUnitOfWork, with the same compare-and-set transitions."""

    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    def add(self, job: Job) -> None:
        """Stage a new job."""
        self._uow.stage(job)

    def get(self, job_id: str, *, tenant_id: str | None = None) -> Job | None:
        """The job, or None when it doesn't exist or belongs to another tenant."""
        return _get(self._uow, Job, job_id, tenant_id)

    def claim(self, job_id: str, *, now: datetime, token: str, lease_until: datetime) -> bool:
        """Move a due pending job to running for one attempt; False if another got it."""
        row = self._row(job_id)
        if row is None or row.status != JobStatus.PENDING or not row.next_run_at <= now:
            return False
        values = {
            "status": JobStatus.RUNNING,
            "attempts": row.attempts + 1,
            "started_at": now,
            "run_token": token,
            "lease_expires_at": lease_until,
        }
        self._uow.write(row, values)
        return True

    def finish_attempt(self, job_id: str, *, token: str, values: dict[str, Any]) -> bool:
        """Apply the outcome of the attempt holding `token`; False if it lost the job."""
        row = self._row(job_id)
        if row is None or row.status != JobStatus.RUNNING or row.run_token != token:
            return False
        self._uow.write(row, {"run_token": None, "lease_expires_at": None, **values})
        return True

    def mark_enqueued(self, job_id: str, *, previous: datetime, due: datetime) -> bool:
        """Record a new message for a pending job, unless another process just did."""
        row = self._row(job_id)
        if row is None or row.status != JobStatus.PENDING or row.enqueued_at != previous:
            return False
        self._uow.write(row, {"enqueued_at": due})
        return True

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

    def overdue_pending(self, *, before: datetime, limit: int) -> Sequence[Job]:
        """Pending jobs whose newest message should have been picked up before `before`."""
        overdue = [
            row
            for row in self._uow.rows(Job)
            if row.status == JobStatus.PENDING and row.enqueued_at < before
        ]
        overdue.sort(key=lambda row: row.enqueued_at)
        return [self._uow.load(row) for row in overdue[:limit]]

    def _row(self, job_id: str) -> Job | None:
        # An UPDATE flushes staged rows first, then sees the newest row.
        self._uow.flush()
        return self._uow.current(Job, job_id)


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


@dataclass(frozen=True)
class ProviderCall:
    """The arguments of one call to a provider."""

    system: str
    prompt: str
    timeout_s: float


Step = Completion | BaseException | Callable[[], Completion]


class ScriptedProvider:
    """A Provider that plays back its steps in order and records every call.

    A step is a Completion to return, an exception to raise, or a callable whose result is
    returned (it may raise, sleep or change the world, as a real call can).
    """

    def __init__(self, *steps: Step) -> None:
        self._steps = list(steps)
        self.calls: list[ProviderCall] = []

    def complete(self, *, system: str, prompt: str, timeout_s: float) -> Completion:
        """The next scripted answer."""
        self.calls.append(ProviderCall(system=system, prompt=prompt, timeout_s=timeout_s))
        if not self._steps:
            raise AssertionError(f"provider called {len(self.calls)} times; not scripted")
        step = self._steps.pop(0)
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, Completion):
            return step
        return step()


def slowly(seconds: float, completion: Completion) -> Callable[[], Completion]:
    """A provider step that takes `seconds` of wall-clock time, then answers."""

    def answer() -> Completion:
        time.sleep(seconds)
        return completion

    return answer


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


def snapshot(row: Agent | Job) -> dict[str, Any]:
    """Every column of a row, to compare a row before and after."""
    return {key: getattr(row, key) for key in _COLUMNS[type(row)]}
