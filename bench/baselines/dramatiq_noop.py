"""A bare Dramatiq no-op actor on Redis, and its producer.

Workers: `python -m dramatiq bench.baselines.dramatiq_noop --processes P --threads T`.
Producer: `python -m bench.baselines.dramatiq_noop --count N` sends N messages as fast
as one Python thread can, then waits until every message has been processed (acked),
and prints one JSON line: the wall-clock time of the first send, of the last send, and
of the moment the queue was empty of unacknowledged messages.

The broker is built like agentq's (RedisBroker, namespace, heartbeat timeout) from
BENCH_REDIS_URL and BENCH_REDIS_NAMESPACE, read when the module is imported because
Dramatiq's CLI imports it to find the actor.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

QUEUE_NAME = "bench_noop"
HEARTBEAT_TIMEOUT_MS = 30_000

broker = RedisBroker(  # type: ignore[no-untyped-call]
    url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
    namespace=os.environ.get("BENCH_REDIS_NAMESPACE", "agentq-bench-noop"),
    heartbeat_timeout=HEARTBEAT_TIMEOUT_MS,
)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE_NAME, max_retries=0)
def noop(job_id: str) -> None:
    """Do nothing: the cost measured is the queue's alone."""


def _unacked(client: redis.Redis, namespace: str) -> int:
    # Dramatiq keeps each message in "<ns>:<queue>.msgs" until it is acked.
    return int(client.hlen(f"{namespace}:{QUEUE_NAME}.msgs"))


def produce(count: int, *, timeout_s: float) -> dict[str, float]:
    """Send `count` messages, wait until all are processed; return the three times."""
    namespace = os.environ.get("BENCH_REDIS_NAMESPACE", "agentq-bench-noop")
    client = redis.Redis.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    first_send = time.time()
    for i in range(count):
        noop.send(f"{i:036d}")
    last_send = time.time()
    deadline = time.monotonic() + timeout_s
    while _unacked(client, namespace) > 0:
        if time.monotonic() > deadline:
            raise SystemExit(f"messages still unprocessed after {timeout_s:g}s")
        time.sleep(0.002)
    return {"first_send": first_send, "last_send": last_send, "all_processed": time.time()}


def main() -> None:
    """Parse the arguments, produce, print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, required=True, help="messages to send")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait at most")
    args = parser.parse_args()
    print(json.dumps(produce(args.count, timeout_s=args.timeout)), flush=True)


if __name__ == "__main__":
    main()
