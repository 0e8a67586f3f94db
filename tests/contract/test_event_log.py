"""The tenant-wide event log on SQLite and PostgreSQL: job events (token deltas excepted)
and emitted events in one id space, newest first, filtered, paged, per tenant, and
emitted events removed by retention as old jobs are (README, Event log)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from server.auth.principal import Principal
from server.errors import InvalidArgument, NotFound
from server.providers.base import ProviderError
from server.service.event_log import EventQuery, LogEvent
from server.store.store import Store
from tests.fakes.provider import ScriptedProvider, Stream
from tests.world import World, execute_request


def _tenant() -> Principal:
    # The databases are shared by the session: each test logs under tenants of its own.
    return Principal(subject="alice", role="user", tenant_id=f"t-{uuid.uuid4()}")


async def _run_one(world: World, tenant: Principal) -> str:
    """Queue and run one job of a new agent of the tenant, streamed in two token deltas."""
    agent = await world.add_agent(tenant_id=tenant.tenant_id)
    job_id = await world.jobs.execute(tenant, agent.id, execute_request())
    world.clock.advance(1)
    runner = world.runner(ScriptedProvider(Stream(("Revenue ", "grew."), tokens_used=7)))
    assert await world.run_job(runner, job_id)
    return job_id


async def _all(world: World, tenant: Principal, query: EventQuery | None = None) -> list[LogEvent]:
    page = await world.event_log.list_events(tenant, query or EventQuery(), size=100, token="")
    return list(page.items)


async def test_a_jobs_run_shows_in_the_log_newest_first_without_its_token_deltas(
    store: Store,
) -> None:
    world, alice = World(store), _tenant()
    job_id = await _run_one(world, alice)

    log = await _all(world, alice, EventQuery(job_id=job_id))

    assert [e.type for e in log] == ["job.completed", "job.started", "job.queued"]
    assert [e.data["sequence"] for e in log] == [5, 2, 1]  # 3 and 4 are the deltas
    assert {(e.job_id, e.agent_id is not None) for e in log} == {(job_id, True)}
    assert log[0].id == f"job_{job_id}_0000000005"
    assert log[1].data == {"sequence": 2, "attempt": 1}
    assert await world.event_log.get_event(alice, log[0].id) == log[0]


async def test_a_retry_and_a_failure_show_with_their_errors(store: Store) -> None:
    world, alice = World(store), _tenant()
    agent = await world.add_agent(tenant_id=alice.tenant_id)
    job_id = await world.jobs.execute(alice, agent.id, execute_request())
    unavailable = ProviderError("Provider returned HTTP 503", retryable=True)
    refused = ProviderError("Provider returned HTTP 400", retryable=False)
    runner = world.runner(ScriptedProvider(unavailable, refused))
    assert await world.run_job(runner, job_id)
    world.clock.advance(60)
    assert await world.run_job(runner, job_id)

    log = await _all(world, alice, EventQuery(job_id=job_id))

    assert [(e.type, e.data) for e in log] == [
        ("job.failed", {"sequence": 5, "attempt": 2, "error": "Provider returned HTTP 400"}),
        ("job.started", {"sequence": 4, "attempt": 2}),
        (
            "job.retrying",
            {
                "sequence": 3,
                "attempt": 1,
                "error": "Provider returned HTTP 503",
                "delay_seconds": log[2].data.get("delay_seconds"),
            },
        ),
        ("job.started", {"sequence": 2, "attempt": 1}),
        ("job.queued", {"sequence": 1, "attempt": 0}),
    ]
    assert log[2].data["delay_seconds"] > 0


async def test_emitted_events_share_the_log_and_its_order_with_job_events(store: Store) -> None:
    world, alice = World(store), _tenant()
    first = await world.event_log.emit(alice, "order.created", {"n": 1.0, "items": [2.0, 2.5]})
    world.clock.advance(1)
    job_id = await _run_one(world, alice)
    world.clock.advance(1)
    last = await world.event_log.emit(alice, "order.shipped", {})

    log = await _all(world, alice)

    assert [e.type for e in log] == [
        "order.shipped",
        "job.completed",
        "job.started",
        "job.queued",
        "order.created",
    ]
    assert log[0] == last and log[-1] == first
    # Whole numbers are stored as integers: gRPC sends every number as a double.
    assert first.data == {"n": 1, "items": [2, 2.5]}
    assert (first.job_id, first.agent_id) == (None, None)
    assert first.id.startswith("evt_")
    assert await world.event_log.get_event(alice, first.id) == first
    assert {e.job_id for e in log if e.job_id} == {job_id}


async def test_filters_limit_the_log_and_pages_never_skip_or_repeat(store: Store) -> None:
    world, alice = World(store), _tenant()
    emitted = []
    for n in range(5):
        emitted.append(await world.event_log.emit(alice, "tick", {"n": n}))
        world.clock.advance(1)
    job_id = await _run_one(world, alice)
    since = world.clock()

    ticks = EventQuery(type="tick")
    first = await world.event_log.list_events(alice, ticks, size=2, token="")
    assert first.next_token is not None
    rest = await world.event_log.list_events(alice, ticks, size=3, token=first.next_token)
    assert [e.id for e in [*first.items, *rest.items]] == [e.id for e in reversed(emitted)]
    assert rest.next_token is None

    assert [e.type for e in await _all(world, alice, EventQuery(type="job.started"))] == [
        "job.started"
    ]
    agent_id = (await _all(world, alice, EventQuery(job_id=job_id)))[0].agent_id
    by_agent = await _all(world, alice, EventQuery(agent_id=agent_id))
    assert [e.type for e in by_agent] == ["job.completed", "job.started", "job.queued"]
    # The job was queued before `since`, and ran after.
    later = await _all(world, alice, EventQuery(since=since.isoformat()))
    assert [e.type for e in later] == ["job.completed", "job.started"]
    # A token is bound to its filters.
    with pytest.raises(InvalidArgument, match=r"^Invalid page_token$"):
        await world.event_log.list_events(alice, EventQuery(), size=2, token=first.next_token)


async def test_another_tenants_events_are_not_found_and_not_listed(store: Store) -> None:
    world, alice, bob = World(store), _tenant(), _tenant()
    job_id = await _run_one(world, alice)
    emitted = await world.event_log.emit(alice, "order.created", {})
    job_event = (await _all(world, alice, EventQuery(job_id=job_id)))[0]

    assert await _all(world, bob) == []
    assert await _all(world, bob, EventQuery(job_id=job_id)) == []
    for event in (emitted, job_event):
        with pytest.raises(NotFound, match=f"^Event {event.id} not found$"):
            await world.event_log.get_event(bob, event.id)


async def test_a_token_delta_is_no_event_of_the_log(store: Store) -> None:
    world, alice = World(store), _tenant()
    job_id = await _run_one(world, alice)

    with pytest.raises(NotFound):
        await world.event_log.get_event(alice, f"job_{job_id}_0000000003")


async def test_retention_removes_emitted_events_as_old_as_finished_jobs(store: Store) -> None:
    world, alice = World(store, retention_s=3600), _tenant()
    old = await world.event_log.emit(alice, "order.created", {})
    world.clock.advance(1800)
    kept = await world.event_log.emit(alice, "order.created", {})
    world.clock.advance(1800 + 1)

    await world.recovery().expire()

    assert [e.id for e in await _all(world, alice)] == [kept.id]
    with pytest.raises(NotFound):
        await world.event_log.get_event(alice, old.id)
    assert world.clock() - kept.created_at < timedelta(seconds=3600)
