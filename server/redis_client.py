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

import redis
import redis.asyncio as aioredis
from redis import exceptions
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

# One retry: a second failure in a row is an outage, not a stale connection.
RETRIES = 1
# Seconds a connection may sit idle before it is PINGed ahead of its next command.
HEALTH_CHECK_INTERVAL_S = 5
# Seconds to wait for a TCP connection to Redis.
CONNECT_TIMEOUT_S = 2.0

_RETRY_ON = (exceptions.ConnectionError, exceptions.TimeoutError)


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
