"""The database port on PostgreSQL: Core statements compiled once, run on asyncpg.

Each statement is compiled for asyncpg's numbered parameters the first time it runs and
kept; asyncpg then prepares and caches it on every connection. Statements run outside a
transaction are autocommitted by the server, one round trip each.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import asyncpg
from sqlalchemy import Select, literal_column, select
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import Executable

from server import metrics
from server.errors import DATABASE_UNAVAILABLE, Unavailable
from server.store.database import DuplicateKey, Params, Row, Statements
from server.store.pg_pool import Connection, ConnectionPool, still_usable

# A health check: one trip to the server, as every statement makes it.
_PING: Select[Any] = select(literal_column("1"))

_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]

# What a connection lost mid-call raises (class 08, or 57 as when an operator ends the
# backend; asyncpg may also notice the loss only as a protocol state error).
_LOST = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
# What a statement may fail with that the port reports as its own errors.
_FAILURES = (asyncpg.UniqueViolationError, *_LOST)
# What stops a connection being had at all: refused, closed to connections, full.
_NO_CONNECTION = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


@dataclass(frozen=True)
class _Compiled:
    compiled: SQLCompiler
    sql: str
    # Parameter names in the order of $1, $2, ...
    names: tuple[str, ...]
    # Values the statement carries itself (the 1 of `attempts + 1`).
    defaults: dict[str, Any]
    # An IN list of a length only known per call.
    expanding: bool


@functools.lru_cache(maxsize=1024)
def _compile(statement: Executable) -> _Compiled:
    compiled = cast(SQLCompiler, statement.compile(dialect=_DIALECT))  # type: ignore[attr-defined]
    return _Compiled(
        compiled,
        str(compiled),
        tuple(compiled.positiontup or ()),
        dict(compiled.params),
        bool(compiled.post_compile_params),
    )


def _plain(value: Any) -> Any:
    # asyncpg encodes by the exact type; a status enum goes as its string.
    return value.value if isinstance(value, enum.Enum) else value


def _bind(statement: Executable, params: Params | None) -> tuple[str, list[Any]]:
    """The SQL and positional arguments of a statement with these parameters."""
    compiled = _compile(statement)
    values = params or {}
    if compiled.defaults:
        values = {**compiled.defaults, **values}
    if compiled.expanding:
        state = compiled.compiled.construct_expanded_state(values, escape_names=False)
        return state.statement, [_plain(v) for v in state.positional_parameters or ()]
    return compiled.sql, [_plain(values[name]) for name in compiled.names]


def asyncpg_dsn(database_url: str) -> str:
    """The URL asyncpg takes for a SQLAlchemy PostgreSQL URL of any driver."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class _Connection:
    """Statements on one acquired connection (inside a transaction)."""

    dialect = "postgresql"

    def atomic(self) -> AbstractAsyncContextManager[Statements]:
        return contextlib.nullcontext(self)

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    async def one(self, statement: Executable, params: Params | None = None) -> Row | None:
        return cast(Row | None, await _run(self._connection, "fetchrow", statement, params))

    async def all(self, statement: Executable, params: Params | None = None) -> list[Row]:
        return cast(list[Row], await _run(self._connection, "fetch", statement, params))

    async def run(self, statement: Executable, params: Params | None = None) -> None:
        await _run(self._connection, "execute", statement, params)


async def _run(
    connection: Connection, method: str, statement: Executable, params: Params | None
) -> Any:
    """Run a statement with the connection's `method` (fetchrow, fetch or execute)."""
    sql, args = _bind(statement, params)
    try:
        return await getattr(connection, method)(sql, *args)
    except _FAILURES as error:
        raise _translated(error) from error


def _usable_after(connection: Connection, error: BaseException | None) -> bool:
    """Whether a connection may serve again after a statement that ended with `error`."""
    if isinstance(error, DuplicateKey):  # the server refused a duplicate: the session is fine
        error = None
    return still_usable(connection, error)


def _translated(error: BaseException) -> Exception:
    """A unique key's refusal is DuplicateKey; a lost connection is Unavailable."""
    if isinstance(error, asyncpg.UniqueViolationError):
        return DuplicateKey(str(error))
    return _unavailable()


def _unavailable() -> Unavailable:
    """The database did not answer: counted in the metrics, and told as unavailable."""
    metrics.database_error()
    return Unavailable(DATABASE_UNAVAILABLE)


class PostgresDatabase:
    """The database port on a pool of asyncpg connections (`pg_pool.py`)."""

    dialect = "postgresql"

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, database_url: str, *, pool_size: int) -> PostgresDatabase:
        """A pool of up to `pool_size` connections, one opened now."""
        try:
            pool = await ConnectionPool.open(
                asyncpg_dsn(database_url), size=pool_size, command_timeout_s=30
            )
        except _NO_CONNECTION as error:
            raise _unavailable() from error
        return cls(pool)

    async def _acquire(self) -> Connection:
        try:
            return await self._pool.acquire()
        except _NO_CONNECTION as error:
            raise _unavailable() from error

    async def _alone(self, method: str, statement: Executable, params: Params | None) -> Any:
        connection = await self._acquire()
        error: BaseException | None = None
        try:
            return await _run(connection, method, statement, params)
        except BaseException as failed:
            error = failed
            raise
        finally:
            self._pool.release(connection, usable=_usable_after(connection, error))

    # A statement on its own is shielded: cancelled mid-statement (its caller went away),
    # it would cost the pool its connection; shielded, it ends and the connection goes back.

    async def one(self, statement: Executable, params: Params | None = None) -> Row | None:
        return cast(Row | None, await asyncio.shield(self._alone("fetchrow", statement, params)))

    async def all(self, statement: Executable, params: Params | None = None) -> list[Row]:
        return cast(list[Row], await asyncio.shield(self._alone("fetch", statement, params)))

    async def run(self, statement: Executable, params: Params | None = None) -> None:
        await asyncio.shield(self._alone("execute", statement, params))

    def atomic(self) -> AbstractAsyncContextManager[Statements]:
        return self.transaction()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Statements]:
        connection = await self._acquire()
        # Usable again once the transaction ended cleanly, committed or rolled back.
        ended = False
        try:
            transaction = connection.transaction()
            try:
                await transaction.start()
            except _FAILURES as error:
                raise _translated(error) from error
            try:
                yield _Connection(connection)
            except BaseException:
                # The statement's own error is the one to report, not the rollback's.
                with contextlib.suppress(Exception):
                    await transaction.rollback()
                    ended = True
                raise
            try:
                await transaction.commit()
            except _FAILURES as error:
                raise _translated(error) from error
            ended = True
        finally:
            self._pool.release(connection, usable=ended and still_usable(connection, None))

    async def ping(self) -> None:
        await self.one(_PING)

    async def close(self, *, timeout_s: float = 10.0) -> None:
        """Close every connection once released; after `timeout_s`, drop them."""
        await self._pool.close(timeout_s=timeout_s)
