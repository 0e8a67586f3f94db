"""The two configurations agentq is measured in, and their throwaway resources.

- embedded: a fresh SQLite file, the in-process queue and workers (`agentq serve` only);
- postgres: a fresh PostgreSQL database, Redis under a namespace of this run, and
  separate `agentq worker` processes.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from bench.config import BenchConfig
from bench.db import Database, PostgresDatabase, SqliteDatabase, unique_name
from bench.measure_baselines import delete_namespace
from bench.stack import agentq_env

# A pending job is re-sent after this long without a worker. The benchmark's API runs
# queue jobs faster than they are worked off (in the PostgreSQL config no worker runs
# during them at all), and the default 60 s would have the sweeper re-send thousands of
# merely-waiting jobs in the middle of later runs: work a real deployment with workers
# keeping up never does.
REQUEUE_AFTER_S = "3600"


@dataclass
class Deployment:
    """Settings shared by every agentq process of one configuration, and cleanup."""

    kind: str
    config: BenchConfig
    scratch: Path
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    namespace: str = field(default_factory=lambda: unique_name("agentq-bench"))
    _databases: list[Database] = field(default_factory=list)

    @property
    def separate_workers(self) -> bool:
        """True when jobs run in `agentq worker` processes rather than in the server."""
        return self.kind == "postgres"

    def new_database(self, role: str) -> Database:
        """A fresh, empty database of this configuration's kind."""
        database: Database
        if self.kind == "postgres":
            database = PostgresDatabase(
                self.config.postgres_url, unique_name(f"agentq_bench_{role}")
            )
        else:
            database = SqliteDatabase(self.scratch / f"{unique_name(role)}.db")
        database.create()
        self._databases.append(database)
        return database

    def env(self, database: Database) -> dict[str, str]:
        """The environment of an agentq process on `database`."""
        settings = {
            "VEX_JWT_SECRET": self.secret,
            "AGENTQ_DATABASE_URL": database.url,
            "AGENTQ_GRPC_ADDR": "127.0.0.1:0",
            "AGENTQ_HTTP_ADDR": "127.0.0.1:0",
            "AGENTQ_BUILTIN_LATENCY_MS": "0",
            "AGENTQ_REQUEUE_AFTER_S": REQUEUE_AFTER_S,
            "AGENTQ_WORKER_CONCURRENCY": str(self.config.worker_concurrency),
            # The benchmark measures capacity, so its tenant gets the tier without a
            # limit (the limiter still runs); the default tier would refuse most calls.
            "AGENTQ_DEFAULT_TIER": "unlimited",
            # Measured as deployed, with metrics on: each process on a free port of its own.
            "AGENTQ_METRICS_ADDR": "127.0.0.1:0" if self.config.metrics else "",
        }
        if self.config.tracing_endpoint:
            settings["OTEL_EXPORTER_OTLP_ENDPOINT"] = self.config.tracing_endpoint
        if self.kind == "postgres":
            settings["AGENTQ_REDIS_URL"] = self.config.redis_url
            settings["AGENTQ_REDIS_NAMESPACE"] = self.namespace
        return agentq_env(settings)

    def cleanup(self) -> None:
        """Drop every database made and the Redis keys of this run's namespace."""
        for database in self._databases:
            database.drop()
        self._databases.clear()
        if self.kind == "postgres":
            delete_namespace(self.config.redis_url, self.namespace)
