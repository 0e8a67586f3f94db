"""Reports on the service itself."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from importlib import metadata

from server.clock import Clock, utc_now
from server.store.database import Database


@dataclass(frozen=True)
class Health:
    """What the health check reports."""

    version: str
    checked_at: datetime
    db_type: str


def agentq_version() -> str:
    """The installed agentq version."""
    try:
        return metadata.version("agentq")
    except metadata.PackageNotFoundError:  # running from a source tree without install
        return "0+unknown"


class SystemService:
    """Health: the version, and whether the database answers."""

    def __init__(self, db: Database, *, db_type: str, clock: Clock = utc_now) -> None:
        self._db = db
        self._db_type = db_type
        self._clock = clock

    async def health(self) -> Health:
        """Healthy when the database answers; raises Unavailable otherwise."""
        await self._db.ping()
        return Health(version=agentq_version(), checked_at=self._clock(), db_type=self._db_type)
