"""The worker's unit of work: job transitions on one pooled connection, without an ORM session."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Protocol, Self

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from server.errors import Unavailable
from server.transitions import JobTransitions


class WorkerUnitOfWork(Protocol):
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
    """A pooled connection for the span of a `with` block, with the job transitions on it.

    A worker runs a few single-row transitions per job, and a session's bookkeeping
    (identity map, transaction objects, flush) would cost more than the statements.

    On PostgreSQL the connection is in autocommit: every transition is one statement,
    atomic on its own, so it needs no BEGIN or COMMIT round trip and `commit()` has
    nothing left to do. On SQLite a transition may take two statements (it has no
    data-modifying CTEs), so they run in a transaction that `commit()` ends, and leaving
    the block without it rolls them back.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def __enter__(self) -> Self:
        self._connection: Connection = self._engine.connect()
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
        self._connection.close()
        if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
            # A dropped or refused connection: the broker's caller may retry later.
            raise Unavailable("Database unavailable") from exc

    def commit(self) -> None:
        """Make the transitions of this unit of work durable."""
        self._connection.commit()


def worker_units(engine: Engine) -> Callable[[], ConnectionUnitOfWork]:
    """A factory of worker units of work on `engine` (autocommit on PostgreSQL)."""
    if engine.dialect.name == "postgresql":
        # The same pool; each checkout is switched to autocommit and back on return.
        engine = engine.execution_options(isolation_level="AUTOCOMMIT")
    return lambda: ConnectionUnitOfWork(engine)
