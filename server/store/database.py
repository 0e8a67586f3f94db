"""The port to the database: SQLAlchemy Core statements, run alone or in a transaction.

Every statement of agentq is a Core statement defined once (`server/store/`), with named
parameters. Two adapters run them: asyncpg on PostgreSQL (`postgres.py`) and
SQLAlchemy's Core on SQLite, each connection on a thread of its own (`sqlite.py`). A row
comes back as a mapping of column name to value, with timestamps as aware UTC datetimes
on both.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from sqlalchemy.sql.expression import Executable

Row = Mapping[str, Any]
Params = Mapping[str, Any]


class DuplicateKey(Exception):
    """A unique key refused a row: a concurrent twin committed it first."""


class Statements(Protocol):
    """Runs statements: each in its own transaction, or all in the caller's."""

    @property
    def dialect(self) -> str:
        """The SQLAlchemy dialect name: "postgresql" or "sqlite"."""
        ...

    async def one(self, statement: Executable, params: Params | None = None) -> Row | None:
        """The first row the statement returns, or None."""
        ...

    async def all(self, statement: Executable, params: Params | None = None) -> list[Row]:
        """Every row the statement returns."""
        ...

    async def run(self, statement: Executable, params: Params | None = None) -> None:
        """Run a statement whose rows, if any, are not needed."""
        ...

    def atomic(self) -> AbstractAsyncContextManager[Statements]:
        """Statements that must take effect together: a transaction, unless already in one."""
        ...


class Database(Statements, Protocol):
    """A pool of connections to one database."""

    def transaction(self) -> AbstractAsyncContextManager[Statements]:
        """Statements in one transaction: committed when the block ends, else rolled back."""
        ...

    async def ping(self) -> None:
        """Raise Unavailable unless the database answers."""
        ...

    async def close(self) -> None:
        """Close every connection."""
        ...
