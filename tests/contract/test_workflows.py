"""Workflows on SQLite and PostgreSQL: versions, runs moved forward by the orchestrator
one sweep at a time, each step queued once however often a run is swept, a run started
in the transaction of the event that triggers it, and retention (README, Workflows)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from server.auth.principal import Principal
from server.errors import NotFound, ResourceExhausted
from server.providers.base import Completion, ProviderError
from server.service.event_log import EventQuery
from server.service.orchestrator import Orchestrator
from server.service.workflow_rules import Step
from server.store.database import DuplicateKey
from server.store.store import Store
from tests.fakes.provider import ScriptedProvider
from tests.world import World


def _tenant() -> Principal:
    # The databases are shared by the session: each test works in a tenant of its own.
    return Principal(subject="alice", role="user", tenant_id=f"t-{uuid.uuid4()}")


async def _diamond(world: World, tenant: Principal, trigger: str | None = None) -> Any:
    agent = await world.add_agent(tenant_id=tenant.tenant_id)
    return await world.workflows.create(
        tenant,
        name="diamond",
        trigger_event_type=trigger,
        steps=[
            Step("a", agent.id, "A {{input}}"),
            Step("b", agent.id, "B {{input}}"),
            Step("c", agent.id, "C {{steps.a.response}} {{steps.b.response}}", ("a", "b")),
        ],
    )


async def _flow(world: World, tenant: Principal, *steps: Step) -> Any:
    return await world.workflows.create(
        tenant, name="flow", trigger_event_type=None, steps=list(steps)
    )


async def _run_queued(world: World, answers: list[str]) -> None:
    """Run every job queued so far, answering in turn."""
    provider = ScriptedProvider(*(Completion(text=a, tokens_used=1) for a in answers))
    runner = world.runner(provider)
    for job_id in world.queue.sent:
        await world.run_job(runner, job_id)
    world.queue.calls.clear()


async def _sweep(orchestrator: Orchestrator, world: World) -> None:
    world.clock.advance(1)
    await orchestrator.sweep()


async def test_a_run_moves_forward_a_sweep_at_a_time_and_completes(store: Store) -> None:
    world, alice = World(store), _tenant()
    workflow = await _diamond(world, alice)
    run = await world.workflows.run(alice, workflow.id, {"n": 1})
    assert [s.status for s in run.steps] == ["pending"] * 3
    assert [s.job_id is not None for s in run.steps] == [True, True, False]
    orchestrator = world.orchestrator()

    await _run_queued(world, ["first", "second"])
    await _sweep(orchestrator, world)
    await _sweep(orchestrator, world)  # a second look changes nothing
    mid = await world.workflows.get_run(alice, workflow.id, run.id)
    assert [s.status for s in mid.steps] == ["completed", "completed", "pending"]
    [third] = world.queue.sent
    third_job = await world.job(third)
    assert third_job is not None and third_job.prompt == "C first second"
    assert third_job.parent_job_id == run.id and third_job.depth == 1

    await _run_queued(world, ["done"])
    await _sweep(orchestrator, world)
    await _sweep(orchestrator, world)
    done = await world.workflows.get_run(alice, workflow.id, run.id)
    assert (done.status, done.response, done.input) == ("completed", "done", {"n": 1})
    job = await world.job(run.id)
    assert job is not None and job.response == "done" and job.tokens_used == 3
    query = EventQuery(type="workflow.completed")
    log = await world.event_log.list_events(alice, query, size=10, token="")
    assert [e.data["steps"] for e in log.items] == [{"a": "first", "b": "second", "c": "done"}]


async def test_the_runs_event_follows_its_jobs_completion_in_the_log(store: Store) -> None:
    # Both are written by one transition at one moment; the log, newest first, must still
    # put the workflow's event after the run's job.completed (README, Workflows: Events).
    world, alice = World(store), _tenant()
    agent = await world.add_agent(tenant_id=alice.tenant_id)
    workflow = await world.workflows.create(
        alice, name="one", trigger_event_type=None, steps=[Step("a", agent.id, "A")]
    )
    run = await world.workflows.run(alice, workflow.id, None)
    await _run_queued(world, ["done"])
    await _sweep(world.orchestrator(), world)
    log = await world.event_log.list_events(alice, EventQuery(), size=10, token="")
    newest = [(e.type, e.job_id) for e in log.items[:2]]
    assert newest == [("workflow.completed", None), ("job.completed", run.id)]


async def test_a_step_is_started_once_whatever_looks_at_the_run_again(store: Store) -> None:
    world, alice = World(store), _tenant()
    workflow = await _diamond(world, alice)
    run = await world.workflows.run(alice, workflow.id, "x")
    with pytest.raises(DuplicateKey):
        await store.workflows.add_step(run.id, "a", job_id=None, error=None, at=world.clock())
    await _run_queued(world, ["first", "second"])
    # Two orchestrators, as in two processes, sweep the same run.
    first, second = world.orchestrator(), world.orchestrator()
    await _sweep(first, world)
    await _sweep(second, world)
    children = await store.jobs.children([run.id])
    assert len(children) == 3 and len(world.queue.sent) == 1


async def test_a_failed_step_fails_the_run_with_its_error(store: Store) -> None:
    world, alice = World(store), _tenant()
    workflow = await _diamond(world, alice)
    run = await world.workflows.run(alice, workflow.id, None)
    refused = ProviderError("Provider returned HTTP 400", retryable=False)
    runner = world.runner(ScriptedProvider(refused, Completion(text="fine", tokens_used=1)))
    for job_id in world.queue.sent:
        await world.run_job(runner, job_id)
    await _sweep(world.orchestrator(), world)
    failed = await world.workflows.get_run(alice, workflow.id, run.id)
    assert failed.status == "failed"
    assert failed.error == "Step a failed: Provider returned HTTP 400"
    assert failed.steps[2].job_id is None


async def test_an_emitted_event_starts_its_runs_in_its_own_transaction(store: Store) -> None:
    world, alice = World(store), _tenant()
    workflow = await _diamond(world, alice, trigger="order.created")
    await _diamond(world, _tenant(), trigger="order.created")  # another tenant's
    event = await world.triggers.emit(alice, "order.created", {"order": 9})
    page = await world.workflows.list_runs(alice, workflow.id, size=10, token="")
    [run] = page.items
    assert (run.event_id, run.input, run.version) == (event.id, {"order": 9}, 1)
    assert len(world.queue.sent) == 2  # the first two steps of this tenant's run only
    await world.triggers.emit(alice, "order.shipped", {})
    assert len((await world.workflows.list_runs(alice, workflow.id, size=10, token="")).items) == 1


async def test_versions_pages_and_deletion(store: Store) -> None:
    world, alice = World(store), _tenant()
    workflows = []
    for _ in range(3):
        world.clock.advance(1)
        workflows.append(await _diamond(world, alice))
    first = await world.workflows.list_workflows(alice, size=2, token="")
    rest = await world.workflows.list_workflows(alice, size=2, token=first.next_token or "")
    assert [w.id for w in [*first.items, *rest.items]] == [w.id for w in workflows[::-1]]
    target = workflows[0]
    updated = await world.workflows.update(
        alice, target.id, mask=["name"], name="renamed", trigger_event_type=None, steps=[]
    )
    assert (updated.version, updated.name, updated.steps) == (2, "renamed", target.steps)
    assert await store.workflows.version_steps(target.id, 1) == await store.workflows.version_steps(
        target.id, 2
    )
    await world.workflows.delete(alice, target.id)
    with pytest.raises(NotFound):
        await world.workflows.get(alice, target.id)
    with pytest.raises(NotFound):
        await world.workflows.get(_tenant(), workflows[1].id)


async def test_retention_removes_a_runs_rows_with_its_job(store: Store) -> None:
    world, alice = World(store), _tenant()
    workflow = await _diamond(world, alice)
    run = await world.workflows.run(alice, workflow.id, None)
    await world.jobs.cancel_job(alice, run.id)
    await _sweep(world.orchestrator(), world)
    assert (await world.workflows.get_run(alice, workflow.id, run.id)).status == "cancelled"
    world.clock.advance(world.retention_s + 60)
    await world.recovery().expire()
    with pytest.raises(NotFound):
        await world.workflows.get_run(alice, workflow.id, run.id)
    assert await store.workflows.steps_of([run.id]) == []


async def test_a_run_counts_against_the_tenants_cap_of_unfinished_jobs(store: Store) -> None:
    world, alice = World(store, max_unfinished_jobs=3), _tenant()
    workflow = await _diamond(world, alice)
    await world.workflows.run(alice, workflow.id, None)  # its job and two steps: three
    with pytest.raises(ResourceExhausted) as refused:
        await world.workflows.run(alice, workflow.id, None)
    assert refused.value.message == "Too many unfinished jobs: the limit is 3 per tenant"
    assert len((await world.workflows.list_runs(alice, workflow.id, size=10, token="")).items) == 1


async def test_a_storm_of_triggering_events_stops_at_the_tenants_cap(store: Store) -> None:
    # Events cost a request each, but every run is up to 21 jobs: without the cap a tenant
    # could queue without bound by emitting (README, Workflows: Triggers).
    world, alice = World(store, max_unfinished_jobs=3), _tenant()
    workflow = await _diamond(world, alice, trigger="order.created")
    await world.triggers.emit(alice, "order.created", {"order": 1})  # three jobs: at the cap
    for order in range(2, 6):
        with pytest.raises(ResourceExhausted) as refused:
            await world.triggers.emit(alice, "order.created", {"order": order})
        assert refused.value.message == "Too many unfinished jobs: the limit is 3 per tenant"
    runs = await world.workflows.list_runs(alice, workflow.id, size=10, token="")
    assert len(runs.items) == 1
    # Nothing of a refused event is stored; an event that triggers nothing is not refused.
    query = EventQuery(type="order.created")
    page = await world.triggers.list_events(alice, query, size=10, token="")
    assert len(page.items) == 1
    await world.triggers.emit(alice, "order.shipped", {})
    # One event that triggers more runs than the cap leaves room for starts none of them.
    bob = _tenant()
    for _ in range(2):
        await _diamond(world, bob, trigger="order.created")  # three jobs per run
    with pytest.raises(ResourceExhausted):
        await world.triggers.emit(bob, "order.created", {})
    page = await world.triggers.list_events(bob, query, size=10, token="")
    assert page.items == []


async def test_runs_past_a_sweeps_batch_still_move_forward(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A sweep reads a batch of open runs: older runs still waiting on their steps must not
    # keep a newer run (another tenant's) from ever moving (README, Workflows).
    monkeypatch.setattr("server.service.orchestrator.BATCH", 2)
    world, alice, bob = World(store), _tenant(), _tenant()
    slow = await _diamond(world, alice)
    for _ in range(2):
        await world.workflows.run(alice, slow.id, None)
        world.clock.advance(1)
    fast = await _diamond(world, bob)
    run = await world.workflows.run(bob, fast.id, None)
    world.queue.calls.clear()
    provider = ScriptedProvider(*(Completion(text=a, tokens_used=1) for a in ["x", "y"]))
    runner = world.runner(provider)
    for step in run.steps[:2]:
        assert step.job_id is not None
        await world.run_job(runner, step.job_id)
    orchestrator = world.orchestrator()
    for _ in range(3):
        await _sweep(orchestrator, world)
    moved = await world.workflows.get_run(bob, fast.id, run.id)
    assert [s.status for s in moved.steps] == ["completed", "completed", "pending"]
    assert moved.steps[2].job_id is not None


async def test_the_steps_an_orchestrator_keeps_stay_within_their_budget(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every PATCH makes a version, each up to a megabyte of prompts: the orchestrator's
    # copy of them must not grow with them (README, Workflows).
    world, alice = World(store), _tenant()
    workflow = await _diamond(world, alice)
    orchestrator = world.orchestrator()
    stored = await store.workflows.version_steps(workflow.id, 1)
    assert stored is not None
    monkeypatch.setattr("server.service.orchestrator.STEPS_CACHE_CHARS", 2 * len(stored))
    agent = workflow.steps[0].agent_id
    for version in range(5):
        if version:
            steps = [
                Step(s.name, agent, f"{s.prompt} v{version}", s.depends_on) for s in workflow.steps
            ]
            await world.workflows.update(
                alice, workflow.id, mask=["steps"], name="", trigger_event_type=None, steps=steps
            )
        await world.workflows.run(alice, workflow.id, None)
        await _sweep(orchestrator, world)
    assert len(orchestrator._steps) <= 2


async def test_a_late_failure_fails_a_run_whose_last_step_already_completed(store: Store) -> None:
    # The last declared step answers first; another fails after it: the run fails, and a
    # step still running when one fails is cancelled before the run ends (README, Workflows).
    world, alice = World(store), _tenant()
    agent = await world.add_agent(tenant_id=alice.tenant_id)
    workflow = await _flow(
        world,
        alice,
        Step("slow", agent.id, "S {{input}}"),
        Step("hang", agent.id, "H {{input}}"),
        Step("last", agent.id, "L {{input}}"),
    )
    run = await world.workflows.run(alice, workflow.id, None)
    slow, hang, last = (s.job_id for s in run.steps)
    assert slow is not None and hang is not None and last is not None
    orchestrator = world.orchestrator()
    ok = world.runner(ScriptedProvider(Completion(text="last answer", tokens_used=1)))
    await world.run_job(ok, last)
    await _sweep(orchestrator, world)
    assert (await world.workflows.get_run(alice, workflow.id, run.id)).status == "running"
    refused = ProviderError("Provider returned HTTP 400", retryable=False)
    await world.run_job(world.runner(ScriptedProvider(refused)), slow)
    await _sweep(orchestrator, world)
    hung = await world.job(hang)
    assert hung is not None and (hung.status == "cancelled" or hung.cancel_requested)
    await _sweep(orchestrator, world)
    failed = await world.workflows.get_run(alice, workflow.id, run.id)
    assert (failed.status, failed.error) == (
        "failed",
        "Step slow failed: Provider returned HTTP 400",
    )
    assert failed.response is None


async def test_a_steps_agent_deleted_mid_run_fails_the_run_at_that_step(store: Store) -> None:
    world, alice = World(store), _tenant()
    first = await world.add_agent(tenant_id=alice.tenant_id)
    second = await world.add_agent(tenant_id=alice.tenant_id)
    workflow = await _flow(
        world,
        alice,
        Step("a", first.id, "A {{input}}"),
        Step("b", second.id, "B", ("a",)),
        Step("c", first.id, "C", ("b",)),
    )
    run = await world.workflows.run(alice, workflow.id, None)
    await world.agents.delete_agent(alice, second.id)
    await _run_queued(world, ["a answer"])
    orchestrator = world.orchestrator()
    for _ in range(2):
        await _sweep(orchestrator, world)
    failed = await world.workflows.get_run(alice, workflow.id, run.id)
    # (Deleting the last step's agent, the run's own, cancels the run with its jobs.)
    assert (failed.status, failed.error) == ("failed", "Step b failed: Agent not found")
    assert [s.status for s in failed.steps] == ["completed", "failed", "pending"]
    assert failed.steps[1].job_id is None and failed.steps[2].job_id is None
