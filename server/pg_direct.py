"""PostgreSQL: a prebuilt Core statement's compiled SQL sent straight to psycopg.

For a one-row statement SQLAlchemy's per-call work (compiled-cache lookup, execution
context, bind and result processors, events, result metadata) costs more CPU than
psycopg's own, and a worker runs two such statements per job. So a statement on that
path is compiled once, and each call hands its SQL text and parameters to the driver.

Only parameters that need no bind processing may go this way: strings, numbers, None
and aware datetimes, which psycopg adapts itself. Results come back as psycopg named
tuples, without SQLAlchemy's result processing (fine for strings and numbers).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.expression import Executable

# Where a driver connection's cursor is kept: the pool's `info` of that connection,
# which lives exactly as long as it does.
_CURSOR = "agentq.pg_direct.cursor"


@dataclass(frozen=True)
class _Compiled:
    sql: str
    # The values of the parameters the statement carries itself (the 1 of `attempts + 1`).
    defaults: dict[str, Any]


@functools.cache
def _compiled(statement: Executable, dialect: Dialect) -> _Compiled:
    compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
    return _Compiled(sql=str(compiled), defaults=dict(compiled.params))


def _cursor(info: dict[Any, Any], driver: psycopg.Connection[Any]) -> psycopg.Cursor[Any]:
    """The driver connection's own cursor, made once: making one per call costs more."""
    cursor: psycopg.Cursor[Any] | None = info.get(_CURSOR)
    if cursor is None or cursor.closed or cursor.connection is not driver:
        cursor = info[_CURSOR] = driver.cursor(row_factory=namedtuple_row)
    return cursor


def supported(connection: Connection) -> bool:
    """Whether statements on this connection may take the direct path."""
    return connection.dialect.driver == "psycopg"


def first_row(
    connection: Connection, statement: Executable, params: Mapping[str, Any]
) -> Any | None:
    """Run the statement on the connection's driver connection; its first row, if any."""
    compiled = _compiled(statement, connection.dialect)
    pooled = connection.connection
    dbapi_connection = pooled.dbapi_connection
    try:
        cursor = _cursor(pooled.info, cast(psycopg.Connection[Any], dbapi_connection))
        cursor.execute(compiled.sql, {**compiled.defaults, **params})
        return cursor.fetchone()
    except psycopg.Error as error:
        # Raised as SQLAlchemy would: its exception classes, and a connection that
        # was lost is invalidated so that it is not used again.
        lost = connection.dialect.is_disconnect(cast(Any, error), dbapi_connection, None)
        if lost:
            connection.invalidate(error)
        raise sa_exc.DBAPIError.instance(
            compiled.sql,
            dict(params),
            error,
            psycopg.Error,
            connection_invalidated=lost,
            dialect=connection.dialect,
        ) from error
