"""The benchmark's own look into agentq's database: fresh databases, counts, bulk rows.

The harness reads the jobs table to verify runs (jobs created = calls answered) and to
time end-to-end work from each job's queued_at and completed_at. To store many jobs it
clones one real, completed job row with plain SQL, giving each copy a new random id;
every other column is copied as is, so the clones follow whatever schema
`agentq migrate` made.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

OPEN_STATUSES = ("pending", "running")
FINISHED_STATUSES = ("completed", "failed", "cancelled")


class Database(ABC):
    """One throwaway agentq database."""

    kind: str

    @property
    @abstractmethod
    def url(self) -> str:
        """The AGENTQ_DATABASE_URL of this database."""

    @abstractmethod
    def create(self) -> None:
        """Make the empty database."""

    @abstractmethod
    def drop(self) -> None:
        """Remove the database and everything in it."""

    @abstractmethod
    def rows(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read query (`?` placeholders) and return its rows."""

    @abstractmethod
    def clone_jobs(self, template_id: str, count: int) -> None:
        """Insert `count` copies of one job row, each with a new random id."""

    def count_jobs(self, *, agent_id: str | None = None, statuses: Sequence[str] = ()) -> int:
        """Jobs of one agent (or all), optionally only those in some statuses."""
        query, params = "SELECT count(*) FROM jobs WHERE 1 = 1", []
        if agent_id is not None:
            query += " AND agent_id = ?"
            params.append(agent_id)
        if statuses:
            query += f" AND status IN ({', '.join('?' for _ in statuses)})"
            params += list(statuses)
        return int(self.rows(query, params)[0][0])

    def job_times(self, agent_id: str) -> list[tuple[str, datetime, datetime | None]]:
        """(status, queued_at, completed_at) of every job of one agent, in UTC."""
        found = self.rows(
            "SELECT status, queued_at, completed_at FROM jobs WHERE agent_id = ?", [agent_id]
        )
        return [
            (status, _utc(queued), _utc(done) if done else None) for status, queued, done in found
        ]

    def job_lifetimes(
        self, agent_id: str
    ) -> list[tuple[str, datetime, datetime | None, datetime | None]]:
        """(status, queued_at, started_at, completed_at) of every job of one agent, in UTC."""
        found = self.rows(
            "SELECT status, queued_at, started_at, completed_at FROM jobs WHERE agent_id = ?",
            [agent_id],
        )
        return [
            (status, _utc(queued), _utc(began) if began else None, _utc(done) if done else None)
            for status, queued, began, done in found
        ]

    def sample_job_ids(self, count: int) -> list[str]:
        """Up to `count` job ids picked at random."""
        return [
            row[0] for row in self.rows("SELECT id FROM jobs ORDER BY random() LIMIT ?", [count])
        ]

    def wait_until(
        self, predicate_count: str, params: Sequence[Any], *, target: int, timeout_s: float
    ) -> float:
        """Poll a count query until it equals `target`; return the seconds it took."""
        began = time.monotonic()
        while int(self.rows(predicate_count, params)[0][0]) != target:
            if time.monotonic() - began > timeout_s:
                raise TimeoutError(
                    f"{predicate_count} {list(params)} not {target} in {timeout_s:g}s"
                )
            time.sleep(0.05)
        return time.monotonic() - began

    def wait_drained(self, *, timeout_s: float) -> float:
        """Wait until no job is pending or running; return the seconds it took."""
        query = "SELECT count(*) FROM jobs WHERE status IN (?, ?)"
        return self.wait_until(query, OPEN_STATUSES, target=0, timeout_s=timeout_s)

    def wait_finished(self, agent_id: str, count: int, *, timeout_s: float) -> float:
        """Wait until `count` jobs of the agent have finished; return the seconds it took."""
        query = "SELECT count(*) FROM jobs WHERE agent_id = ? AND status IN (?, ?, ?)"
        return self.wait_until(
            query, [agent_id, *FINISHED_STATUSES], target=count, timeout_s=timeout_s
        )


def _utc(value: datetime | str) -> datetime:
    # PostgreSQL hands back aware datetimes; SQLite the naive UTC text SQLAlchemy wrote.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class SqliteDatabase(Database):
    """A SQLite file in the run's scratch directory."""

    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    def create(self) -> None:
        self.drop()

    def drop(self) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            yield connection
        finally:
            connection.close()

    def rows(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._connect() as connection:
            return connection.execute(query, list(params)).fetchall()

    def clone_jobs(self, template_id: str, count: int) -> None:
        with self._connect() as connection:
            columns = [row[1] for row in connection.execute("PRAGMA table_info(jobs)")]
            others = [c for c in columns if c != "id"]
            hex_ = "lower(hex(randomblob({})))"
            new_id = " || '-' || ".join(hex_.format(n) for n in (4, 2, 2, 2, 6))
            # New ids in order, so the primary key index grows at its end, not everywhere.
            insert = (
                "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < ?), "
                f"ids(new_id) AS (SELECT {new_id} FROM seq ORDER BY 1) "
                f"INSERT INTO jobs (id, {_names(others)}) "
                f"SELECT new_id, {_names(others, 't.')} FROM ids, jobs AS t WHERE t.id = ?"
            )
            # Bulk loading a throwaway file while no server runs: one transaction, a big
            # cache, a rollback journal rather than the WAL, and no waiting for the disk;
            # then the WAL mode agentq set is restored.
            connection.execute("PRAGMA cache_size = -1000000")
            connection.execute("PRAGMA synchronous = OFF")
            connection.execute("PRAGMA journal_mode = DELETE")
            connection.execute("BEGIN")
            connection.execute(insert, [count, template_id])
            connection.execute("COMMIT")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("ANALYZE")


class PostgresDatabase(Database):
    """A database made for this run on a PostgreSQL server, dropped at the end."""

    kind = "postgres"

    def __init__(self, admin_url: str, name: str) -> None:
        # libpq takes the URL without SQLAlchemy's "+driver" part; agentq takes both.
        self._admin_url = admin_url.replace("postgresql+psycopg://", "postgresql://")
        self.name = name

    @property
    def url(self) -> str:
        return _with_database(self._admin_url, self.name)

    def create(self) -> None:
        with psycopg.connect(self._admin_url, autocommit=True, connect_timeout=5) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))

    def drop(self) -> None:
        with psycopg.connect(self._admin_url, autocommit=True, connect_timeout=5) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name))
            )

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=5)

    def rows(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._connect() as connection:
            return connection.execute(query.replace("?", "%s"), list(params)).fetchall()

    def clone_jobs(self, template_id: str, count: int) -> None:
        with self._connect() as connection:
            columns = [
                row[0]
                for row in connection.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name = 'jobs' "
                    "ORDER BY ordinal_position"
                )
            ]
            others = [c for c in columns if c != "id"]
            # New ids in order, so the primary key index grows at its end, not everywhere.
            insert = (
                f"INSERT INTO jobs (id, {_names(others)}) "
                f"SELECT ids.new_id, {_names(others, 't.')} FROM jobs AS t, "
                "(SELECT gen_random_uuid()::text AS new_id FROM generate_series(1, %s) "
                "ORDER BY 1) AS ids WHERE t.id = %s"
            )
            # Bulk loading only: a crash would lose a throwaway database anyway.
            connection.execute("SET synchronous_commit = off")
            connection.execute("SET work_mem = '256MB'")
            connection.execute(insert, [count, template_id])
            # What autovacuum would have done by the time a real table held these rows.
            connection.execute("VACUUM (ANALYZE) jobs")


def _names(columns: Sequence[str], prefix: str = "") -> str:
    return ", ".join(f'{prefix}"{column}"' for column in columns)


def _with_database(url: str, name: str) -> str:
    head, _, tail = url.rpartition("/")
    query = tail.partition("?")[2]
    return f"{head}/{name}" + (f"?{query}" if query else "")


def unique_name(prefix: str) -> str:
    """A name no other run uses: prefix and 12 random hex digits."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"
