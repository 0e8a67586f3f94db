"""The composition root: builds engine, broker, services and workers from settings."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dramatiq

from agentq.client import wire
from server import metrics
from server.api.convert import job_message
from server.configuration import ConfigurationError
from server.dev_mode import shared_secret
from server.paging import PageTokens
from server.prompt_guard import PromptGuard
from server.providers.base import Provider
from server.providers.factory import build_provider
from server.queue import DramatiqJobQueue, build_broker, declare_job_actor
from server.sending import MessageSender
from server.service.access import AccessService
from server.service.agents import AgentService
from server.service.contexts import ContextService
from server.service.event_log import EventLogService
from server.service.jobs import JobService
from server.service.orchestrator import Orchestrator
from server.service.own_keys import OwnKeys
from server.service.recovery import Recovery, RecoveryThread
from server.service.services import Services
from server.service.system import SystemService
from server.service.webhook_dispatch import DispatchSettings, WebhookDispatcher
from server.service.webhooks import WebhookService
from server.service.workflows import WorkflowService
from server.settings import MIN_SECRET_BYTES, Settings
from server.store.connect import open_database
from server.store.migrate import create_db_engine, migrate
from server.store.records import JobRecord
from server.store.store import Store
from server.worker.engine import ExecutionEngine
from server.worker.history import ContextLimits
from server.worker.policy import RetryPolicy
from server.worker.prompts import PromptSet
from server.worker.runner import AttemptRunner
from server.worker.store import DatabaseAttemptStore
from server.worker.verification import VerifyConfig

log = logging.getLogger(__name__)


def jwt_secret(settings: Settings) -> str:
    """The signing secret: VEX_JWT_SECRET, or development mode's kept one; refuses weak ones."""
    secret = shared_secret(settings)
    if len(secret.encode("utf-8")) >= MIN_SECRET_BYTES:
        return secret
    if secret:
        raise ConfigurationError(
            f"VEX_JWT_SECRET is too short: it needs at least {MIN_SECRET_BYTES} bytes"
        )
    raise ConfigurationError(
        "VEX_JWT_SECRET is not set. Set it to a random string of at least "
        f"{MIN_SECRET_BYTES} bytes, or start with --dev for development mode (on this "
        "machine only, with a secret kept beside the SQLite database)."
    )


def provider_meter(settings: Settings) -> metrics.ProviderMeter:
    """The provider metrics under the name and model of the provider the settings choose."""
    if settings.provider == "openai":
        return metrics.ProviderMeter("openai", settings.openai_model)
    return metrics.ProviderMeter("builtin", "builtin")


def retry_policy(settings: Settings) -> RetryPolicy:
    """The retry and time-limit knobs of the settings."""
    return RetryPolicy(
        max_attempts=settings.max_attempts,
        backoff_s=settings.retry_backoff_s,
        backoff_max_s=settings.retry_backoff_max_s,
        time_limit_s=settings.job_time_limit_s,
        lease_grace_s=settings.lease_grace_s,
    )


def verify_config(settings: Settings) -> VerifyConfig:
    """Verification's prompts, threshold and safety judge, as the settings give them."""
    overrides = {
        "critic": settings.verify_critic_prompt,
        "defender": settings.verify_defender_prompt,
        "judge": settings.verify_judge_prompt,
        "reviser": settings.verify_reviser_prompt,
        "safety_judge": settings.safety_judge_prompt,
    }
    prompts = PromptSet(**{name: text for name, text in overrides.items() if text is not None})
    return VerifyConfig(
        prompts=prompts,
        threshold=settings.verify_threshold,
        safety_judge=settings.prompt_guard == "judge",
    )


# Threads that take messages from the broker and hand them to the engine. Each only
# waits for a slot and a claim, so a few keep any number of slots busy, and the broker
# hands a worker no more than twice as many messages as it has such threads.
MESSAGE_THREADS = 8
# The recovery sweeper's own connections, and the webhook dispatcher's.
RECOVERY_POOL_SIZE = 2
WEBHOOK_POOL_SIZE = 4


def render_job(job: JobRecord) -> dict[str, Any]:
    """A job as GET /api/v1/jobs/{id} answers it: the data of a job event's webhook."""
    return wire.job(job_message(job))


def dispatch_settings(settings: Settings) -> DispatchSettings:
    """The webhook dispatcher's knobs of the settings."""
    return DispatchSettings(
        timeout_s=settings.webhook_timeout_s,
        retry_s=settings.webhook_retry_hours * 3600,
        backoff_s=settings.webhook_backoff_s,
        backoff_max_s=settings.webhook_backoff_max_s,
        allow_private=settings.webhook_allow_private,
        concurrency=settings.webhook_concurrency,
    )


def engine_pool_size(concurrency: int) -> int:
    """Connections for an engine of `concurrency` slots.

    An attempt spends milliseconds in the database per second of provider wait, so one
    connection serves many slots; attempts queue on the pool for a moment rather than fail.
    """
    return max(2, min(16, -(-concurrency // 16)))


@dataclass
class Runtime:
    """Everything a serving or working process holds, and how to stop it."""

    settings: Settings
    broker: dramatiq.Broker
    queue: DramatiqJobQueue
    executions: ExecutionEngine
    _threads: list[RecoveryThread] = field(default_factory=list)
    _workers: list[dramatiq.Worker] = field(default_factory=list)

    async def open_services(self) -> Services:
        """The service layer on a connection pool of the running event loop."""
        settings = self.settings
        db = await open_database(settings.database_url, pool_size=settings.db_pool_size)
        store = Store(db)
        sender = MessageSender(self.queue)
        page_tokens = PageTokens(page_token_key(settings))
        prompt_guard = PromptGuard(settings.prompt_guard)
        access = AccessService(
            store,
            pepper=api_key_pepper(settings),
            tiers=settings.rate_tiers,
            default_tier=settings.default_tier,
            max_unfinished_jobs=settings.max_unfinished_jobs,
            token_lifetime_s=settings.token_ttl_s,
        )
        jobs = JobService(
            store,
            sender,
            retention_s=settings.retention_s,
            max_unfinished_jobs=settings.max_unfinished_jobs,
            page_tokens=page_tokens,
            context_auto=settings.context_auto,
            prompt_guard=prompt_guard,
        )
        workflows = WorkflowService(
            store, sender, page_tokens=page_tokens, prompt_guard=prompt_guard, jobs=jobs
        )
        return Services(
            agents=AgentService(store, page_tokens=page_tokens, prompt_guard=prompt_guard),
            jobs=jobs,
            contexts=ContextService(store, page_tokens=page_tokens),
            events=EventLogService(store, page_tokens=page_tokens, on_emit=workflows),
            system=SystemService(db, db_type=settings.db_type),
            access=access,
            own_keys=OwnKeys(access, store, page_tokens),
            workflows=workflows,
            webhooks=WebhookService(
                store, allow_private=settings.webhook_allow_private, page_tokens=page_tokens
            ),
            store=store,
            sender=sender,
        )

    def start_workers(self) -> None:
        """Run the execution engine and its message threads in this process."""
        self.executions.start()
        threads = min(MESSAGE_THREADS, self.settings.worker_concurrency)
        worker = dramatiq.Worker(self.broker, worker_threads=threads, worker_timeout=100)
        worker.start()
        self._workers.append(worker)
        # Webhooks are sent where jobs run (README, Webhooks).
        self.start_webhooks()

    def start_webhooks(self) -> None:
        """Send webhook deliveries in the background, on a thread and a pool of its own."""
        settings = self.settings

        async def open_dispatcher() -> WebhookDispatcher:
            db = await open_database(settings.database_url, pool_size=WEBHOOK_POOL_SIZE)
            return WebhookDispatcher(Store(db), render_job, dispatch_settings(settings))

        thread = RecoveryThread(
            open_dispatcher, interval_s=settings.webhook_poll_s, name="agentq-webhooks"
        )
        thread.start()
        self._threads.append(thread)

    def start_recovery(self) -> None:
        """Sweep for lost jobs in the background, on a thread and a pool of its own."""
        settings = self.settings

        async def open_recovery() -> Recovery:
            db = await open_database(settings.database_url, pool_size=RECOVERY_POOL_SIZE)
            return Recovery(
                Store(db),
                self.queue,
                retry_policy(settings),
                requeue_after_s=settings.requeue_after_s,
                retention_s=settings.retention_s,
            )

        async def open_orchestrator() -> Orchestrator:
            db = await open_database(settings.database_url, pool_size=RECOVERY_POOL_SIZE)
            return Orchestrator(
                Store(db), self.queue, prompt_guard=PromptGuard(settings.prompt_guard)
            )

        threads = [
            RecoveryThread(open_recovery, interval_s=settings.recovery_interval_s),
            # Workflow runs move forward beside the sweeper (README, Workflows).
            RecoveryThread(
                open_orchestrator, interval_s=settings.workflow_poll_s, name="agentq-workflows"
            ),
        ]
        for thread in threads:
            thread.start()
        self._threads += threads

    def close(self, *, grace_s: float | None = None) -> None:
        """Stop taking jobs, let running attempts finish for a grace period, stop the rest.

        Attempts still running after `grace_s` (default: the setting) are interrupted
        and their jobs given back to the queue at once.
        """
        self.executions.stop_admitting()
        # The sweeper stops beside the engine rather than after it: a worker whose
        # parent died must be gone within seconds.
        for thread in self._threads:
            thread.ask_to_stop()
        for worker in self._workers:
            worker.stop()
        self.executions.close(
            grace_s=self.settings.shutdown_grace_s if grace_s is None else grace_s
        )
        for thread in self._threads:
            thread.stop()
        self.broker.close()


def build_runtime(
    settings: Settings,
    *,
    provider: Provider | None = None,
    engine_loop: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
) -> Runtime:
    """Migrate the database, connect the broker, and wire the execution engine.

    `engine_loop` makes the execution engine's event loop (the entry points pass the
    one every agentq process runs on). Connection pools are opened later, each on the
    event loop that uses it: the API's (`open_services`), the engine's, the sweeper's.
    """
    engine = create_db_engine(settings.database_url, pool_size=1)
    try:
        migrate(engine)
    finally:
        engine.dispose()
    broker = build_broker(settings)
    policy = retry_policy(settings)
    verify = verify_config(settings)
    queue = DramatiqJobQueue(broker)

    async def open_runner() -> AttemptRunner:
        size = engine_pool_size(settings.worker_concurrency)
        db = await open_database(settings.database_url, pool_size=size)
        return AttemptRunner(
            DatabaseAttemptStore(Store(db)),
            provider or build_provider(settings),
            queue,
            policy,
            token_interval_s=settings.token_event_interval_ms / 1000,
            context_limits=ContextLimits(settings.context_max_turns, settings.context_max_chars),
            verify=verify,
            meter=provider_meter(settings),
        )

    executions = ExecutionEngine(
        open_runner,
        send=queue.enqueue,
        concurrency=settings.worker_concurrency,
        cancel_poll_s=settings.cancel_poll_s,
        loop_factory=engine_loop,
    )

    def run_message(job_id: str) -> None:
        if not executions.admit(job_id):
            # This worker is stopping: the job goes back to the queue for another.
            queue.enqueue(job_id)

    declare_job_actor(broker, run_message)
    return Runtime(settings, broker, queue, executions)


def api_key_pepper(settings: Settings) -> bytes:
    """The HMAC key of API key digests: its own setting, else derived from the JWT secret.

    Every replica must use the same pepper; deriving it from the secret they
    already share needs no new setting, and keeps it out of the database.
    """
    if settings.api_key_pepper is not None:
        return settings.api_key_pepper.get_secret_value().encode()
    secret = shared_secret(settings)
    if not secret:
        # Only a process that checks no keys gets here (a worker: a server refuses to
        # start without a secret). A random pepper: never one derivable from nothing.
        return secrets.token_bytes(32)
    return hmac.new(secret.encode(), b"agentq api key pepper", hashlib.sha256).digest()


def page_token_key(settings: Settings) -> bytes | None:
    """The HMAC key of page tokens, derived from the JWT secret every replica shares.

    None without a secret: each process then signs with a random key of its own,
    rather than with one anybody could derive from an empty secret.
    """
    secret = shared_secret(settings)
    if not secret:
        return None
    return hmac.new(secret.encode(), b"agentq page token key", hashlib.sha256).digest()
