"""Lists of jobs and agents page newest first, each job and agent shown once.

Page tokens, and what is refused as one, are in test_paging_tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from server.auth.principal import Principal
from server.errors import InvalidArgument
from server.paging import Page
from server.store.models import JobStatus
from server.store.records import AgentRecord, JobRecord
from tests.world import ALICE, BOB, World, agent_request, execute_request

SIZE_MESSAGE = "Invalid page_size: must be between 1 and 100"


@dataclass
class Lists:
    """ALICE's agent in a world whose clock moves on demand."""

    world: World
    agent: AgentRecord

    async def new_agent(self, caller: Principal = ALICE, name: str = "Researcher") -> AgentRecord:
        return await self.world.agents.create_agent(caller, agent_request(name))

    async def execute(
        self, n: int = 1, *, agent: AgentRecord | None = None, step_s: float = 1
    ) -> list[JobRecord]:
        """Queue `n` jobs, `step_s` seconds apart (0: all at the same instant)."""
        queued = []
        target = agent or self.agent
        owner = _owner(target)
        for i in range(n):
            self.world.clock.advance(step_s)
            spec = execute_request(f"Question {i}")
            job_id = await self.world.jobs.execute(owner, target.id, spec)
            queued.append(await self.world.jobs.get_job(owner, job_id))
        return queued


def _owner(agent: AgentRecord) -> Principal:
    return ALICE if agent.tenant_id == ALICE.tenant_id else BOB


def _newest_first(jobs: list[JobRecord]) -> list[str]:
    return [j.id for j in sorted(jobs, key=lambda j: (j.queued_at, j.id), reverse=True)]


def _ids(page: Page[JobRecord] | Page[AgentRecord]) -> list[str]:
    return [item.id for item in page.items]


@pytest.fixture
async def lists(world: World) -> Lists:
    return Lists(world, await world.agents.create_agent(ALICE, agent_request()))


# Page sizes.


async def test_a_list_without_a_page_size_gives_twenty_newest_first(lists: Lists) -> None:
    jobs = await lists.execute(25)

    page = await lists.world.jobs.list_jobs(ALICE)

    assert page.size == 20
    assert _ids(page) == _newest_first(jobs)[:20]
    assert page.next_token is not None


@pytest.mark.parametrize("size", [1, 100])
async def test_page_sizes_of_one_to_one_hundred_are_accepted(lists: Lists, size: int) -> None:
    jobs = await lists.execute(101, step_s=0)

    page = await lists.world.jobs.list_jobs(ALICE, size=size)

    assert (page.size, len(page.items)) == (size, size)
    assert _ids(page) == _newest_first(jobs)[:size]


@pytest.mark.parametrize("size", [0, -1, 101])
async def test_a_page_size_outside_one_to_one_hundred_is_invalid(lists: Lists, size: int) -> None:
    with pytest.raises(InvalidArgument) as jobs_error:
        await lists.world.jobs.list_jobs(ALICE, size=size)
    with pytest.raises(InvalidArgument) as agents_error:
        await lists.world.agents.list_agents(ALICE, size=size, token="")

    assert jobs_error.value.message == agents_error.value.message == SIZE_MESSAGE
    assert [v.field for v in jobs_error.value.violations] == ["page_size"]


# Walking the pages.


async def test_pages_show_every_job_once_newest_first_while_new_jobs_arrive(
    lists: Lists,
) -> None:
    # Some jobs share an instant: their order falls back to the id.
    jobs = await lists.execute(4) + await lists.execute(5, step_s=0) + await lists.execute(3)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await lists.world.jobs.list_jobs(ALICE, size=3, token=token)
        seen += _ids(page)
        pages += 1
        await lists.execute(2)  # newer than every page read so far
        if page.next_token is None:
            break
        token = page.next_token

    assert seen == _newest_first(jobs)
    assert pages == 4


async def test_the_last_page_has_no_next_token(lists: Lists) -> None:
    jobs = await lists.execute(4)

    first = await lists.world.jobs.list_jobs(ALICE, size=2)
    assert first.next_token is not None
    last = await lists.world.jobs.list_jobs(ALICE, size=2, token=first.next_token)

    assert _ids(first) + _ids(last) == _newest_first(jobs)
    assert last.next_token is None


async def test_an_empty_list_has_no_items_and_no_next_token(lists: Lists) -> None:
    page = await lists.world.jobs.list_jobs(ALICE)

    assert (page.items, page.next_token) == ([], None)


async def test_a_tenant_lists_only_its_own_jobs(lists: Lists) -> None:
    alices = await lists.execute(2)
    bobs = await lists.execute(2, agent=await lists.new_agent(BOB))

    assert _ids(await lists.world.jobs.list_jobs(ALICE)) == _newest_first(alices)
    assert _ids(await lists.world.jobs.list_jobs(BOB)) == _newest_first(bobs)


# Filters.


async def test_jobs_can_be_listed_for_one_agent(lists: Lists) -> None:
    jobs = lists.world.jobs
    writer = await lists.new_agent(name="Writer")
    researchers = await lists.execute(3)
    writers = await lists.execute(2, agent=writer)

    assert _ids(await jobs.list_jobs(ALICE, agent_id=writer.id)) == _newest_first(writers)
    page = await jobs.list_jobs(ALICE, agent_id=lists.agent.id, size=2)
    rest = await jobs.list_jobs(ALICE, agent_id=lists.agent.id, token=page.next_token or "")
    assert _ids(page) + _ids(rest) == _newest_first(researchers)


async def test_jobs_can_be_listed_by_status(lists: Lists) -> None:
    jobs = await lists.execute(5)
    for job in jobs[1::2]:
        await lists.world.jobs.cancel_job(ALICE, job.id)

    service = lists.world.jobs
    cancelled = await service.list_jobs(ALICE, status=JobStatus.CANCELLED)
    pending = await service.list_jobs(ALICE, status=JobStatus.PENDING, size=2)
    more = await service.list_jobs(
        ALICE, status=JobStatus.PENDING, size=2, token=pending.next_token or ""
    )

    assert _ids(cancelled) == _newest_first(jobs[1::2])
    assert _ids(pending) + _ids(more) == _newest_first(jobs[0::2])
    assert (await service.list_jobs(ALICE, status=JobStatus.COMPLETED)).items == []


async def test_agent_and_status_filters_combine(lists: Lists) -> None:
    writer = await lists.new_agent(name="Writer")
    await lists.execute(2)
    writers = await lists.execute(3, agent=writer)
    await lists.world.jobs.cancel_job(ALICE, writers[0].id)

    page = await lists.world.jobs.list_jobs(ALICE, agent_id=writer.id, status=JobStatus.PENDING)

    assert _ids(page) == _newest_first(writers[1:])


# Agents.


async def test_agents_page_newest_first_without_repeats(lists: Lists) -> None:
    created = [lists.agent]
    for i in range(4):
        lists.world.clock.advance(1)
        created.append(await lists.new_agent(name=f"Agent {i}"))
    created += [await lists.new_agent(name=f"Twin {i}") for i in range(2)]  # same instant

    first = await lists.world.agents.list_agents(ALICE, size=4, token="")
    rest = await lists.world.agents.list_agents(ALICE, size=4, token=first.next_token or "")

    newest = sorted(created, key=lambda a: (a.created_at, a.id), reverse=True)
    assert _ids(first) + _ids(rest) == [a.id for a in newest]
    assert (first.size, rest.next_token) == (4, None)


async def test_a_tenant_lists_only_its_own_agents(lists: Lists) -> None:
    bobs = await lists.new_agent(BOB)

    alices_page = await lists.world.agents.list_agents(ALICE, size=None, token="")
    bobs_page = await lists.world.agents.list_agents(BOB, size=None, token="")
    assert _ids(alices_page) == [lists.agent.id]
    assert _ids(bobs_page) == [bobs.id]


async def test_an_agent_deleted_between_page_reads_is_not_shown_and_no_other_is_skipped(
    lists: Lists,
) -> None:
    agents = lists.world.agents
    created = [lists.agent]
    for i in range(5):
        lists.world.clock.advance(1)
        created.append(await lists.new_agent(name=f"Agent {i}"))
    newest = [a.id for a in reversed(created)]

    first = await agents.list_agents(ALICE, size=2, token="")
    await agents.delete_agent(ALICE, newest[1])  # already shown
    await agents.delete_agent(ALICE, newest[3])  # not shown yet
    rest = await agents.list_agents(ALICE, size=10, token=first.next_token or "")

    assert _ids(first) == newest[:2]
    assert _ids(rest) == [newest[2], *newest[4:]]
