"""One world for tests of the service layer and the engine: the real store, fake edges.

The store is the one the service runs on (`server/store/`), on an in-memory SQLite
database by default or on a real PostgreSQL one; only the clock, the queue and the
provider are fakes (`tests/fakes/`). A world's services and runner share its clock and
queue, so a test drives time and sees every message sent.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.schema import CreateIndex, CreateTable

from server.auth.principal import Principal
from server.paging import PageTokens
from server.providers.base import Completion, Provider
from server.ratelimit import DEFAULT_TIERS
from server.service.access import AccessService
from server.service.agents import AgentService
from server.service.contexts import ContextService
from server.service.event_log import EventLogService
from server.service.jobs import JobService
from server.service.orchestrator import Orchestrator
from server.service.recovery import Recovery
from server.service.workflows import WorkflowService
from server.store.connect import open_database
from server.store.events import EventType
from server.store.migrate import create_db_engine, migrate
from server.store.models import Base, JobStatus
from server.store.records import AgentRecord, EventRecord, JobRecord
from server.store.sqlite import SqliteDatabase
from server.store.store import Store
from server.store.tables import agents, events, jobs
from server.validation import AgentSpec, ExecutionSpec, agent_spec, execution_spec
from server.worker.history import ContextLimits
from server.worker.policy import RetryPolicy
from server.worker.runner import AttemptRunner, CancelSignal
from server.worker.store import DatabaseAttemptStore
from server.worker.verification import VerifyConfig
from tests.fakes.clock import START, FakeClock
from tests.fakes.queue import FakeQueue

ALICE = Principal(subject="alice", role="user", tenant_id="acme")
BOB = Principal(subject="bob", role="user", tenant_id="globex")
PEPPER = b"a test pepper of thirty-two bytes"
PROMPT = "Summarise the quarterly report."
# What a scripted provider answers in most tests.
ANSWER = Completion(text="Revenue grew 12% on strong exports.", tokens_used=42)


def agent_request(name: str = "Researcher") -> AgentSpec:
    """A valid create-agent request."""
    return agent_spec(
        name=name, role="You are a careful research assistant.", max_depth=None, spawn_shadow=False
    )


def execute_request(prompt: str = PROMPT) -> ExecutionSpec:
    """A valid execute request for `prompt`, its options left at their defaults."""
    return execution_spec(
        prompt=prompt,
        context_id=None,
        enable_adversarial=False,
        enable_self_correction=False,
        max_debate_rounds=None,
    )


def context_request(context_id: str | None, prompt: str = PROMPT) -> ExecutionSpec:
    """A valid execute request for `prompt` in the conversation `context_id` (None: none)."""
    return execution_spec(
        prompt=prompt,
        context_id=context_id,
        enable_adversarial=False,
        enable_self_correction=False,
        max_debate_rounds=None,
    )


def full_request(prompt: str = PROMPT) -> ExecutionSpec:
    """A valid execute request with a context and adversarial debate set, to see them stored."""
    return execution_spec(
        prompt=prompt,
        context_id="ctx-42",
        enable_adversarial=True,
        enable_self_correction=False,
        max_debate_rounds=5,
    )


def job_row(agent_id: str, at: datetime, **values: Any) -> dict[str, Any]:
    """Every column of a job of the agent in tenant acme, pending and sent at `at`.

    `values` set other columns. Every row has the same columns, so that rows of jobs in
    different states go into one multi-row insert.
    """
    row: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "tenant_id": "acme",
        "agent_id": agent_id,
        "status": JobStatus.PENDING.value,
        "prompt": PROMPT,
        "context_id": None,
        "enable_adversarial": False,
        "enable_self_correction": False,
        "max_debate_rounds": 3,
        "attempts": 0,
        "queued_at": at,
        "started_at": None,
        "completed_at": None,
        "next_run_at": at,
        "enqueued_at": at,
        "run_token": None,
        "lease_expires_at": None,
        "tokens_used": 0,
        "verified": False,
        "debate_rounds": 0,
        "depth": 0,
        "cancel_requested": False,
        "event_seq": 1,
    }
    return row | values


@dataclass
class World:
    """The store on one database, a clock, a queue, and the services built on them."""

    store: Store
    clock: FakeClock = field(default_factory=FakeClock)
    queue: FakeQueue = field(default_factory=FakeQueue)
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    retention_s: float = 7 * 86400
    max_unfinished_jobs: int | None = None
    page_tokens: PageTokens = field(default_factory=PageTokens)
    context_auto: bool = False
    context_limits: ContextLimits = field(default_factory=ContextLimits)

    @cached_property
    def agents(self) -> AgentService:
        return AgentService(self.store, clock=self.clock, page_tokens=self.page_tokens)

    @cached_property
    def jobs(self) -> JobService:
        return JobService(
            self.store,
            self.queue,
            retention_s=self.retention_s,
            max_unfinished_jobs=self.max_unfinished_jobs,
            clock=self.clock,
            page_tokens=self.page_tokens,
            context_auto=self.context_auto,
        )

    @cached_property
    def contexts(self) -> ContextService:
        return ContextService(self.store, page_tokens=self.page_tokens)

    @cached_property
    def event_log(self) -> EventLogService:
        return EventLogService(self.store, clock=self.clock, page_tokens=self.page_tokens)

    @cached_property
    def workflows(self) -> WorkflowService:
        return WorkflowService(
            self.store, self.queue, clock=self.clock, page_tokens=self.page_tokens, jobs=self.jobs
        )

    @cached_property
    def triggers(self) -> EventLogService:
        """The event log whose emitted events start the workflows they trigger."""
        return EventLogService(
            self.store, clock=self.clock, page_tokens=self.page_tokens, on_emit=self.workflows
        )

    def orchestrator(self) -> Orchestrator:
        """The loop that moves workflow runs forward, on this world's store and queue."""
        return Orchestrator(self.store, self.queue, clock=self.clock)

    @cached_property
    def access(self) -> AccessService:
        return AccessService(
            self.store,
            pepper=PEPPER,
            tiers=DEFAULT_TIERS,
            default_tier="free",
            max_unfinished_jobs=self.max_unfinished_jobs,
            clock=self.clock,
        )

    def recovery(self, *, requeue_after_s: float = 60.0) -> Recovery:
        """The sweeper, with this world's policy and retention."""
        return Recovery(
            self.store,
            self.queue,
            self.policy,
            requeue_after_s=requeue_after_s,
            retention_s=self.retention_s,
            clock=self.clock,
        )

    def runner(
        self,
        provider: Provider,
        *,
        policy: RetryPolicy | None = None,
        verify: VerifyConfig | None = None,
    ) -> AttemptRunner:
        """An AttemptRunner on this world's store; every token delta is its own event."""
        return AttemptRunner(
            DatabaseAttemptStore(self.store),
            provider,
            self.queue,
            policy or self.policy,
            clock=self.clock,
            token_interval_s=0,
            context_limits=self.context_limits,
            verify=verify,
        )

    # Rows, written and read past the services.

    async def add_agent(self, *, tenant_id: str = "acme", **overrides: Any) -> AgentRecord:
        """Store a valid agent; `overrides` set its columns."""
        agent = AgentRecord(
            id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            name="Researcher",
            role="You are a careful research assistant.",
            max_depth=3,
            spawn_shadow=False,
            generation=0,
            fitness=0.0,
            created_at=self.clock(),
            deleted_at=None,
        )
        agent = replace(agent, **overrides)
        await self.store.agents.add(agent)
        return agent

    async def add_job(self, agent: AgentRecord, **overrides: Any) -> JobRecord:
        """Store a job of `agent`, pending and due now unless `overrides` say otherwise."""
        now = self.clock()
        values = job_row(agent.id, now, **{"tenant_id": agent.tenant_id, **overrides})
        await self.store.db.run(insert(jobs), values)
        event = {"job_id": values["id"], "sequence": 1, "type": EventType.QUEUED.value}
        await self.store.db.run(insert(events), {**event, "created_at": now, "attempt": 0})
        job = await self.job(values["id"])
        assert job is not None
        return job

    async def job(self, job_id: str) -> JobRecord | None:
        """The job with this id, of any tenant."""
        row = await self.store.db.one(select(*JobRecord.columns(jobs)).where(jobs.c.id == job_id))
        return None if row is None else JobRecord.of(row)

    async def agent(self, agent_id: str) -> AgentRecord | None:
        """The agent with this id, deleted or not, of any tenant."""
        row = await self.store.db.one(
            select(*AgentRecord.columns(agents)).where(agents.c.id == agent_id)
        )
        return None if row is None else AgentRecord.of(row)

    async def job_ids(self) -> list[str]:
        """The id of every stored job, of any tenant, in the order of the ids."""
        rows = await self.store.db.all(select(jobs.c.id).order_by(jobs.c.id))
        return [row["id"] for row in rows]

    async def events(self, job_id: str) -> list[EventRecord]:
        """Every event of the job, oldest first."""
        return await self.store.events.after(job_id, 0, limit=10_000)

    async def run_job(
        self, runner: AttemptRunner, job_id: str, signal: CancelSignal | None = None
    ) -> bool:
        """Handle one message for the job as the engine does: claim it, run the attempt.

        True when the message started an attempt.
        """
        attempt = await runner.claim(job_id)
        if attempt is None:
            return False
        await runner.run(attempt, signal or CancelSignal())
        return True


@functools.cache
def _schema_script() -> str:
    """The models' CREATE statements for SQLite, as one script."""
    dialect = sqlite.dialect()
    statements = []
    for table in Base.metadata.sorted_tables:
        statements.append(str(CreateTable(table).compile(dialect=dialect)).strip())
        statements += [str(CreateIndex(index).compile(dialect=dialect)) for index in table.indexes]
    return ";\n".join(statements) + ";"


async def sqlite_store() -> Store:
    """The store on a new in-memory SQLite database with the schema created.

    The schema goes in as one script, in one call to the driver: a third of the time
    `create_all` takes, and every unit test makes a database.
    """
    db = SqliteDatabase.open("sqlite://", pool_size=1)
    script = _schema_script()
    await db.run_sync(lambda connection: connection.connection.executescript(script))
    return Store(db)


def migrated(url: str) -> str:
    """Migrate the database at `url` to the newest schema, as agentq does at start; `url`."""
    engine = create_db_engine(url, pool_size=1)
    try:
        migrate(engine)
    finally:
        engine.dispose()
    return url


async def postgres_store(url: str) -> Store:
    """The store on a PostgreSQL database, migrated to the newest schema."""
    return Store(await open_database(migrated(url), pool_size=4))


@asynccontextmanager
async def world_on(store: Store, **options: Any) -> AsyncIterator[World]:
    """A world on `store`, closed when the block ends."""
    try:
        yield World(store, **options)
    finally:
        await store.db.close()


__all__ = [
    "ALICE",
    "ANSWER",
    "BOB",
    "PROMPT",
    "START",
    "World",
    "agent_request",
    "context_request",
    "execute_request",
    "full_request",
    "job_row",
    "migrated",
    "postgres_store",
    "sqlite_store",
    "world_on",
]
