"""The composition root: builds engine, broker, services and workers from settings."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass, field

import dramatiq
from sqlalchemy import Engine

from server.access import AccessService
from server.cancel_watch import CancelWatch
from server.db import create_db_engine, migrate, ping, session_factory
from server.providers.base import Provider
from server.providers.factory import build_provider
from server.queue import DramatiqJobQueue, build_broker, declare_job_actor
from server.recovery import Recovery, RecoveryThread
from server.runner import JobRunner, RetryPolicy
from server.services import AgentService, JobService, Services, SystemService
from server.settings import MIN_SECRET_BYTES, Settings
from server.unit_of_work import SqlUnitOfWork, UnitOfWork
from server.worker_uow import WorkerUnits

log = logging.getLogger(__name__)


class ConfigurationError(Exception):
    """The settings cannot run a server; the message says what to change."""


def jwt_secret(settings: Settings) -> str:
    """The signing secret, or a fresh one in development mode; refuses anything weak."""
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else ""
    if len(secret.encode("utf-8")) >= MIN_SECRET_BYTES:
        return secret
    if settings.dev_mode:
        return secrets.token_urlsafe(48)
    if secret:
        raise ConfigurationError(
            f"VEX_JWT_SECRET is too short: it needs at least {MIN_SECRET_BYTES} bytes"
        )
    raise ConfigurationError(
        "VEX_JWT_SECRET is not set. Set it to a random string of at least "
        f"{MIN_SECRET_BYTES} bytes, or start with --dev to generate one for this run."
    )


def retry_policy(settings: Settings) -> RetryPolicy:
    """The retry and time-limit knobs of the settings."""
    return RetryPolicy(
        max_attempts=settings.max_attempts,
        backoff_s=settings.retry_backoff_s,
        backoff_max_s=settings.retry_backoff_max_s,
        time_limit_s=settings.job_time_limit_s,
        lease_grace_s=settings.lease_grace_s,
    )


@dataclass
class Runtime:
    """Everything a serving or working process holds, and how to stop it."""

    settings: Settings
    engine: Engine
    broker: dramatiq.Broker
    queue: DramatiqJobQueue
    services: Services
    runner: JobRunner
    recovery: Recovery
    access: AccessService
    worker_units: WorkerUnits
    _threads: list[RecoveryThread] = field(default_factory=list)
    _workers: list[dramatiq.Worker] = field(default_factory=list)

    def start_workers(self, threads: int) -> None:
        """Run queue workers in this process."""
        worker = dramatiq.Worker(self.broker, worker_threads=threads, worker_timeout=100)
        worker.start()
        self._workers.append(worker)

    def start_recovery(self) -> None:
        """Sweep for lost jobs in the background."""
        thread = RecoveryThread(self.recovery, interval_s=self.settings.recovery_interval_s)
        thread.start()
        self._threads.append(thread)

    def close(self) -> None:
        """Stop workers (letting running attempts finish) and sweeps, then the pools."""
        for worker in self._workers:
            worker.stop()
        for thread in self._threads:
            thread.stop()
        self.runner.cancel_watch.stop()
        self.worker_units.close()
        self.broker.close()
        self.engine.dispose()


def build_runtime(settings: Settings, *, provider: Provider | None = None) -> Runtime:
    """Connect to the database (migrating it) and the broker, and wire the services."""
    engine = create_db_engine(settings.database_url, pool_size=settings.server_threads)
    migrate(engine)
    sessions = session_factory(engine)

    def uow() -> UnitOfWork:
        return SqlUnitOfWork(sessions)

    broker = build_broker(settings)
    policy = retry_policy(settings)
    queue = DramatiqJobQueue(broker)
    # Workers run their transitions on bare connections: a session per step
    # would cost more CPU than the SQL itself.
    attempts = WorkerUnits(engine)
    watch = CancelWatch(attempts, interval_s=settings.cancel_poll_s)
    runner = JobRunner(
        attempts, provider or build_provider(settings), queue, policy, cancel_watch=watch
    )
    declare_job_actor(broker, runner.run, time_limit_s=policy.lease_s)
    services = Services(
        agents=AgentService(uow),
        jobs=JobService(
            uow,
            queue,
            retention_s=settings.retention_s,
            max_unfinished_jobs=settings.max_unfinished_jobs,
        ),
        system=SystemService(lambda: ping(engine), db_type=settings.db_type),
    )
    recovery = Recovery(
        uow,
        queue,
        policy,
        requeue_after_s=settings.requeue_after_s,
        retention_s=settings.retention_s,
    )
    access = AccessService(
        uow,
        pepper=api_key_pepper(settings),
        tiers=settings.rate_tiers,
        default_tier=settings.default_tier,
        max_unfinished_jobs=settings.max_unfinished_jobs,
    )
    return Runtime(settings, engine, broker, queue, services, runner, recovery, access, attempts)


def api_key_pepper(settings: Settings) -> bytes:
    """The HMAC key of API key digests: its own setting, else derived from the JWT secret.

    Every replica must use the same pepper; deriving it from the secret they
    already share needs no new setting, and keeps it out of the database.
    """
    if settings.api_key_pepper is not None:
        return settings.api_key_pepper.get_secret_value().encode()
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else ""
    return hmac.new(secret.encode(), b"agentq api key pepper", hashlib.sha256).digest()
