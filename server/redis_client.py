"""Redis clients with one reconnect policy: blocking ones for the broker, asyncio for the limiter.

A pooled connection can be dead without its pool knowing: Redis restarted, or
something between dropped the connection while it sat idle. redis-py's URL
pools never retry, so the first command on such a connection fails however
long Redis has been back. Here every command is retried once, at once, on a
fresh connection: that gets past one dead connection, while a Redis that is
really down fails the retry too and is reported without backoff. A
connection idle for longer than the health-check interval is PINGed before
it is used again, under the same retry.
"""

from __future__ import annotations

import logging
import threading
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
from redis import exceptions
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from server import metrics

# One retry: a second failure in a row is an outage, not a stale connection.
RETRIES = 1
# Seconds a connection may sit idle before it is PINGed ahead of its next command.
HEALTH_CHECK_INTERVAL_S = 5
# Seconds to wait for a TCP connection to Redis.
CONNECT_TIMEOUT_S = 2.0

# Seconds between checks of whether Redis answers, while watched.
WATCH_INTERVAL_S = 5.0

_RETRY_ON = (exceptions.ConnectionError, exceptions.TimeoutError)

log = logging.getLogger(__name__)


def blocking_client(url: str, *, timeout_s: float) -> redis.Redis:
    """A client for threads: the broker, its workers and the sender.

    `timeout_s` bounds each reply, so a Redis that stops answering fails a
    command instead of hanging the thread.
    """
    return redis.Redis.from_url(
        url,
        retry=Retry(NoBackoff(), RETRIES, supported_errors=_RETRY_ON),
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
        socket_timeout=timeout_s,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
    )


def asyncio_client(url: str, *, timeout_s: float) -> aioredis.Redis:
    """A client for one event loop, whose connections belong to the loop that first uses them.

    `timeout_s` bounds each reply, as for `blocking_client`.
    """
    return aioredis.Redis.from_url(
        url,
        retry=AsyncRetry(NoBackoff(), RETRIES, supported_errors=_RETRY_ON),
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
        socket_timeout=timeout_s,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
    )


def shown_url(url: str) -> str:
    """A Redis URL fit for a log line: no password, and no query (it may carry one)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    if parts.username:
        host = f"{parts.username}@{host}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class RedisWatch:
    """Says once when Redis does not answer, and once when it answers again.

    The broker's consumers retry on their own, each logging every failed retry; with
    those silenced (server/queue.py) this is the one voice of an outage.
    """

    def __init__(self, url: str, *, interval_s: float = WATCH_INTERVAL_S) -> None:
        self._url = shown_url(url)
        self._client = blocking_client(url, timeout_s=CONNECT_TIMEOUT_S)
        self._interval_s = interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="redis-watch", daemon=True)
        self._answering = True

    def start(self) -> None:
        """Check once now, so that an outage is reported before anything else, then watch."""
        self.check()
        self._thread.start()

    def check(self) -> bool:
        """Whether Redis answers a PING now; logs only a change."""
        try:
            self._client.ping()
        except exceptions.RedisError as error:
            metrics.redis_error("ping")
            if self._answering:
                log.error(
                    "Redis at %s is unreachable (%s); jobs wait until it answers, "
                    "and agentq keeps trying quietly",
                    self._url,
                    error,
                )
            self._answering = False
            return False
        if not self._answering:
            log.warning("Redis at %s answers again", self._url)
        self._answering = True
        return True

    def stop(self) -> None:
        """Stop watching."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._interval_s + CONNECT_TIMEOUT_S)
        self._client.close()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval_s):
            self.check()
