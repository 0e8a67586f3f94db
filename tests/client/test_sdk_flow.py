"""The SDK against a real server: agents, execute and wait, events, paging, the asyncio twin."""

from __future__ import annotations

import pytest

from agentq.client import AsyncClient, Client, EventType, JobStatus
from tests.e2e.harness import token


def test_an_agent_is_created_read_listed_and_deleted(client: Client) -> None:
    agent = client.agents.create(name="  research bot ", role="You answer briefly.")

    assert agent.name == "research bot"
    assert agent.max_depth == 3
    assert client.agents.get(agent.id) == agent
    assert [found.id for found in client.agents.list()] == [agent.id]
    client.agents.delete(agent.id)
    assert list(client.agents.list()) == []


def test_execute_and_wait_returns_the_completed_job_with_its_answer(client: Client) -> None:
    agent = client.agents.create(name="echo", role="You answer briefly.")

    handle = client.execute(agent.id, "What is agentq?")
    job = handle.wait(timeout=30)

    assert handle.submission is not None and handle.submission.status is JobStatus.PENDING
    assert job.id == handle.id
    assert job.status is JobStatus.COMPLETED
    assert job.result is not None and job.result.success
    assert job.result.response == 'As "You answer briefly.": What is agentq?'


def test_events_stream_from_queued_to_completed_with_the_answer_in_token_deltas(
    client: Client,
) -> None:
    agent = client.agents.create(name="echo", role="You answer briefly.")
    handle = client.execute(agent.id, "one two three four five six seven eight")

    events = list(handle.events(timeout=30))

    assert [event.sequence for event in events] == list(range(1, len(events) + 1))
    kinds = [event.type for event in events]
    assert kinds[:2] == [EventType.QUEUED, EventType.STARTED]
    assert kinds[-1] is EventType.COMPLETED
    answer = "".join(event.delta for event in events if event.type is EventType.TOKEN)
    assert kinds.count(EventType.TOKEN) == 4
    assert answer == 'As "You answer briefly.": one two three four five six seven eight'
    # Watching again after a sequence replays only what came after it.
    later = list(handle.events(after_sequence=2))
    assert [event.sequence for event in later] == [event.sequence for event in events[2:]]


def test_lists_page_through_every_item_a_page_at_a_time(client: Client) -> None:
    made = [client.agents.create(name=f"agent {n}", role="You answer briefly.") for n in range(7)]
    handles = [client.execute(made[0].id, f"prompt {n}") for n in range(5)]

    listed = list(client.agents.list(page_size=3))
    jobs = list(client.jobs.list(agent_id=made[0].id, page_size=2))

    assert [agent.id for agent in listed] == [agent.id for agent in reversed(made)]
    assert sorted(job.id for job in jobs) == sorted(handle.id for handle in handles)
    assert len({job.id for job in jobs}) == 5


def test_a_context_reads_its_turns_oldest_first_and_is_deleted(client: Client) -> None:
    agent = client.agents.create(name="echo", role="You answer briefly.")
    first = client.execute(agent.id, "Where to?", context_id="trip").wait(timeout=30)
    second = client.execute(agent.id, "How long?", context_id="trip").wait(timeout=30)

    turns = list(client.contexts.get("trip", page_size=1))
    deleted = client.contexts.delete("trip")

    assert first.result is not None and first.result.new_context_id == "trip"
    assert [(turn.job_id, turn.prompt) for turn in turns] == [
        (first.id, "Where to?"),
        (second.id, "How long?"),
    ]
    assert second.result is not None and turns[1].response == second.result.response
    assert deleted == 2
    assert list(client.contexts.get("trip")) == []


def test_a_pending_job_is_cancelled_and_its_handle_says_so(client: Client) -> None:
    agent = client.agents.create(name="echo", role="You answer briefly.")
    handle = client.execute(agent.id, "a long question")

    handle.cancel()
    job = handle.wait(timeout=30)

    assert job.status is JobStatus.CANCELLED
    assert list(handle.events())[-1].type is EventType.CANCELLED


@pytest.mark.asyncio
async def test_the_async_client_runs_the_same_flow(url: str) -> None:
    async with AsyncClient(url, token=token("alice", tenant="async-flow")) as client:
        agent = await client.agents.create(name="async", role="You answer briefly.")
        handle = await client.execute(agent.id, "Hello there")
        seen = [event.type async for event in handle.events(timeout=30)]
        job = await handle.wait(timeout=30)
        listed = [found.id async for found in client.agents.list(page_size=1)]

    assert seen[0] is EventType.QUEUED and seen[-1] is EventType.COMPLETED
    assert job.status is JobStatus.COMPLETED
    assert agent.id in listed
