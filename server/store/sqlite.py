"""The database port on SQLite: each connection on a thread of its own, few trips to it.

SQLite's driver blocks, so every connection lives on its own thread (a lane) and the
event loop awaits it. A statement, its rows and, for a statement on its own, the commit
go to the lane as one piece of work: one trip between the loop and the thread, where a
driver adapter that awaits each cursor call takes four. In a transaction, a statement
whose rows are not needed (`run`) waits for the next trip, the next statement's or the
commit's, and goes with it: a job's transition, its event and its webhook deliveries
take two trips, not four, and SQLite's one write lock is held that much shorter.
Statements go through SQLAlchemy's synchronous Core, which formats timestamps as one
sortable text (`UTCDateTime`). WAL lets readers run beside the one writer;
busy_timeout makes writers wait for each other instead of failing at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.expression import Executable

from server import metrics
from server.errors import DATABASE_UNAVAILABLE, Unavailable
from server.store.database import DuplicateKey, Params, Row, Statements

T = TypeVar("T")
Work = Callable[[Connection], T]


def _pragmas(dbapi_connection: Any, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """A unique key's refusal is DuplicateKey; the database failing is Unavailable."""
    try:
        yield
    except sa_exc.IntegrityError as error:
        if "UNIQUE" not in str(error.orig):
            raise
        raise DuplicateKey(str(error.orig)) from error
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as error:
        metrics.database_error()
        raise Unavailable(DATABASE_UNAVAILABLE) from error


def _one(statement: Executable, params: Params | None) -> Work[Row | None]:
    def work(connection: Connection) -> Row | None:
        return cast(
            Row | None, connection.execute(statement, dict(params or {})).mappings().first()
        )

    return work


def _all(statement: Executable, params: Params | None) -> Work[list[Row]]:
    def work(connection: Connection) -> list[Row]:
        return cast(list[Row], connection.execute(statement, dict(params or {})).mappings().all())

    return work


def _run(statement: Executable, params: Params | None) -> Work[None]:
    def work(connection: Connection) -> None:
        connection.execute(statement, dict(params or {}))

    return work


def _committed(work: Work[T]) -> Work[T]:
    """`work` and its commit, or its rollback if either fails."""

    def alone(connection: Connection) -> T:
        try:
            done = work(connection)
            connection.commit()
        except BaseException:
            _roll_back(connection)
            raise
        return done

    return alone


def _roll_back(connection: Connection) -> None:
    # The failure being handled is the one to report, not the rollback's.
    with contextlib.suppress(Exception):
        connection.rollback()


def _nothing(connection: Connection) -> None:
    return None


class _Lane:
    """One connection and the thread that runs every call on it, in the order sent."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentq-sqlite")
        self._connection: Connection | None = None

    async def call(self, work: Work[T]) -> T:
        """Run `work` on the connection (opened on first use) and await its result."""
        future = self._thread.submit(self._on_thread, work)
        with _errors():
            return await asyncio.wrap_future(future)

    def _on_thread(self, work: Work[T]) -> T:
        if self._connection is None:
            self._connection = self._engine.connect()
        return work(self._connection)

    async def close(self) -> None:
        """Close the connection on its thread, then let the thread end."""
        with contextlib.suppress(Exception):
            await asyncio.wrap_future(self._thread.submit(self._close_on_thread))
        self._thread.shutdown(wait=False)

    def _close_on_thread(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class _Transaction:
    """Statements on one lane, in its transaction.

    `run` only queues its statement: it is sent, in order, before the next `one` or
    `all` or the commit, in the same trip. A failure of it (a duplicate key) is thus
    raised by that later call, still inside the transaction's block, which rolls it all
    back as before.
    """

    dialect = "sqlite"

    def __init__(self, lane: _Lane) -> None:
        self._lane = lane
        self._waiting: list[Work[None]] = []

    def atomic(self) -> AbstractAsyncContextManager[Statements]:
        return contextlib.nullcontext(self)

    async def one(self, statement: Executable, params: Params | None = None) -> Row | None:
        return await self._lane.call(self.after_waiting(_one(statement, params)))

    async def all(self, statement: Executable, params: Params | None = None) -> list[Row]:
        return await self._lane.call(self.after_waiting(_all(statement, params)))

    async def run(self, statement: Executable, params: Params | None = None) -> None:
        self._waiting.append(_run(statement, params))

    def after_waiting(self, work: Work[T]) -> Work[T]:
        """`work`, preceded by the statements `run` queued since the last trip."""
        waiting, self._waiting = self._waiting, []
        if not waiting:
            return work

        def batch(connection: Connection) -> T:
            for statement in waiting:
                statement(connection)
            return work(connection)

        return batch


class SqliteDatabase:
    """The database port on a SQLite file (or, for tests, one in-memory database)."""

    dialect = "sqlite"

    def __init__(self, engine: Engine, *, lanes: int) -> None:
        self._engine = engine
        # Idle lanes, the last used first: its connection and thread are warm. Each loop
        # that uses the store opens its own (see server/bootstrap.py).
        self._idle: asyncio.LifoQueue[_Lane] = asyncio.LifoQueue()
        self._lanes = [_Lane(engine) for _ in range(lanes)]
        for lane in self._lanes:
            self._idle.put_nowait(lane)

    @classmethod
    def open(cls, url: str, *, pool_size: int) -> SqliteDatabase:
        """Up to `pool_size` connections; an in-memory database has one.

        An in-memory database is its one connection, so its transactions take turns on
        it: interleaved on one connection they would commit or roll back each other's work.
        """
        memory = make_url(url).database in (None, "", ":memory:")
        # Each lane holds its connection for good, so there is nothing for a pool to keep.
        engine = create_engine(
            url, poolclass=NullPool, hide_parameters=True, connect_args={"timeout": 30}
        )
        event.listen(engine, "connect", _pragmas)
        return cls(engine, lanes=1 if memory else pool_size)

    @property
    def engine(self) -> Engine:
        """The engine, for tests that watch its statements."""
        return self._engine

    async def one(self, statement: Executable, params: Params | None = None) -> Row | None:
        return await self._alone(_one(statement, params))

    async def all(self, statement: Executable, params: Params | None = None) -> list[Row]:
        return await self._alone(_all(statement, params))

    async def run(self, statement: Executable, params: Params | None = None) -> None:
        await self._alone(_run(statement, params))

    async def run_sync(self, work: Work[T]) -> T:
        """Run `work` with a connection in one transaction (tests create schemas with it)."""
        return await self._alone(work)

    def atomic(self) -> AbstractAsyncContextManager[Statements]:
        return self.transaction()

    async def _alone(self, work: Work[T]) -> T:
        # Statement and commit in one trip. Should the caller go away meanwhile, the lane
        # goes back at once: whatever is sent to it next runs after the commit.
        lane = await self._idle.get()
        try:
            return await lane.call(_committed(work))
        finally:
            self._idle.put_nowait(lane)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Statements]:
        lane = await self._idle.get()
        try:
            try:
                statements = _Transaction(lane)
                yield statements
                await lane.call(_committed(statements.after_waiting(_nothing)))
            except BaseException:
                # Whatever was left undone (even the commit, if its caller went away), the
                # rollback is sent before the lane goes back, so it runs before the next
                # user's work: no transaction outlives its block.
                with contextlib.suppress(Exception):
                    await asyncio.shield(lane.call(_roll_back))
                raise
        finally:
            self._idle.put_nowait(lane)

    async def ping(self) -> None:
        await self._alone(lambda connection: connection.exec_driver_sql("SELECT 1"))

    async def close(self) -> None:
        for lane in self._lanes:
            await lane.close()
        self._engine.dispose()
