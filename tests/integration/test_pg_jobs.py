"""The asyncpg paths of GetJob and a plain Execute against a real PostgreSQL.

They must store and read exactly what the service layer does, refuse what it
refuses, and hand capped tenants back to it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from server.auth import Principal
from server.errors import NotFound, ResourceExhausted, Unavailable
from server.grpc_api.blocking import Blocking
from server.grpc_api.job_calls import JobCalls
from server.models import StoredJob
from server.pg_jobs import NewJob, PgJobStore, Queued, asyncpg_dsn
from server.runtime import Runtime, build_runtime
from server.sending import MessageSender
from server.validation import AgentSpec, ExecutionSpec
from tests.e2e.harness import settings_for

pytestmark = pytest.mark.postgres

ACME = Principal(subject="alice", role="user", tenant_id="acme")
GLOBEX = Principal(subject="bob", role="user", tenant_id="globex")
SPEC = ExecutionSpec(
    prompt="Summarise the report",
    context_id="ctx-1",
    enable_adversarial=True,
    enable_self_correction=False,
    max_debate_rounds=2,
)
# Columns that differ between any two jobs, whoever stored them.
_OWN = {"id", "queued_at", "next_run_at", "enqueued_at"}


@dataclass
class RecordingQueue:
    """A BatchQueue that keeps the ids it is asked to send."""

    sent: list[str] = field(default_factory=list)

    def enqueue_many(self, job_ids: Sequence[str]) -> None:
        self.sent.extend(job_ids)


@dataclass
class Setup:
    runtime: Runtime
    runner: asyncio.Runner
    store: PgJobStore
    queue: RecordingQueue
    calls: JobCalls
    sender: MessageSender
    url: str

    def agent(self, tenant: Principal = ACME) -> str:
        spec = AgentSpec(name="writer", role="You write.", max_depth=3, spawn_shadow=False)
        return self.runtime.services.agents.create_agent(tenant, spec).id

    def rows(self, table: str) -> list[dict[str, Any]]:
        with psycopg.connect(asyncpg_dsn(self.url), row_factory=psycopg.rows.dict_row) as db:
            return db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()

    def queue_job(self, agent_id: str, tenant: Principal = ACME) -> tuple[str, Queued]:
        job_id = str(uuid.uuid4())
        new = NewJob(job_id, agent_id, tenant.tenant_id, SPEC, datetime.now(UTC))
        return job_id, self.runner.run(self.store.queue_job(new))


@pytest.fixture
def setup(fresh_postgres_url: str) -> Iterator[Setup]:
    runtime = build_runtime(settings_for(database_url=fresh_postgres_url))
    blocking = Blocking(4)
    queue = RecordingQueue()
    sender = MessageSender(queue)
    with asyncio.Runner() as runner:
        store = runner.run(PgJobStore.open(fresh_postgres_url, size=4))
        calls = JobCalls(runtime.services, blocking, store=store, sender=sender)
        try:
            yield Setup(runtime, runner, store, queue, calls, sender, fresh_postgres_url)
        finally:
            runner.run(store.close())
            sender.close()
            blocking.close()
            runtime.close()


def test_a_queued_job_is_stored_as_the_service_layer_stores_one(setup: Setup) -> None:
    agent_id = setup.agent()
    fast_id, outcome = setup.queue_job(agent_id)
    slow = setup.runtime.services.jobs.execute(ACME, agent_id, SPEC)

    assert outcome is Queued.QUEUED
    jobs = {row["id"]: row for row in setup.rows("jobs")}
    fast, reference = jobs[fast_id], jobs[slow.id]
    assert {k: v for k, v in fast.items() if k not in _OWN} == {
        k: v for k, v in reference.items() if k not in _OWN
    }
    assert fast["queued_at"] == fast["next_run_at"] == fast["enqueued_at"]
    events = {row["job_id"]: row for row in setup.rows("job_events")}
    assert {k: v for k, v in events[fast_id].items() if k not in {"job_id", "created_at"}} == {
        k: v for k, v in events[slow.id].items() if k not in {"job_id", "created_at"}
    }
    assert events[fast_id]["created_at"] == fast["queued_at"]


def test_a_job_read_back_has_what_the_service_layer_reads(setup: Setup) -> None:
    agent_id = setup.agent()
    job_id, _ = setup.queue_job(agent_id)

    fast = setup.runner.run(setup.store.get_job("acme", job_id))
    slow = setup.runtime.services.jobs.get_job(ACME, job_id)

    shown = [name for name in dir(StoredJob) if not name.startswith("_")]
    assert fast is not None and "status" in shown and len(shown) == 17
    for column in shown:
        assert getattr(fast, column) == getattr(slow, column), column


def test_another_tenants_job_reads_as_missing(setup: Setup) -> None:
    job_id, _ = setup.queue_job(setup.agent())

    assert setup.runner.run(setup.store.get_job("globex", job_id)) is None
    with pytest.raises(NotFound) as caught:
        setup.runner.run(setup.calls.get_job(GLOBEX, job_id))
    assert caught.value.message == f"Job {job_id} not found"


@pytest.mark.parametrize("case", ["other tenant", "deleted", "unknown"])
def test_an_agent_the_caller_cannot_see_stores_nothing(setup: Setup, case: str) -> None:
    agent_id = setup.agent(GLOBEX if case == "other tenant" else ACME)
    if case == "deleted":
        setup.runtime.services.agents.delete_agent(ACME, agent_id)
    if case == "unknown":
        agent_id = str(uuid.uuid4())

    _, outcome = setup.queue_job(agent_id)
    with pytest.raises(NotFound) as caught:
        setup.runner.run(
            setup.calls.execute(ACME, agent_id, SPEC, request_id=None, parent_job_id=None)
        )

    assert outcome is Queued.NO_AGENT
    assert caught.value.message == "Agent not found"
    assert setup.rows("jobs") == [] and setup.rows("job_events") == []
    assert setup.queue.sent == []


def test_a_tenant_with_a_cap_is_left_to_the_service_layer_which_enforces_it(
    setup: Setup,
) -> None:
    agent_id = setup.agent()
    setup.runtime.access.set_limits("acme", tier=None, max_unfinished=1)

    _, outcome = setup.queue_job(agent_id)
    first = setup.runner.run(
        setup.calls.execute(ACME, agent_id, SPEC, request_id=None, parent_job_id=None)
    )
    with pytest.raises(ResourceExhausted) as caught:
        setup.runner.run(
            setup.calls.execute(ACME, agent_id, SPEC, request_id=None, parent_job_id=None)
        )

    assert outcome is Queued.CAPPED
    assert caught.value.message == "Too many unfinished jobs: the limit is 1 per tenant"
    assert [row["id"] for row in setup.rows("jobs")] == [first]


def test_a_tier_without_a_cap_does_not_send_the_tenant_the_slow_way(setup: Setup) -> None:
    agent_id = setup.agent()
    setup.runtime.access.set_limits("acme", tier="free", max_unfinished=None)

    _, outcome = setup.queue_job(agent_id)

    assert outcome is Queued.QUEUED


def test_an_execution_is_stored_before_its_message_is_sent(setup: Setup) -> None:
    agent_id = setup.agent()

    job_id = setup.runner.run(
        setup.calls.execute(ACME, agent_id, SPEC, request_id=None, parent_job_id=None)
    )
    setup.sender.close()  # waits until every handed-over id was sent

    assert setup.queue.sent == [job_id]
    assert setup.runtime.services.jobs.get_job(ACME, job_id).status == "pending"


def test_a_dropped_database_connection_is_unavailable(setup: Setup) -> None:
    job_id, _ = setup.queue_job(setup.agent())
    database = setup.url.rsplit("/", 1)[1]
    with psycopg.connect(asyncpg_dsn(setup.url).rsplit("/", 1)[0] + "/postgres") as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        )

    with pytest.raises(Unavailable) as caught:
        setup.runner.run(setup.store.get_job("acme", job_id))
    # The pool replaces the dead connection: the next call works again.
    found = setup.runner.run(setup.store.get_job("acme", job_id))

    assert caught.value.message == "Database unavailable"
    assert found is not None
