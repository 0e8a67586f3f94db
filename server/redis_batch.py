"""Many job messages to Dramatiq's Redis broker in one round trip.

`RedisBroker.enqueue` runs the broker's dispatch script once per message, a
round trip and about 0.2 ms of CPU each; the API server sends one message per
Execute. This sends a batch as the same script calls in one pipeline, so the
workers see exactly what `enqueue` would have stored.

The calls go by the script's hash alone (EVALSHA). A pipeline given the script itself
first asks Redis whether it knows it (SCRIPT EXISTS), a second round trip on every batch;
instead a batch that finds the script missing (a Redis restarted since, which keeps no
scripts) loads it and sends again what it refused, which is every call, as all call the
one script.

It depends on how Dramatiq 2 calls its dispatch script (the argument list of
`RedisBroker._dispatch`), which is why the dependency is pinned below 3 and
the e2e tests run real workers on messages sent this way. The broker's
enqueue middleware hooks are not run: none of the broker's middleware has
any (`build_broker` uses Dramatiq's defaults).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis
from redis.exceptions import NoScriptError


def enqueue_many(
    broker: RedisBroker, queue_name: str, actor_name: str, job_ids: Sequence[str]
) -> None:
    """One message per job id, for `actor_name` on `queue_name`, in one pipeline."""
    keys = [broker.namespace]
    max_unpack = broker._max_unpack_size()  # type: ignore[no-untyped-call]
    calls: list[list[Any]] = []
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
        calls.append([*keys, *args])
    _dispatch(broker, len(keys), calls)


def _dispatch(broker: RedisBroker, key_count: int, calls: list[list[Any]]) -> None:
    """Run the dispatch script once per call, in one pipeline; load it first if Redis lost it."""
    script = broker.scripts["dispatch"]
    for loaded in (False, True):
        pipeline = broker.client.pipeline(transaction=False)
        for call in calls:
            pipeline.evalsha(script.sha, key_count, *call)
        results = pipeline.execute(raise_on_error=False)
        failed = [error for error in results if isinstance(error, Exception)]
        unknown = [isinstance(error, NoScriptError) for error in results]
        if not failed:
            return
        if loaded or not all(isinstance(error, NoScriptError) for error in failed):
            raise failed[0]
        # Only the calls Redis refused for want of the script are sent again.
        calls = [call for call, missing in zip(calls, unknown, strict=True) if missing]
        script.sha = broker.client.script_load(script.script)
