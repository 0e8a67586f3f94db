"""Opens the database adapter a URL names."""

from __future__ import annotations

from sqlalchemy.engine import make_url

from server.store.database import Database
from server.store.postgres import PostgresDatabase
from server.store.sqlite import SqliteDatabase


async def open_database(url: str, *, pool_size: int) -> Database:
    """The adapter for the URL's database, with up to `pool_size` connections."""
    if make_url(url).get_backend_name() == "sqlite":
        return SqliteDatabase.open(url, pool_size=pool_size)
    return await PostgresDatabase.open(url, pool_size=pool_size)
