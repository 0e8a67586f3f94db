"""The worker's synchronous unit of work: job transitions on one bare connection, no session.

Used where the engine's database work runs on threads (SQLite). A session's bookkeeping
(identity map, flush) is not needed for a few single-row transitions.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self

from sqlalchemy import Engine

from server.db import raise_if_connection_lost
from server.transitions import JobTransitions


class UnitOfWork(Protocol):
    """What a worker needs: the job transitions and one commit."""

    @property
    def jobs(self) -> JobTransitions: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def commit(self) -> None: ...


class ConnectionUnitOfWork:
    """A connection for the span of a `with` block, with the job transitions on it.

    A transition may take two statements on SQLite (it has no data-modifying CTEs), so
    they run in a transaction that `commit()` ends; leaving the block without it rolls
    them back.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def __enter__(self) -> Self:
        self._connection = self._engine.connect()
        self._jobs = JobTransitions(self._connection)
        return self

    @property
    def jobs(self) -> JobTransitions:
        """The job transitions, on this unit of work's connection."""
        return self._jobs

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._connection.close()  # rolls back what was not committed
        raise_if_connection_lost(exc)

    def commit(self) -> None:
        """Make the transitions of this unit of work durable."""
        self._connection.commit()
