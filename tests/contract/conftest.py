"""Each contract test runs on SQLite and on PostgreSQL, alone and in a transaction.

SQLite is a real file, PostgreSQL the server of AGENTQ_TEST_POSTGRES_URL (tests/conftest.py):
each is migrated once per session, every test opens the store on it afresh and seeds jobs
of its own. Without the PostgreSQL server its cases skip on a laptop but fail when CI is
set.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.store.connect import open_database
from server.store.store import Store
from tests.contract.backends import Backend
from tests.world import migrated

DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
MODES = ["alone", "in-transaction"]


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite database in a file, shared by the session."""
    path: Path = tmp_path_factory.mktemp("contract") / "agentq.db"
    return migrated(f"sqlite:///{path}")


@pytest.fixture(scope="session")
def migrated_postgres_url(postgres_url: str) -> str:
    """A migrated PostgreSQL database, shared by the session."""
    return migrated(postgres_url)


@pytest.fixture(params=DATABASES)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """The store on one database, through the adapter agentq runs on it."""
    name: str = request.param
    url: str = request.getfixturevalue(
        "sqlite_url" if name == "sqlite" else "migrated_postgres_url"
    )
    store = Store(await open_database(url, pool_size=4))
    try:
        yield store
    finally:
        await store.db.close()


@pytest.fixture(params=MODES)
def backend(store: Store, request: pytest.FixtureRequest) -> Backend:
    """The store, each claim and change alone or in a transaction of its own."""
    return Backend(store, in_transaction=request.param == "in-transaction")
