"""Each contract test runs once per backend: the fake, SQLite and PostgreSQL.

SQLite is a real file, PostgreSQL the server of AGENTQ_TEST_POSTGRES_URL (tests/conftest.py):
each is migrated once per session, and every test seeds jobs of its own. Without the
PostgreSQL server its cases skip on a laptop but fail when CI is set.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from server.store.migrate import create_db_engine, migrate
from tests.contract.backends import (
    AsyncpgBackend,
    Backend,
    ConnectionBackend,
    FakeBackend,
    SessionBackend,
)

BACKENDS = ["fake", "sqlite-connection", "sqlite-session", "postgres-session", "postgres-asyncpg"]


def _migrated(url: str) -> Iterator[Engine]:
    engine = create_db_engine(url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A migrated SQLite database in a file, shared by the session."""
    path: Path = tmp_path_factory.mktemp("contract") / "agentq.db"
    yield from _migrated(f"sqlite:///{path}")


@pytest.fixture(scope="session")
def postgres_engine(postgres_url: str) -> Iterator[Engine]:
    """A migrated PostgreSQL database, shared by the session."""
    yield from _migrated(postgres_url)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """One backend, through the adapter its name says."""
    name: str = request.param
    if name == "fake":
        yield FakeBackend()
        return
    database, adapter = name.split("-")
    engine: Engine = request.getfixturevalue(f"{database}_engine")
    if adapter == "session":
        yield SessionBackend(engine)
    elif adapter == "connection":
        yield ConnectionBackend(engine)
    else:
        store = AsyncpgBackend(engine)
        yield store
        store.close()
