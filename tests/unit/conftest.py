"""Fixtures shared by the unit tests; the world itself is in tests/conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.api.guard import Guard
from server.service.access import AccessService
from server.store.records import AgentRecord
from server.store.sqlite import SqliteDatabase
from server.store.store import Store
from tests.fakes.clock import FakeClock
from tests.unit.guard_calls import make_access, make_guard
from tests.unit.one_job import OneJob
from tests.unit.owners import Owner
from tests.world import ALICE, World, agent_request


@pytest.fixture
async def agent(world: World) -> AgentRecord:
    """ALICE's agent, created through the agent service."""
    return await world.agents.create_agent(ALICE, agent_request())


@pytest.fixture
async def owner(world: World) -> Owner:
    """ALICE, owner of a stored agent (tests/unit/owners.py)."""
    return Owner(world, await world.add_agent(role="You are a careful researcher."))


@pytest.fixture
async def one(world: World) -> OneJob:
    """One stored agent with one pending, due job (tests/unit/one_job.py)."""
    agent = await world.add_agent()
    return OneJob(world, agent, await world.add_job(agent))


@pytest.fixture
def access(world: World) -> AccessService:
    """The access service the guard asks (tests/unit/guard_calls.py), on the world's store.

    The tests of AccessService itself (test_access_*) make their own, with other tiers.
    """
    return make_access(world.store, world.clock)


@pytest.fixture
def guard(access: AccessService) -> Guard:
    """A guard over `access`, with a MemoryRateLimiter."""
    return make_guard(access)


@pytest.fixture
async def offline(tmp_path: Path) -> AsyncIterator[AccessService]:
    """Access over a database that cannot be opened: a SQLite file in no directory."""
    db = SqliteDatabase.open(f"sqlite:///{tmp_path / 'missing' / 'agentq.db'}", pool_size=1)
    try:
        yield make_access(Store(db), FakeClock())
    finally:
        await db.close()
