"""The job queue: a Dramatiq broker (Redis, or in-process) and the one actor that runs jobs."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from server import metrics
from server.redis_batch import enqueue_many
from server.redis_client import blocking_client
from server.settings import Settings

log = logging.getLogger(__name__)

QUEUE_NAME = "agentq_jobs"
ACTOR_NAME = "run_job"
# What Dramatiq's consumers log, each every few seconds, while Redis is down.
_CONSUMER_RECONNECTS = ("Consumer encountered a connection error", "Restarting consumer in")


class JobQueue(Protocol):
    """Sends a job's id to the workers, now or after a delay."""

    def enqueue(self, job_id: str, *, delay_s: float = 0.0) -> None: ...


class BatchQueue(Protocol):
    """Sends many jobs' ids to the workers at once."""

    def enqueue_many(self, job_ids: Sequence[str]) -> None: ...


def build_broker(settings: Settings) -> dramatiq.Broker:
    """Redis when a Redis URL is configured, else an in-process broker; made global."""
    broker: dramatiq.Broker
    if settings.redis_url:
        broker = RedisBroker(  # type: ignore[no-untyped-call]
            # Every broker command is one short script call: five seconds
            # without a reply is an outage, not a slow answer.
            client=blocking_client(settings.redis_url, timeout_s=5.0),
            namespace=settings.redis_namespace,
            # A dead worker's unacknowledged messages return to the queue after
            # this long; the database sweeper covers the jobs themselves sooner.
            heartbeat_timeout=int(settings.broker_heartbeat_timeout_s * 1000),
        )
        _quiet_consumer_reconnects()
    else:
        broker = StubBroker()
    dramatiq.set_broker(broker)
    return broker


def _quiet_consumer_reconnects() -> None:
    """Drop the consumers' line per failed reconnect: RedisWatch reports an outage once."""
    for queue_name in (QUEUE_NAME, f"{QUEUE_NAME}.DQ"):
        logger = logging.getLogger(f"dramatiq.worker.ConsumerThread({queue_name})")
        logger.addFilter(_not_a_reconnect)


def _not_a_reconnect(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_CONSUMER_RECONNECTS)


def declare_job_actor(
    broker: dramatiq.Broker, run: Callable[[str], None]
) -> dramatiq.Actor[[str], None]:
    """Register the actor that hands one job, by id, to `run`."""

    def run_job(job_id: str) -> None:
        run(job_id)

    decorate = dramatiq.actor(
        broker=broker,
        actor_name=ACTOR_NAME,
        queue_name=QUEUE_NAME,
        # Attempts are counted in the database, where a lost worker still
        # counts; the runner re-sends a retry with its backoff as a delay.
        max_retries=0,
        # The actor only waits for a slot and claims the job; the engine enforces
        # the attempt's own time limit, and a wait for a slot may be long.
        time_limit=float("inf"),
    )
    return decorate(run_job)


class DramatiqJobQueue:
    """JobQueue over a Dramatiq broker, sending messages to the job actor by name."""

    def __init__(self, broker: dramatiq.Broker) -> None:
        self._broker = broker

    def enqueue(self, job_id: str, *, delay_s: float = 0.0) -> None:
        """Send one message for the job."""
        message: dramatiq.Message[None] = dramatiq.Message(
            queue_name=QUEUE_NAME, actor_name=ACTOR_NAME, args=(job_id,), kwargs={}, options={}
        )
        delay_ms = int(delay_s * 1000)
        with _counted_failure():
            self._broker.enqueue(message, delay=delay_ms if delay_ms > 0 else None)

    def enqueue_many(self, job_ids: Sequence[str]) -> None:
        """Send one message per job, at once; on Redis in one round trip."""
        if isinstance(self._broker, RedisBroker):
            with _counted_failure():
                enqueue_many(self._broker, QUEUE_NAME, ACTOR_NAME, job_ids)
            return
        for job_id in job_ids:
            self.enqueue(job_id)


@contextlib.contextmanager
def _counted_failure() -> Iterator[None]:
    """A send the broker refused counts in the metrics as a Redis error (the in-process
    broker of the embedded default does not fail), and is raised on to the sender."""
    try:
        yield
    except Exception:
        metrics.redis_error("send")
        raise
