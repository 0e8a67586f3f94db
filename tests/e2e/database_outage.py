"""A PostgreSQL outage for the tests of what agentq answers while its database is down."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from sqlalchemy.engine import make_url


@contextmanager
def database_down(database_url: str) -> Iterator[None]:
    """For the block, the database at `database_url` refuses new connections and its open
    ones are ended, as when the server is down; it takes connections again after."""
    url = make_url(database_url)
    admin_url = url.set(drivername="postgresql", database="postgres")
    name = str(url.database)
    with psycopg.connect(admin_url.render_as_string(hide_password=False), autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        try:
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
