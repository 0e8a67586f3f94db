"""Many job messages to Dramatiq's Redis broker in one round trip.

`RedisBroker.enqueue` runs the broker's dispatch script once per message, a
round trip and about 0.2 ms of CPU each; the API server sends one message per
Execute. This sends a batch as the same script calls in one pipeline, so the
workers see exactly what `enqueue` would have stored.

It depends on how Dramatiq 2 calls its dispatch script (the argument list of
`RedisBroker._dispatch`), which is why the dependency is pinned below 3 and
the e2e tests run real workers on messages sent this way. The broker's
enqueue middleware hooks are not run: none of the broker's middleware has
any (`build_broker` uses Dramatiq's defaults).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis


def enqueue_many(
    broker: RedisBroker, queue_name: str, actor_name: str, job_ids: Sequence[str]
) -> None:
    """One message per job id, for `actor_name` on `queue_name`, in one pipeline."""
    dispatch = broker.scripts["dispatch"]
    keys = [broker.namespace]
    max_unpack = broker._max_unpack_size()  # type: ignore[no-untyped-call]
    pipeline = broker.client.pipeline(transaction=False)
    for job_id in job_ids:
        # A fresh Redis id per message, as RedisBroker.enqueue gives each.
        redis_id = str(uuid.uuid4())
        message: dramatiq.Message[None] = dramatiq.Message(
            queue_name=queue_name,
            actor_name=actor_name,
            args=(job_id,),
            kwargs={},
            options={"redis_message_id": redis_id},
        )
        args = [
            "enqueue",
            current_millis(),
            queue_name,
            broker.broker_id,
            broker.heartbeat_timeout,
            broker.dead_message_ttl,
            broker._should_do_maintenance("enqueue"),  # as often as enqueue does it
            max_unpack,
            redis_id,
            message.encode(),
        ]
        dispatch(keys=keys, args=args, client=pipeline)
    pipeline.execute()
