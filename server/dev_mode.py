"""Development mode's JWT secret: made once, kept beside the SQLite database, reused.

Kept rather than made per run so that tokens minted against it survive a restart, and
in a file only its owner can read rather than printed, so that nobody who reads the
log can mint tokens.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import secrets
import stat
import tempfile

from server.configuration import ConfigurationError
from server.settings import MIN_SECRET_BYTES, Settings
from server.store.migrate import database_url, sqlite_file

SUFFIX = ".dev-secret"


def secret_file(url: str) -> pathlib.Path:
    """Where development mode keeps the secret for the database at `url`."""
    database = sqlite_file(database_url(url))
    if database is None:
        raise ConfigurationError(
            "development mode keeps its JWT secret beside a SQLite database file; "
            "with this AGENTQ_DATABASE_URL, set VEX_JWT_SECRET instead"
        )
    return database.with_name(database.name + SUFFIX)


def dev_secret(url: str) -> str:
    """The development secret for the database at `url`, made on first use."""
    path = secret_file(url)
    if not path.exists():
        _create(path)
    return _read(path)


def _create(path: pathlib.Path) -> None:
    # Written whole under a temporary name (mkstemp makes it 0600) and then linked into
    # place, which fails if the name exists: two servers starting at once agree on one.
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(48) + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)


def _read(path: pathlib.Path) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigurationError(
            f"{path} holds the development JWT secret but other users may read it "
            f"(mode {mode:04o}); run: chmod 600 {path}"
        )
    secret = path.read_text(encoding="utf-8").strip()
    if len(secret.encode("utf-8")) < MIN_SECRET_BYTES:
        raise ConfigurationError(
            f"{path} does not hold a development JWT secret; delete it to make a new one"
        )
    return secret


def shared_secret(settings: Settings) -> str:
    """VEX_JWT_SECRET, else in development mode the kept secret, else ""."""
    if settings.jwt_secret is not None and settings.jwt_secret.get_secret_value():
        return settings.jwt_secret.get_secret_value()
    if settings.dev_mode:
        return dev_secret(settings.database_url)
    return ""
