"""The webhooks' outbox and dispatcher on SQLite and PostgreSQL (README, Webhooks): every
event's deliveries are written in the transaction that stores it, or not at all; one
dispatcher at a time holds a webhook; deliveries are sent signed, retried, and refused
to addresses that are not allowed, checked again at each attempt."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from server.auth.principal import Principal
from server.service.event_log import EventLogService
from server.service.webhook_dispatch import DispatchSettings, WebhookDispatcher
from server.service.webhook_targets import REFUSED_MESSAGE
from server.service.webhooks import WebhookService
from server.store.deliveries import DeliveryRecord, Outcome
from server.store.events import EventSpec, EventType
from server.store.records import JobRecord
from server.store.store import Store
from server.store.transitions import record
from server.store.webhooks import WebhookRecord
from tests.fakes.provider import ScriptedProvider, Stream
from tests.webhook_receiver import Receiver, running_receiver, send_one_event
from tests.world import World, execute_request


def _tenant() -> Principal:
    return Principal(subject="alice", role="user", tenant_id=f"t-{uuid.uuid4()}")


def _settings(*, allow_private: bool = True, retry_s: float = 3600) -> DispatchSettings:
    return DispatchSettings(
        timeout_s=5,
        retry_s=retry_s,
        backoff_s=0,
        backoff_max_s=0,
        allow_private=allow_private,
        # The databases are shared by the session: other tests' webhooks are due too.
        concurrency=1000,
    )


def _render(job: JobRecord) -> dict[str, Any]:
    return {"job_id": job.id, "status": str(job.status)}


async def _hook(
    world: World, tenant: Principal, types: list[str], url: str = "http://127.0.0.1:9/"
) -> str:
    service = WebhookService(world.store, allow_private=True, clock=world.clock)
    webhook, _ = await service.create(tenant, url=url, event_types=types, enabled=True)
    return webhook.id


async def _down_receiver(
    store: Store, tenant: Principal, receiver: Receiver, event_type: str
) -> WebhookRecord:
    """A webhook of the tenant to the receiver, which is down and verifies with its secret."""
    service = WebhookService(store, allow_private=True)
    webhook, secret = await service.create(
        tenant, url=receiver.url(), event_types=[event_type], enabled=True
    )
    receiver.secret, receiver.down = secret, True
    return webhook


async def _deliveries(store: Store, webhook_id: str) -> list[DeliveryRecord]:
    return list(reversed(await store.deliveries.page(webhook_id, after=None, limit=100)))


async def _run_one(world: World, tenant: Principal) -> str:
    agent = await world.add_agent(tenant_id=tenant.tenant_id)
    job_id = await world.jobs.execute(tenant, agent.id, execute_request())
    runner = world.runner(ScriptedProvider(Stream(("Revenue ", "grew."), tokens_used=7)))
    assert await world.run_job(runner, job_id)
    return job_id


async def test_a_jobs_events_are_delivered_to_the_webhooks_whose_types_match(
    store: Store,
) -> None:
    world, alice, bob = World(store), _tenant(), _tenant()
    every = await _hook(world, alice, ["*"])
    completed = await _hook(world, alice, ["job.completed", "order.created"])
    disabled = await _hook(world, alice, ["*"])
    await WebhookService(store, allow_private=True).update(
        alice, disabled, url=None, event_types=None, enabled=False
    )
    bobs = await _hook(world, bob, ["*"])

    job_id = await _run_one(world, alice)
    await world.event_log.emit(alice, "order.created", {"order": 1})

    delivered = await _deliveries(store, every)
    # No token deltas (sequences 3 and 4); every other event, in the order it happened.
    assert [d.event_type for d in delivered] == [
        "job.queued",
        "job.started",
        "job.completed",
        "order.created",
    ]
    assert [d.event_id for d in delivered[:3]] == [f"job_{job_id}_{n:010d}" for n in (1, 2, 5)]
    assert {(d.status, d.attempts, d.tenant_id) for d in delivered} == {
        ("pending", 0, alice.tenant_id)
    }
    assert [d.event_type for d in await _deliveries(store, completed)] == [
        "job.completed",
        "order.created",
    ]
    assert await _deliveries(store, disabled) == []
    assert await _deliveries(store, bobs) == []


async def test_an_event_rolled_back_leaves_no_delivery_and_a_committed_one_has_it(
    store: Store,
) -> None:
    world, alice = World(store), _tenant()
    hook = await _hook(world, alice, ["*"])
    agent = await world.add_agent(tenant_id=alice.tenant_id)
    job_id = await world.jobs.execute(alice, agent.id, execute_request())
    runner = world.runner(ScriptedProvider(Stream(("a",), tokens_used=1)))
    attempt = await runner.claim(job_id)
    assert attempt is not None
    before = len(await _deliveries(store, hook))

    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.event_log.add(
                id=f"evt_{uuid.uuid4()}",
                tenant_id=alice.tenant_id,
                type="order.created",
                data="{}",
                created_at=world.clock(),
            )
            # A job event of the same transaction, rolled back with it.
            spec = EventSpec(EventType.RETRYING, error="x", delay_s=1.0)
            change = record(job_id, token=attempt.token, event=spec, at=world.clock())
            assert await tx.jobs.apply(change)
            raise RuntimeError("rolled back")
    assert len(await _deliveries(store, hook)) == before

    async with store.transaction() as tx:
        event_id = f"evt_{uuid.uuid4()}"
        await tx.event_log.add(
            id=event_id,
            tenant_id=alice.tenant_id,
            type="order.created",
            data="{}",
            created_at=world.clock(),
        )
    assert [d.event_id for d in await _deliveries(store, hook)][-1] == event_id


async def test_one_dispatcher_at_a_time_holds_a_webhook(store: Store) -> None:
    world, alice = World(store), _tenant()
    hook = await _hook(world, alice, ["order.created"])
    await world.event_log.emit(alice, "order.created", {})
    now = world.clock()
    later = now.replace(year=now.year + 1)

    first = await store.deliveries.lease(now=now, until=later, token="a", limit=100)
    second = await store.deliveries.lease(now=now, until=later, token="b", limit=100)

    assert hook in [w.id for w in first]
    assert hook not in [w.id for w in second]
    await store.deliveries.release(hook, "a")
    third = await store.deliveries.lease(now=now, until=later, token="c", limit=100)
    assert hook in [w.id for w in third]


async def test_a_dispatcher_killed_mid_send_leaves_its_delivery_to_the_next(store: Store) -> None:
    world, alice = World(store), _tenant()
    hook = await _hook(world, alice, ["order.created"])
    await world.event_log.emit(alice, "order.created", {})
    now = world.clock()
    until = now + timedelta(seconds=60)

    # Leased and never recorded nor released, as by a process killed while sending.
    assert hook in [
        w.id for w in await store.deliveries.lease(now=now, until=until, token="a", limit=1000)
    ]
    after = until + timedelta(seconds=1)
    taken = await store.deliveries.lease(
        now=after, until=after + timedelta(seconds=60), token="b", limit=1000
    )

    assert hook in [w.id for w in taken]
    [again] = await store.deliveries.due(hook, now=after, limit=10)
    assert (again.status, again.attempts) == ("pending", 0)


async def test_the_dispatcher_sends_signed_deliveries_and_retries_a_receiver_that_was_down(
    store: Store,
) -> None:
    alice = _tenant()
    with running_receiver() as receiver:
        webhook = await _down_receiver(store, alice, receiver, "order.created")
        dispatcher = WebhookDispatcher(store, _render, _settings())
        try:
            event = await EventLogService(store).emit(alice, "order.created", {"order": 7})
            await dispatcher.sweep()
            await dispatcher.idle()
            [failed] = await _deliveries(store, webhook.id)
            assert (failed.status, failed.attempts, failed.last_status_code) == ("pending", 1, 503)
            assert failed.last_error == "The receiver answered 503"

            receiver.down = False
            await dispatcher.sweep()
            await dispatcher.idle()
        finally:
            await dispatcher.stop()
    [sent] = await _deliveries(store, webhook.id)
    assert (sent.status, sent.attempts, sent.last_status_code) == ("succeeded", 2, 200)
    [taken] = receiver.taken()
    assert taken.verified and taken.webhook_id == event.id
    assert taken.body["type"] == "order.created" and taken.body["data"] == {"order": 7}


async def test_a_slow_receiver_holds_up_only_its_own_webhook_and_order_is_kept(
    store: Store,
) -> None:
    alice = _tenant()
    events = EventLogService(store)
    with running_receiver() as slow, running_receiver() as fast:
        service = WebhookService(store, allow_private=True)
        await service.create(alice, url=slow.url(), event_types=["slow.one"], enabled=True)
        await service.create(alice, url=fast.url(), event_types=["fast.one"], enabled=True)
        slow.answering.clear()
        dispatcher = WebhookDispatcher(store, _render, _settings())
        try:
            await events.emit(alice, "slow.one", {})
            sent = [(await events.emit(alice, "fast.one", {"n": n})).id for n in range(3)]
            await dispatcher.sweep()
            # The fast receiver gets all three, in order, while the slow one still holds
            # its first request unanswered.
            deadline = time.monotonic() + 30
            while len(fast.taken()) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert [r.webhook_id for r in fast.taken()] == sent
            assert slow.taken() == []
            slow.answering.set()
            await dispatcher.idle()
        finally:
            await dispatcher.stop()
    assert len(slow.taken()) == 1


async def _change_while_sending(
    store: Store, change: Callable[[WebhookService, Principal, str], Awaitable[object]]
) -> tuple[Receiver, list[DeliveryRecord]]:
    """Two events to a webhook; `change` is made while the receiver holds the first."""
    alice = _tenant()
    service = WebhookService(store, allow_private=True)
    with running_receiver() as receiver:
        webhook, _ = await service.create(
            alice, url=receiver.url(), event_types=["order.created"], enabled=True
        )
        dispatcher = WebhookDispatcher(store, _render, _settings())
        try:
            events = EventLogService(store)
            for n in range(2):
                await events.emit(alice, "order.created", {"n": n})
            receiver.answering.clear()
            await dispatcher.sweep()
            assert await asyncio.to_thread(receiver.arrived.wait, 30)
            await change(service, alice, webhook.id)
            receiver.answering.set()
            await dispatcher.idle()
        finally:
            await dispatcher.stop()
    return receiver, await _deliveries(store, webhook.id)


async def test_a_webhook_deleted_or_disabled_while_sending_is_sent_nothing_more(
    store: Store,
) -> None:
    async def disable(service: WebhookService, tenant: Principal, webhook_id: str) -> object:
        return await service.update(tenant, webhook_id, url=None, event_types=None, enabled=False)

    deleted, left = await _change_while_sending(store, WebhookService.delete)
    disabled, held = await _change_while_sending(store, disable)

    assert len(deleted.taken()) == 1 and left == []
    assert len(disabled.taken()) == 1
    assert [d.status for d in held] == ["succeeded", "pending"]


async def test_a_secret_rotated_while_sending_signs_the_next_delivery(store: Store) -> None:
    rotated: list[str] = []

    async def rotate(service: WebhookService, tenant: Principal, webhook_id: str) -> object:
        _, secret = await service.rotate_secret(tenant, webhook_id)
        rotated.append(secret)
        return secret

    receiver, _ = await _change_while_sending(store, rotate)

    first, second = receiver.taken()
    Webhook(rotated[0]).verify(second.raw, second.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(rotated[0]).verify(first.raw, first.headers)


async def test_an_address_refused_at_delivery_time_is_not_sent_to(store: Store) -> None:
    alice = _tenant()
    with running_receiver() as receiver:
        # Created where private addresses were allowed; sent where they are not.
        settings = _settings(allow_private=False)
        webhook_id = await send_one_event(store, alice, receiver.url(), settings)
    [refused] = await _deliveries(store, webhook_id)
    assert (refused.status, refused.attempts, refused.last_status_code) == ("pending", 1, None)
    assert refused.last_error is not None and "https URL" in refused.last_error
    assert receiver.requests == []
    assert REFUSED_MESSAGE.startswith("Invalid url:")


async def test_retention_removes_finished_deliveries_and_keeps_pending_ones(store: Store) -> None:
    world, alice = World(store), _tenant()
    hook = await _hook(world, alice, ["order.created"])
    await world.event_log.emit(alice, "order.created", {})
    await world.event_log.emit(alice, "order.created", {})
    sent, waiting = await _deliveries(store, hook)
    now = world.clock()
    await store.deliveries.record(sent.id, Outcome("succeeded", 200, None, now, now))

    world.clock.advance(world.retention_s + 1)
    await world.recovery().expire()

    assert [d.id for d in await _deliveries(store, hook)] == [waiting.id]


async def test_a_delivery_failing_past_its_retry_period_has_failed_until_retried(
    store: Store,
) -> None:
    alice = _tenant()
    service = WebhookService(store, allow_private=True)
    with running_receiver() as receiver:
        webhook = await _down_receiver(store, alice, receiver, "late.one")
        # A retry period already over when the first attempt fails.
        dispatcher = WebhookDispatcher(store, _render, _settings(retry_s=0))
        try:
            await EventLogService(store).emit(alice, "late.one", {})
            await dispatcher.sweep()
            await dispatcher.idle()
            [failed] = await _deliveries(store, webhook.id)
            assert (failed.status, failed.attempts, failed.last_status_code) == ("failed", 1, 503)
            # Failed deliveries are not sent again by themselves...
            await dispatcher.sweep()
            await dispatcher.idle()
            assert (await _deliveries(store, webhook.id))[0].attempts == 1

            # ...until retried, with a new period.
            receiver.down = False
            await service.retry(alice, webhook.id, failed.id)
            await dispatcher.sweep()
            await dispatcher.idle()
        finally:
            await dispatcher.stop()
    [sent] = await _deliveries(store, webhook.id)
    assert (sent.status, sent.attempts, sent.last_status_code) == ("succeeded", 2, 200)
