"""The database port on SQLite: SQLAlchemy's async engine over aiosqlite.

SQLite's driver blocks, so aiosqlite gives each connection a thread of its own and the
event loop awaits it. Statements go through SQLAlchemy, which formats timestamps as one
sortable text (`UTCDateTime`). WAL lets readers run beside the one writer; busy_timeout
makes writers wait for each other instead of failing at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any, cast

from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.expression import Executable

from server.errors import DATABASE_UNAVAILABLE, Unavailable
from server.store.database import DuplicateKey, Params, Row, Statements


def _pragmas(dbapi_connection: Any, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def async_url(url: str) -> str:
    """The aiosqlite form of a SQLite URL."""
    return make_url(url).set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)


@contextlib.contextmanager
def _errors() -> Any:
    """A unique key's refusal is DuplicateKey; the database failing is Unavailable."""
    try:
        yield
    except sa_exc.IntegrityError as error:
        if "UNIQUE" not in str(error.orig):
            raise
        raise DuplicateKey(str(error.orig)) from error
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as error:
        raise Unavailable(DATABASE_UNAVAILABLE) from error


class _Connection:
    """Statements on one connection, in its transaction."""

    dialect = "sqlite"

    def atomic(self) -> AbstractAsyncContextManager[Statements]:
        return contextlib.nullcontext(self)

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def one(self, statement: Executable, params: Params | None = None) -> Row | None:
        with _errors():
            result = await self._connection.execute(statement, dict(params or {}))
            row = result.first()
        return None if row is None else cast(Row, row._mapping)

    async def all(self, statement: Executable, params: Params | None = None) -> list[Row]:
        with _errors():
            result = await self._connection.execute(statement, dict(params or {}))
            return [cast(Row, row._mapping) for row in result]

    async def run(self, statement: Executable, params: Params | None = None) -> None:
        with _errors():
            await self._connection.execute(statement, dict(params or {}))


class SqliteDatabase:
    """The database port on a SQLite file (or, for tests, one in-memory database)."""

    dialect = "sqlite"

    def __init__(self, engine: AsyncEngine, *, one_connection: bool = False) -> None:
        self._engine = engine
        # An in-memory database is one connection: its transactions take turns, as
        # interleaved on one connection they would commit or roll back each other's work.
        self._turns = asyncio.Lock() if one_connection else None

    @classmethod
    def open(cls, url: str, *, pool_size: int) -> SqliteDatabase:
        """An engine of up to `pool_size` connections; an in-memory database has one."""
        memory = make_url(url).database in (None, "", ":memory:")
        # No reset on return: every transaction ends in a commit, or in the rollback of
        # closing it after an error, so the pool's own rollback would be a third hop to
        # the connection's thread for every statement.
        options: dict[str, Any] = {"hide_parameters": True, "pool_reset_on_return": None}
        if memory:
            options["poolclass"] = StaticPool
        else:
            options["pool_size"] = pool_size
        engine = create_async_engine(
            async_url(url), connect_args={"check_same_thread": False, "timeout": 30}, **options
        )
        event.listen(engine.sync_engine, "connect", _pragmas)
        return cls(engine, one_connection=memory)

    @property
    def engine(self) -> AsyncEngine:
        """The engine, for creating a schema in tests."""
        return self._engine

    async def one(self, statement: Executable, params: Params | None = None) -> Row | None:
        async with self.transaction() as tx:
            return await tx.one(statement, params)

    async def all(self, statement: Executable, params: Params | None = None) -> list[Row]:
        async with self.transaction() as tx:
            return await tx.all(statement, params)

    async def run(self, statement: Executable, params: Params | None = None) -> None:
        async with self.transaction() as tx:
            await tx.run(statement, params)

    def atomic(self) -> AbstractAsyncContextManager[Statements]:
        return self.transaction()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Statements]:
        async with self._turns or contextlib.nullcontext(), self._connection() as connection:
            yield connection

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Statements]:
        with _errors():
            connection = await self._engine.connect()
        try:
            yield _Connection(connection)
            with _errors():
                await connection.commit()
        finally:
            # Closing rolls back whatever was not committed.
            await connection.close()

    async def ping(self) -> None:
        with _errors():
            async with self._engine.connect() as connection:
                await connection.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self._engine.dispose()
