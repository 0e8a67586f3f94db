"""Opens the database adapter a URL names."""

from __future__ import annotations

from sqlalchemy.engine import make_url

from server import tracing
from server.store.database import Database
from server.store.postgres import PostgresDatabase
from server.store.sqlite import SqliteDatabase
from server.store.traced import TracedDatabase


async def open_database(url: str, *, pool_size: int) -> Database:
    """The adapter for the URL's database, with up to `pool_size` connections.

    With tracing on, each statement is a span (`server/store/traced.py`).
    """
    database: Database
    if make_url(url).get_backend_name() == "sqlite":
        database = SqliteDatabase.open(url, pool_size=pool_size)
    else:
        database = await PostgresDatabase.open(url, pool_size=pool_size)
    return TracedDatabase(database) if tracing.enabled() else database
