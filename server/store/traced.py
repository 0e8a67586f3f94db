"""The database port with a span per statement, used only while tracing is on.

`server/store/connect.py` wraps the adapter in `TracedDatabase` when `server.tracing` is
on; off, nothing here runs. A statement gets a span only inside a traced operation (a
request, an attempt): the sweeper's and the cancel watch's periodic statements would
otherwise each start a trace of their own.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

from opentelemetry import trace
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.expression import Executable

from server import tracing
from server.store.database import Database, Params, Row, Statements

# The first write of a statement (a PostgreSQL statement may write in a CTE), else its
# first table read.
_WRITE = re.compile(r"\b(INSERT INTO|UPDATE|DELETE FROM)\s+(\w+)")
_READ = re.compile(r"\bFROM\s+(\w+)")


# Statements compile for the database they run on: some constructs have no generic SQL.
_DIALECTS = {
    "postgresql": postgresql.dialect(),  # type: ignore[no-untyped-call]
    "sqlite": sqlite.dialect(),
}


@functools.lru_cache(maxsize=1024)
def span_name(statement: Executable, dialect: str) -> str:
    """What a statement does, as `INSERT jobs` or `SELECT agents` (statements are built once)."""
    try:
        sql = str(statement.compile(dialect=_DIALECTS[dialect]))  # type: ignore[attr-defined]
    except Exception:
        return type(statement).__name__.upper()
    write = _WRITE.search(sql)
    if write is not None:
        return f"{write.group(1).split()[0]} {write.group(2)}"
    read = _READ.search(sql)
    return f"SELECT {read.group(1)}" if read is not None else "SELECT"


@contextlib.contextmanager
def _span(statement: Executable, dialect: str) -> Iterator[None]:
    if not trace.get_current_span().get_span_context().is_valid:
        yield
        return
    with tracing.tracer().start_as_current_span(
        span_name(statement, dialect),
        kind=trace.SpanKind.CLIENT,
        attributes={"db.system.name": dialect},
    ):
        yield


class TracedStatements:
    """Statements whose each run is a span of the current trace."""

    def __init__(self, inner: Statements) -> None:
        self._inner = inner

    @property
    def dialect(self) -> str:
        return self._inner.dialect

    async def one(self, statement: Executable, params: Params | None = None) -> Row | None:
        with _span(statement, self.dialect):
            return await self._inner.one(statement, params)

    async def all(self, statement: Executable, params: Params | None = None) -> list[Row]:
        with _span(statement, self.dialect):
            return await self._inner.all(statement, params)

    async def run(self, statement: Executable, params: Params | None = None) -> None:
        with _span(statement, self.dialect):
            await self._inner.run(statement, params)

    def atomic(self) -> AbstractAsyncContextManager[Statements]:
        return _traced(self._inner.atomic())


@contextlib.asynccontextmanager
async def _traced(block: AbstractAsyncContextManager[Statements]) -> AsyncIterator[Statements]:
    async with block as statements:
        yield TracedStatements(statements)


class TracedDatabase(TracedStatements):
    """A database whose statements, alone or in a transaction, are spans."""

    def __init__(self, inner: Database) -> None:
        super().__init__(inner)
        self._database = inner

    def transaction(self) -> AbstractAsyncContextManager[Statements]:
        return _traced(self._database.transaction())

    async def ping(self) -> None:
        await self._database.ping()

    async def close(self) -> None:
        await self._database.close()

    def __getattr__(self, name: str) -> Any:
        # What an adapter offers beyond the port (tests reach the SQLite engine).
        return getattr(self._database, name)
