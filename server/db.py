"""Database engine construction and schema migration."""

from __future__ import annotations

import logging
import pathlib

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from server.errors import DATABASE_UNAVAILABLE, Unavailable

log = logging.getLogger(__name__)

MIGRATIONS = pathlib.Path(__file__).parent / "migrations"
# Any fixed number works; it only has to be the same for every agentq process.
_MIGRATION_LOCK_ID = 0x61676E71


def normalize_url(url: str) -> str:
    """Map the plain PostgreSQL URL forms onto the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def create_db_engine(url: str, *, pool_size: int = 10) -> Engine:
    """An engine for SQLite (file, WAL) or PostgreSQL, set up for many threads."""
    url = normalize_url(url)
    if make_url(url).get_backend_name() == "sqlite":
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


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose rows stay readable after commit (they leave the unit of work)."""
    return sessionmaker(engine, expire_on_commit=False)


def ping(engine: Engine) -> None:
    """Raise Unavailable unless the database answers a trivial query."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as error:
        raise Unavailable(DATABASE_UNAVAILABLE) from error


def raise_if_connection_lost(error: BaseException | None) -> None:
    """Unavailable for a dropped or refused connection, which a client may retry later."""
    if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError):
        raise Unavailable(DATABASE_UNAVAILABLE) from error


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; safe when many servers start at once."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            # Serialises concurrent starts; released when this transaction ends.
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID}
            )
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    log.info("database schema is up to date")
