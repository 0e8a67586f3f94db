"""The cap on a tenant's unfinished jobs, enforced by JobService from the tenant limits.

The cap is set by AccessService and read by JobService on the same store. Submits that
race each other or a change of the cap run on PostgreSQL, where the tenant's row lock
makes them take turns (and the race also on a SQLite file, whose writes take turns).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select, text, update

from server.auth.principal import Principal
from server.errors import ResourceExhausted
from server.ratelimit import DEFAULT_TIERS
from server.service.access import AccessService, Limits
from server.service.jobs import JobService
from server.store.database import Database
from server.store.models import Base, JobStatus
from server.store.records import AgentRecord
from server.store.sqlite import SqliteDatabase
from server.store.store import Store, Tables
from server.store.tables import jobs as job_table
from tests.world import PEPPER, World, execute_request, postgres_store, world_on


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def any_world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    """A world on a SQLite file, then on a new PostgreSQL database.

    Not on in-memory SQLite: its one connection is shared by every transaction, so
    they are not isolated from each other, and racing transactions are not a race.
    """
    if request.param == "sqlite":
        db = SqliteDatabase.open(f"sqlite:///{tmp_path / 'agentq.db'}", pool_size=4)
        await db.run_sync(Base.metadata.create_all)
        store = Store(db)
    else:
        store = await postgres_store(request.getfixturevalue("fresh_postgres_url"))
    async with world_on(store) as made:
        yield made


def _access(store: Store) -> AccessService:
    return AccessService(
        store,
        pepper=PEPPER,
        tiers=DEFAULT_TIERS,
        default_tier="free",
        max_unfinished_jobs=None,
    )


def _jobs(world: World, cap: int | None) -> JobService:
    return JobService(world.store, world.queue, max_unfinished_jobs=cap, clock=world.clock)


async def _submit(jobs: JobService, agent: AgentRecord) -> str:
    owner = Principal(subject="alice", role="user", tenant_id=agent.tenant_id)
    spec = execute_request("Summarise.")
    return await jobs.execute(owner, agent.id, spec)


async def _job_count(world: World) -> int:
    row = await world.store.db.one(select(func.count().label("n")).select_from(job_table))
    assert row is not None
    return int(row["n"])


class _BeforeCommit(Store):
    """The store, whose transactions run `hook` after their statements, before they commit."""

    def __init__(self, db: Database, hook: Callable[[], Awaitable[None]]) -> None:
        super().__init__(db)
        self._hook = hook

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tables]:
        async with self.db.transaction() as run:
            yield Tables(run)
            await self._hook()


async def _until_one_waits_for_a_lock(world: World) -> None:
    """Return once a session of the world's PostgreSQL database waits for a lock."""
    waiting = text(
        "SELECT count(*) AS n FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    for _ in range(1000):
        row = await world.store.db.one(waiting)
        if row is not None and row["n"]:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no session waited for the tenant's lock")


async def test_a_submit_past_the_tenants_cap_is_refused_and_stores_nothing(
    world: World,
) -> None:
    jobs, agent = _jobs(world, cap=2), await world.add_agent()
    await _submit(jobs, agent)
    await _submit(jobs, agent)

    with pytest.raises(ResourceExhausted) as caught:
        await _submit(jobs, agent)

    assert caught.value.message == "Too many unfinished jobs: the limit is 2 per tenant"
    assert caught.value.subject == "tenant:acme"
    assert caught.value.retry_after_s >= 1
    assert await _job_count(world) == 2


async def test_a_finished_job_frees_its_place_under_the_cap(world: World) -> None:
    jobs, agent = _jobs(world, cap=1), await world.add_agent()
    first = await _submit(jobs, agent)
    done = update(job_table).where(job_table.c.id == first).values(status=JobStatus.COMPLETED.value)
    await world.store.db.run(done)

    second = await _submit(jobs, agent)

    stored = await world.job(second)
    assert stored is not None
    assert stored.status == JobStatus.PENDING.value


async def test_the_cap_counts_only_the_tenants_own_jobs(world: World) -> None:
    jobs = _jobs(world, cap=1)
    await _submit(jobs, await world.add_agent(tenant_id="globex"))

    await _submit(jobs, await world.add_agent(tenant_id="acme"))

    rows = await world.store.db.all(select(job_table.c.tenant_id))
    assert sorted(row["tenant_id"] for row in rows) == ["acme", "globex"]


async def test_a_tenants_own_cap_overrides_the_default_and_zero_refuses_every_submit(
    world: World,
) -> None:
    access = _access(world.store)
    jobs, agent = _jobs(world, cap=None), await world.add_agent()
    await _submit(jobs, agent)  # no default cap

    await access.set_limits("acme", tier=None, max_unfinished=0)

    with pytest.raises(ResourceExhausted) as caught:
        await _submit(jobs, agent)
    assert caught.value.message == "Too many unfinished jobs: the limit is 0 per tenant"


async def test_racing_submits_never_exceed_the_cap(any_world: World) -> None:
    jobs, agent = _jobs(any_world, cap=5), await any_world.add_agent()

    outcomes = await asyncio.gather(
        *(_submit(jobs, agent) for _ in range(20)), return_exceptions=True
    )

    refused = [o for o in outcomes if isinstance(o, ResourceExhausted)]
    assert len(refused) == 15
    assert len([o for o in outcomes if isinstance(o, str)]) == 5
    assert await _job_count(any_world) == 5


@pytest.mark.postgres
async def test_a_cap_lowered_while_a_submit_waits_for_the_lock_is_the_cap_applied(
    pg_world: World,
) -> None:
    await _access(pg_world.store).set_limits("acme", tier=None, max_unfinished=10)
    agent = await pg_world.add_agent()
    jobs = _jobs(pg_world, cap=None)
    await _submit(jobs, agent)
    submits: list[asyncio.Task[str]] = []

    # The operator lowers the cap to 1 and, before that commits, a submit reads the
    # cap of 10 and waits for the tenant's row: once it has the row, the cap is 1.
    async def submit_meanwhile() -> None:
        submits.append(asyncio.create_task(_submit(jobs, agent)))
        await _until_one_waits_for_a_lock(pg_world)

    operator = _access(_BeforeCommit(pg_world.store.db, submit_meanwhile))
    await operator.set_limits("acme", tier=None, max_unfinished=1)

    with pytest.raises(ResourceExhausted) as caught:
        await submits[0]
    assert caught.value.message == "Too many unfinished jobs: the limit is 1 per tenant"
    assert await _job_count(pg_world) == 1


@pytest.mark.postgres
async def test_setting_limits_while_the_tenants_first_capped_submit_creates_its_row_succeeds(
    pg_world: World,
) -> None:
    jobs, agent = _jobs(pg_world, cap=10), await pg_world.add_agent()
    submits: list[asyncio.Task[str]] = []

    # The tenant's first submit under a cap starts while set_limits holds the
    # tenant's new row; it waits for the lock, then runs under the new cap.
    async def first_submit() -> None:
        submits.append(asyncio.create_task(_submit(jobs, agent)))
        await _until_one_waits_for_a_lock(pg_world)

    access = _access(_BeforeCommit(pg_world.store.db, first_submit))
    limits = await access.set_limits("acme", tier="standard", max_unfinished=3)
    await asyncio.wait_for(submits[0], timeout=10)

    assert limits == Limits("acme", "standard", DEFAULT_TIERS["standard"], 3)
    assert await _access(pg_world.store).limits("acme") == limits
    assert await _job_count(pg_world) == 1
