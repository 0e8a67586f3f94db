"""Database engine construction and schema migration."""

from __future__ import annotations

import logging
import pathlib

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url

from server.configuration import ConfigurationError

log = logging.getLogger(__name__)

MIGRATIONS = pathlib.Path(__file__).parent / "migrations"
# Any fixed number works; it only has to be the same for every agentq process.
_MIGRATION_LOCK_ID = 0x61676E71
# The drivers agentq ships, after normalize_url.
_SUPPORTED_DRIVERS = ("sqlite", "sqlite+pysqlite", "postgresql+psycopg")
_SUPPORTED_FORMS = "sqlite:///PATH or postgresql://USER@HOST:PORT/NAME"


def normalize_url(url: str) -> str:
    """Map the plain PostgreSQL URL forms onto the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def database_url(url: str) -> URL:
    """AGENTQ_DATABASE_URL parsed, or ConfigurationError saying what is wrong with it.

    Checked before anything connects, so an operator's typo is one line, not a
    driver's traceback.
    """
    try:
        parsed = make_url(normalize_url(url))
    except sa_exc.ArgumentError:
        # Not echoed: a URL that does not parse may still hold a password.
        raise ConfigurationError(
            f"AGENTQ_DATABASE_URL is not a database URL; use {_SUPPORTED_FORMS}"
        ) from None
    if parsed.drivername not in _SUPPORTED_DRIVERS:
        raise ConfigurationError(
            f"AGENTQ_DATABASE_URL uses {parsed.drivername}, which agentq does not support; "
            f"use {_SUPPORTED_FORMS}"
        )
    database = sqlite_file(parsed)
    if database is not None and not database.parent.is_dir():
        raise ConfigurationError(
            f"cannot open the SQLite database {database}: "
            f"the directory {database.parent} does not exist"
        )
    return parsed


def sqlite_file(url: URL) -> pathlib.Path | None:
    """The file of a SQLite URL; None for PostgreSQL or an in-memory database."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return pathlib.Path(url.database)


def create_db_engine(url: str, *, pool_size: int = 10) -> Engine:
    """An engine for SQLite (file, WAL) or PostgreSQL, set up for many threads.

    Raises ConfigurationError for a URL agentq cannot use (see database_url).
    """
    backend = database_url(url).get_backend_name()
    url = normalize_url(url)
    if backend == "sqlite":
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            hide_parameters=True,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        # A failed statement's error would otherwise carry its parameters (prompts,
        # key digests) into every log line that prints it.
        hide_parameters=True,
    )


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    # WAL lets readers run beside the one writer; busy_timeout makes writers
    # wait for each other instead of failing at once.
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; safe when many servers start at once.

    Raises ConfigurationError when the database cannot be reached at all: it is
    the first thing a process connects to, so that is where an operator learns it.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        connection = engine.connect()
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as error:
        shown = engine.url.set(drivername=engine.url.get_backend_name())
        raise ConfigurationError(
            f"cannot connect to the database at {shown.render_as_string(hide_password=True)}: "
            f"{_driver_reason(error)}"
        ) from None
    with connection, connection.begin():
        if engine.dialect.name == "postgresql":
            # Serialises concurrent starts; released when this transaction ends.
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID}
            )
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    log.info("database schema is up to date")


def _driver_reason(error: sa_exc.DBAPIError) -> str:
    """The driver's own reason, without its preamble: `database "x" does not exist`."""
    first_line = (str(error.orig).strip() or type(error.orig).__name__).splitlines()[0]
    # psycopg says 'connection failed: connection to server at "h", port p failed: FATAL:  ...'
    reason = first_line.rpartition("failed: ")[2].removeprefix("FATAL:").strip()
    return reason or first_line
