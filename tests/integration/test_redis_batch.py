"""Batched job messages against a real Redis and a real Dramatiq worker.

They must be stored as `RedisBroker.enqueue` stores a message, and be run.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker

from server.redis_batch import enqueue_many

pytestmark = pytest.mark.redis

QUEUE = "batch_test"
ACTOR = "remember"


@pytest.fixture
def broker(redis_url: str, redis_namespace: str) -> Iterator[RedisBroker]:
    broker = RedisBroker(url=redis_url, namespace=redis_namespace)  # type: ignore[no-untyped-call]
    yield broker
    broker.close()


def _stored(broker: RedisBroker) -> list[dramatiq.Message[None]]:
    """The messages waiting on the queue, in queue order."""
    client = broker.client
    ids = client.lrange(f"{broker.namespace}:{QUEUE}", 0, -1)
    payloads = client.hmget(f"{broker.namespace}:{QUEUE}.msgs", ids)
    return [_decoded(payload) for payload in payloads]


def _decoded(payload: bytes | str | None) -> dramatiq.Message[None]:
    # The broker's client leaves responses undecoded: a message is bytes, or missing.
    assert isinstance(payload, bytes), payload
    return dramatiq.Message.decode(payload)


def test_a_batch_is_stored_as_enqueue_stores_each_message(broker: RedisBroker) -> None:
    one: dramatiq.Message[None] = dramatiq.Message(
        queue_name=QUEUE, actor_name=ACTOR, args=("a",), kwargs={}, options={}
    )
    broker.enqueue(one)
    enqueue_many(broker, QUEUE, ACTOR, ["b", "c"])

    stored = _stored(broker)

    assert [list(m.args) for m in stored] == [["a"], ["b"], ["c"]]
    assert {(m.queue_name, m.actor_name, tuple(m.options)) for m in stored} == {
        (QUEUE, ACTOR, ("redis_message_id",))
    }
    assert len({m.options["redis_message_id"] for m in stored}) == 3
    assert len({m.message_id for m in stored}) == 3


def test_a_dramatiq_worker_runs_every_message_of_a_batch(broker: RedisBroker) -> None:
    seen: list[str] = []
    all_seen = threading.Event()
    ids = [f"job-{n}" for n in range(50)]

    def remember(job_id: str) -> None:
        seen.append(job_id)
        if len(seen) == len(ids):
            all_seen.set()

    dramatiq.actor(broker=broker, actor_name=ACTOR, queue_name=QUEUE)(remember)
    enqueue_many(broker, QUEUE, ACTOR, ids)
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        assert all_seen.wait(timeout=30), f"ran {len(seen)} of {len(ids)}"
    finally:
        worker.stop()

    assert sorted(seen) == sorted(ids)


def _calls(broker: RedisBroker, command: str) -> int:
    """How many times Redis has run `command` (its INFO commandstats)."""
    stats = broker.client.info("commandstats")
    entry = stats.get(f"cmdstat_{command}")
    return int(entry["calls"]) if isinstance(entry, dict) else 0


def test_a_batch_is_one_round_trip_once_redis_has_the_script(broker: RedisBroker) -> None:
    enqueue_many(broker, QUEUE, ACTOR, ["warm"])  # Redis has the script from here on
    scripts, evalshas = _calls(broker, "script|exists"), _calls(broker, "evalsha")

    enqueue_many(broker, QUEUE, ACTOR, ["a", "b", "c"])

    # No SCRIPT EXISTS before the batch (a round trip of its own): the three calls alone.
    assert _calls(broker, "script|exists") == scripts
    assert _calls(broker, "evalsha") == evalshas + 3


def test_a_batch_after_redis_lost_its_scripts_stores_each_message_once(
    broker: RedisBroker,
) -> None:
    enqueue_many(broker, QUEUE, ACTOR, ["before"])
    broker.client.script_flush()  # as a restarted Redis, which keeps no scripts

    enqueue_many(broker, QUEUE, ACTOR, ["a", "b"])

    assert [list(m.args) for m in _stored(broker)] == [["before"], ["a"], ["b"]]
