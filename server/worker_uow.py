"""The worker's unit of work: job transitions on a bare connection (kept per thread), no session."""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Protocol, Self

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from server.db import raise_if_connection_lost
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
    """A connection for the span of a `with` block, with the job transitions on it.

    A worker runs a few single-row transitions per job, and a session's bookkeeping
    (identity map, transaction objects, flush) would cost more than the statements.

    On PostgreSQL the connection is in autocommit: every transition is one statement,
    atomic on its own, so it needs no BEGIN or COMMIT round trip and `commit()` has
    nothing left to do. On SQLite a transition may take two statements (it has no
    data-modifying CTEs), so they run in a transaction that `commit()` ends, and leaving
    the block without it rolls them back.
    """

    def __init__(self, units: WorkerUnits) -> None:
        self._units = units

    def __enter__(self) -> Self:
        self._connection = self._units.take()
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
        # After any exception (a database error, or one raised into the thread mid-call,
        # as Dramatiq's time limit does) the connection's state is unknown: it goes back
        # to the pool, whose reset on return finds out, instead of being kept.
        healthy = exc is None
        try:
            if self._connection.in_transaction():
                self._connection.rollback()
        except sa_exc.DBAPIError:
            healthy = False
        self._units.give_back(self._connection, healthy=healthy)
        raise_if_connection_lost(exc)

    def commit(self) -> None:
        """Make the transitions of this unit of work durable."""
        self._connection.commit()


# How long a worker thread's connection may sit unused and still be used again
# without a checkout. After a longer pause it goes back to the pool, and the next
# unit of work checks one out afresh, pinged: an idle connection may have been dropped.
KEEP_IDLE_S = 5.0


class WorkerUnits:
    """Makes the worker's units of work; call it for a new one, close it at shutdown.

    On PostgreSQL each thread keeps its connection from one unit of work to the next:
    a checkout costs the pool's pre-ping round trip and the switch to autocommit and
    back, together more than a transition. On SQLite, where a checkout is cheap, each
    unit of work checks one out and returns it.
    """

    def __init__(self, engine: Engine) -> None:
        self._keep = engine.dialect.name == "postgresql"
        if self._keep:
            # The same pool; each checkout is switched to autocommit and back on return.
            engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._engine = engine
        self._local = threading.local()
        # Every connection a thread keeps, so that close() can return them all.
        self._kept: set[Connection] = set()
        self._lock = threading.Lock()

    def __call__(self) -> ConnectionUnitOfWork:
        return ConnectionUnitOfWork(self)

    def take(self) -> Connection:
        """This thread's kept connection if it is fresh, else one from the pool."""
        kept: Connection | None = getattr(self._local, "connection", None)
        if kept is not None:
            self._local.connection = None
            if time.monotonic() - self._local.used_at < KEEP_IDLE_S and not kept.invalidated:
                return kept
            self._release(kept)
        connection = self._engine.connect()
        if self._keep:
            with self._lock:
                self._kept.add(connection)
        return connection

    def give_back(self, connection: Connection, *, healthy: bool) -> None:
        """Keep a connection for this thread's next unit of work, or return it."""
        reuse = self._keep and healthy and not connection.invalidated
        if not reuse or getattr(self._local, "connection", None) is not None:
            self._release(connection)
            return
        self._local.connection = connection
        self._local.used_at = time.monotonic()

    def _release(self, connection: Connection) -> None:
        with self._lock:
            self._kept.discard(connection)
        connection.close()

    def close(self) -> None:
        """Return every kept connection to the pool; call it once the workers stopped."""
        with self._lock:
            kept, self._kept = list(self._kept), set()
        for connection in kept:
            connection.close()
