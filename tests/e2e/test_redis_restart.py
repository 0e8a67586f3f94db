"""Redis restarted under load: the first request after it is back is served, and its job sent."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import dramatiq
import grpc
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker

from server.queue import QUEUE_NAME, build_broker
from server.settings import Settings
from tests.e2e.harness import Client, running_server, settings_for, token
from tests.integration.test_rate_limit_redis import PrivateRedis, private_redis_server

NAMESPACE = "agentq-e2e"
TENANTS = 8


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server of this test alone, which it kills and restarts."""
    yield from private_redis_server(tmp_path)


@pytest.fixture
def settings(fresh_postgres_url: str, private_redis: PrivateRedis) -> Settings:
    """PostgreSQL and the private Redis, with no workers in the server."""
    return settings_for(
        database_url=fresh_postgres_url,
        redis_url=private_redis.url,
        redis_namespace=NAMESPACE,
        # The recovery sweep re-sends a job whose message is overdue; here it
        # comes too late to stand in for the sender.
        requeue_after_s=600,
    )


def served(call: Callable[..., Any], *args: Any) -> Any:
    """The call's reply; a failed call fails the test with its status."""
    try:
        return call(*args)
    except grpc.RpcError as error:
        pytest.fail(f"the call failed: {error.code().name} {error.details()}", pytrace=False)


def execute_everywhere(clients: list[Client], agents: list[str], *, rounds: int) -> list[str]:
    """Every tenant executes and reads back jobs at once; the ids of the jobs made."""

    def one_tenant(i: int) -> list[str]:
        made = []
        client, agent = clients[i], agents[i]
        for _ in range(rounds):
            job_id = served(client.execute, agent).job_id
            served(client.get_job, job_id)
            made.append(job_id)
        return made

    with ThreadPoolExecutor(len(clients)) as pool:
        return [job_id for made in pool.map(one_tenant, range(len(clients))) for job_id in made]


def queued_job_ids(url: str) -> set[str]:
    """The job ids of the messages waiting in the job queue."""
    client = redis.Redis.from_url(url)
    try:
        encoded = client.hvals(f"{NAMESPACE}:{QUEUE_NAME}.msgs")
    finally:
        client.close()
    job_ids: set[str] = set()
    for message in encoded:
        # The client leaves responses undecoded: each message is bytes.
        assert isinstance(message, bytes), message
        job_ids.add(dramatiq.Message.decode(message).args[0])
    return job_ids


def wait_queued(url: str, job_ids: set[str], *, timeout_s: float = 10) -> set[str]:
    """Wait for the jobs' messages to reach the queue; those still missing at the deadline."""
    deadline = time.monotonic() + timeout_s
    while (missing := job_ids - queued_job_ids(url)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return missing


@pytest.mark.parametrize("quiet_s", [2.0, 10.0], ids=["back-for-2s", "idle-for-10s"])
def test_the_first_request_after_redis_restarts_under_load_is_served(
    quiet_s: float,
    settings: Settings,
    private_redis: PrivateRedis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="server.sending")
    with ExitStack() as stack:
        server = stack.enter_context(running_server(settings, in_process_workers=False))
        clients = [stack.enter_context(server.client(token(f"user-{i}"))) for i in range(TENANTS)]
        agents = [served(client.create_agent).id for client in clients]
        # Calls from many tenants at once leave connections in every pool.
        before = execute_everywhere(clients, agents, rounds=5)
        assert not wait_queued(private_redis.url, set(before))

        private_redis.restart()
        time.sleep(quiet_s)

        first = served(clients[0].execute, agents[0])
        # Then every tenant at once, over every connection pooled before the restart.
        after = execute_everywhere(clients, agents, rounds=2)

    assert first.response == f"Job queued: {first.job_id}"
    # The restarted Redis started empty: these messages were sent after it came back.
    assert not wait_queued(private_redis.url, {first.job_id, *after})
    assert not [r.getMessage() for r in caplog.records if r.name == "server.sending"]


def next_job_id(consumer: dramatiq.Consumer, *, timeout_s: float = 10) -> str:
    """Fetch and acknowledge the next message, as a worker does; the job id it carries."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = next(consumer)
        if message is not None:
            consumer.ack(message)
            return str(message.args[0])
    raise AssertionError(f"no message in {timeout_s}s")


def test_a_worker_fetches_the_first_job_sent_after_redis_restarts(
    settings: Settings, private_redis: PrivateRedis
) -> None:
    # The broker a worker process builds, with its own pooled connection.
    worker_broker = build_broker(settings)
    assert isinstance(worker_broker, RedisBroker)
    consumer = worker_broker.consume(QUEUE_NAME, prefetch=1, timeout=100)
    try:
        with (
            running_server(settings, in_process_workers=False) as server,
            server.client(token()) as client,
        ):
            agent = served(client.create_agent).id
            before = served(client.execute, agent).job_id
            assert next_job_id(consumer) == before

            private_redis.restart()
            time.sleep(2)

            after = served(client.execute, agent).job_id
            assert next_job_id(consumer) == after
    finally:
        consumer.close()
        worker_broker.close()
