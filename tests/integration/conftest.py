"""Fixtures shared by the integration tests: migrated databases of each kind, and the store.

Each database is new and empty for its test, migrated as agentq migrates it at start;
a test opens as many stores (each with a pool of its own) on it as it needs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from server.providers.openai_compat import OpenAICompatibleProvider
from server.store.connect import open_database
from server.store.migrate import create_db_engine
from server.store.store import Store
from tests.integration.openai_servers import ScriptedServer, make_provider, running_scripted_server
from tests.world import World, migrated, world_on

DATABASES = [pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"]


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a migrated, empty database of each kind agentq supports."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("fresh_postgres_url")
    else:
        url = f"sqlite:///{tmp_path / 'agentq.db'}"
    return migrated(url)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A (synchronous) engine on the migrated database, as the migration runner uses."""
    engine = create_db_engine(database_url, pool_size=4)
    yield engine
    engine.dispose()


class Stores:
    """Opens stores on one database, each with a pool of its own as another process has."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._opened: list[Store] = []

    async def open(self, *, pool_size: int = 4) -> Store:
        """A new store on the database, closed when the test ends."""
        store = Store(await open_database(self.url, pool_size=pool_size))
        self._opened.append(store)
        return store

    async def close(self) -> None:
        """Close every store opened."""
        for store in self._opened:
            await store.db.close()


@pytest.fixture
async def stores(database_url: str) -> AsyncIterator[Stores]:
    """Opens stores of their own on the migrated database of each kind."""
    opened = Stores(database_url)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def db_world(database_url: str) -> AsyncIterator[World]:
    """A world (tests/world.py) on the migrated database of each kind."""
    async with world_on(Store(await open_database(database_url, pool_size=4))) as made:
        yield made


@pytest.fixture(scope="module")
def scripted_server() -> Iterator[ScriptedServer]:
    """A real HTTP server on a free local port, for the whole module."""
    with running_scripted_server() as server:
        yield server


@pytest.fixture
def scripted(scripted_server: ScriptedServer) -> ScriptedServer:
    """The module's scripted server, reset to stream "Bonjour" at once with usage."""
    scripted_server.reset()
    return scripted_server


@pytest.fixture
def provider(scripted: ScriptedServer) -> OpenAICompatibleProvider:
    """A provider with an API key, pointed at the scripted server."""
    return make_provider(scripted.base_url)
