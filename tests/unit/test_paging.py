"""Lists of jobs and agents page newest first, with opaque tokens bound to their list."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass

import pytest

from server.auth.principal import Principal
from server.errors import InvalidArgument
from server.paging import Page, PageTokens
from server.services import AgentService, JobService
from server.store.models import Agent, Job, JobStatus
from server.validation import agent_spec, execution_spec
from tests.unit.fakes import FakeClock, FakeQueue, FakeStore

ALICE = Principal(subject="alice", role="user", tenant_id="acme")
BOB = Principal(subject="bob", role="user", tenant_id="globex")
SIZE_MESSAGE = "Invalid page_size: must be between 1 and 100"


@dataclass
class World:
    """ALICE's agent, the services over a fake store, and a clock that moves on demand."""

    store: FakeStore
    clock: FakeClock
    agents: AgentService
    jobs: JobService
    agent: Agent

    def new_agent(self, caller: Principal = ALICE, name: str = "Researcher") -> Agent:
        spec = agent_spec(name=name, role="Finds things out.", max_depth=3, spawn_shadow=False)
        return self.agents.create_agent(caller, spec)

    def execute(self, n: int = 1, *, agent: Agent | None = None, step_s: float = 1) -> list[Job]:
        """Queue `n` jobs, `step_s` seconds apart (0: all at the same instant)."""
        queued = []
        for i in range(n):
            self.clock.advance(step_s)
            spec = execution_spec(
                prompt=f"Question {i}",
                context_id=None,
                enable_adversarial=False,
                enable_self_correction=False,
                max_debate_rounds=None,
            )
            target = agent or self.agent
            queued.append(self.jobs.execute(_owner(target), target.id, spec))
        return queued


def _owner(agent: Agent) -> Principal:
    return ALICE if agent.tenant_id == ALICE.tenant_id else BOB


def _newest_first(jobs: list[Job]) -> list[str]:
    return [j.id for j in sorted(jobs, key=lambda j: (j.queued_at, j.id), reverse=True)]


def _ids(page: Page) -> list[str]:
    return [item.id for item in page.items]  # type: ignore[attr-defined]


@pytest.fixture
def world() -> World:
    store, clock = FakeStore(), FakeClock()
    agents = AgentService(store.unit_of_work, clock=clock)
    world = World(
        store=store,
        clock=clock,
        agents=agents,
        jobs=JobService(store.unit_of_work, FakeQueue(), clock=clock),
        agent=None,  # type: ignore[arg-type]
    )
    world.agent = world.new_agent()
    return world


# Page sizes.


def test_a_list_without_a_page_size_gives_twenty_newest_first(world: World) -> None:
    jobs = world.execute(25)

    page = world.jobs.list_jobs(ALICE)

    assert page.size == 20
    assert _ids(page) == _newest_first(jobs)[:20]
    assert page.next_token is not None


@pytest.mark.parametrize("size", [1, 100])
def test_page_sizes_of_one_to_one_hundred_are_accepted(world: World, size: int) -> None:
    jobs = world.execute(101, step_s=0)

    page = world.jobs.list_jobs(ALICE, size=size)

    assert (page.size, len(page.items)) == (size, size)
    assert _ids(page) == _newest_first(jobs)[:size]


@pytest.mark.parametrize("size", [0, -1, 101])
def test_a_page_size_outside_one_to_one_hundred_is_invalid(world: World, size: int) -> None:
    with pytest.raises(InvalidArgument) as jobs_error:
        world.jobs.list_jobs(ALICE, size=size)
    with pytest.raises(InvalidArgument) as agents_error:
        world.agents.list_agents(ALICE, size=size, token="")

    assert jobs_error.value.message == agents_error.value.message == SIZE_MESSAGE
    assert [v.field for v in jobs_error.value.violations] == ["page_size"]


# Walking the pages.


def test_pages_show_every_job_once_newest_first_while_new_jobs_arrive(world: World) -> None:
    # Some jobs share an instant: their order falls back to the id.
    jobs = world.execute(4) + world.execute(5, step_s=0) + world.execute(3)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = world.jobs.list_jobs(ALICE, size=3, token=token)
        seen += _ids(page)
        pages += 1
        world.execute(2)  # newer than every page read so far
        if page.next_token is None:
            break
        token = page.next_token

    assert seen == _newest_first(jobs)
    assert pages == 4


def test_the_last_page_has_no_next_token(world: World) -> None:
    jobs = world.execute(4)

    first = world.jobs.list_jobs(ALICE, size=2)
    assert first.next_token is not None
    last = world.jobs.list_jobs(ALICE, size=2, token=first.next_token)

    assert _ids(first) + _ids(last) == _newest_first(jobs)
    assert last.next_token is None


def test_an_empty_list_has_no_items_and_no_next_token(world: World) -> None:
    page = world.jobs.list_jobs(ALICE)

    assert (page.items, page.next_token) == ([], None)


def test_a_tenant_lists_only_its_own_jobs(world: World) -> None:
    alices = world.execute(2)
    bobs = world.execute(2, agent=world.new_agent(BOB))

    assert _ids(world.jobs.list_jobs(ALICE)) == _newest_first(alices)
    assert _ids(world.jobs.list_jobs(BOB)) == _newest_first(bobs)


# Filters.


def test_jobs_can_be_listed_for_one_agent(world: World) -> None:
    writer = world.new_agent(name="Writer")
    researchers = world.execute(3)
    writers = world.execute(2, agent=writer)

    assert _ids(world.jobs.list_jobs(ALICE, agent_id=writer.id)) == _newest_first(writers)
    page = world.jobs.list_jobs(ALICE, agent_id=world.agent.id, size=2)
    rest = world.jobs.list_jobs(ALICE, agent_id=world.agent.id, token=page.next_token or "")
    assert _ids(page) + _ids(rest) == _newest_first(researchers)


def test_jobs_can_be_listed_by_status(world: World) -> None:
    jobs = world.execute(5)
    for job in jobs[1::2]:
        world.jobs.cancel_job(ALICE, job.id)

    cancelled = world.jobs.list_jobs(ALICE, status=JobStatus.CANCELLED)
    pending = world.jobs.list_jobs(ALICE, status=JobStatus.PENDING, size=2)
    more = world.jobs.list_jobs(
        ALICE, status=JobStatus.PENDING, size=2, token=pending.next_token or ""
    )

    assert _ids(cancelled) == _newest_first(jobs[1::2])
    assert _ids(pending) + _ids(more) == _newest_first(jobs[0::2])
    assert world.jobs.list_jobs(ALICE, status=JobStatus.COMPLETED).items == []


def test_agent_and_status_filters_combine(world: World) -> None:
    writer = world.new_agent(name="Writer")
    world.execute(2)
    writers = world.execute(3, agent=writer)
    world.jobs.cancel_job(ALICE, writers[0].id)

    page = world.jobs.list_jobs(ALICE, agent_id=writer.id, status=JobStatus.PENDING)

    assert _ids(page) == _newest_first(writers[1:])


# Tokens.


def _token_of(world: World, **filters: object) -> str:
    world.execute(3)
    token = world.jobs.list_jobs(ALICE, size=1, **filters).next_token  # type: ignore[arg-type]
    assert token is not None
    return token


@pytest.mark.parametrize(
    "other_filters",
    [
        {"status": JobStatus.PENDING},
        {"agent_id": "0b7c2d56-2f4e-4a8e-9a51-6f0c5d1e8a01"},
        {},
    ],
    ids=["status added", "agent added", "filter dropped"],
)
def test_a_token_used_with_other_filters_is_invalid(
    world: World, other_filters: dict[str, object]
) -> None:
    issued_with = {} if other_filters else {"status": JobStatus.PENDING}
    token = _token_of(world, **issued_with)

    with pytest.raises(InvalidArgument) as error:
        world.jobs.list_jobs(ALICE, token=token, **other_filters)  # type: ignore[arg-type]

    assert error.value.message == "Invalid page_token"
    assert [v.field for v in error.value.violations] == ["page_token"]


def test_a_token_of_another_tenant_is_invalid(world: World) -> None:
    token = _token_of(world)

    with pytest.raises(InvalidArgument) as error:
        world.jobs.list_jobs(BOB, token=token)

    assert error.value.message == "Invalid page_token"


def test_a_token_of_the_job_list_is_invalid_for_the_agent_list(world: World) -> None:
    token = _token_of(world)

    with pytest.raises(InvalidArgument) as error:
        world.agents.list_agents(ALICE, size=None, token=token)

    assert error.value.message == "Invalid page_token"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "not-a-token",
        "!!!",
        "=",
        _b64(b"\xff\xfe"),
        _b64(b"[]"),
        _b64(b'"text"'),
        _b64(json.dumps({"at": "2025-01-06T09:00:00+00:00", "id": "x"}).encode()),
        _b64(json.dumps({"at": "yesterday", "id": "x", "s": "0"}).encode()),
        _b64(json.dumps({"at": "2025-01-06T09:00:00", "id": "x", "s": "0"}).encode()),
    ],
    ids=[
        "text",
        "punctuation",
        "padding",
        "binary",
        "json list",
        "json string",
        "no scope",
        "bad time",
        "naive time",
    ],
)
def test_a_garbage_token_is_invalid(world: World, token: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        world.jobs.list_jobs(ALICE, token=token)

    assert error.value.message == "Invalid page_token"


def test_a_deeply_nested_garbage_token_is_invalid_not_an_internal_error(world: World) -> None:
    # A client (or a fuzzer) can send any string; json.loads recurses on nesting.
    token = _b64(b"[" * 100_000)

    with pytest.raises(InvalidArgument) as error:
        world.jobs.list_jobs(ALICE, token=token)

    assert error.value.message == "Invalid page_token"


# Agents.


def test_agents_page_newest_first_without_repeats(world: World) -> None:
    created = [world.agent]
    for i in range(4):
        world.clock.advance(1)
        created.append(world.new_agent(name=f"Agent {i}"))
    created += [world.new_agent(name=f"Twin {i}") for i in range(2)]  # same instant

    first = world.agents.list_agents(ALICE, size=4, token="")
    rest = world.agents.list_agents(ALICE, size=4, token=first.next_token or "")

    newest = sorted(created, key=lambda a: (a.created_at, a.id), reverse=True)
    assert _ids(first) + _ids(rest) == [a.id for a in newest]
    assert (first.size, rest.next_token) == (4, None)


def test_a_tenant_lists_only_its_own_agents(world: World) -> None:
    bobs = world.new_agent(BOB)

    assert _ids(world.agents.list_agents(ALICE, size=None, token="")) == [world.agent.id]
    assert _ids(world.agents.list_agents(BOB, size=None, token="")) == [bobs.id]


def test_an_agent_list_token_is_invalid_for_another_tenant(world: World) -> None:
    world.new_agent()
    token = world.agents.list_agents(ALICE, size=1, token="").next_token
    assert token is not None

    with pytest.raises(InvalidArgument) as error:
        world.agents.list_agents(BOB, size=1, token=token)

    assert error.value.message == "Invalid page_token"


def test_an_agent_deleted_between_page_reads_is_not_shown_and_no_other_is_skipped(
    world: World,
) -> None:
    created = [world.agent]
    for i in range(5):
        world.clock.advance(1)
        created.append(world.new_agent(name=f"Agent {i}"))
    newest = [a.id for a in reversed(created)]

    first = world.agents.list_agents(ALICE, size=2, token="")
    world.agents.delete_agent(ALICE, newest[1])  # already shown
    world.agents.delete_agent(ALICE, newest[3])  # not shown yet
    rest = world.agents.list_agents(ALICE, size=10, token=first.next_token or "")

    assert _ids(first) == newest[:2]
    assert _ids(rest) == [newest[2], *newest[4:]]


# Forged tokens.


KEY = b"k" * 32


def _payload(at: str, id: str, scope: str = "jobs:acme:None:None") -> bytes:
    fingerprint = hashlib.sha256(scope.encode()).hexdigest()[:16]
    return json.dumps({"at": at, "id": id, "s": fingerprint}).encode()


def _forged(at: str, id: str) -> str:
    return _b64(_payload(at, id))


def _signed(payload: bytes, key: bytes = KEY) -> str:
    return _b64(hmac.new(key, payload, hashlib.sha256).digest() + payload)


def _keyed_jobs(world: World, key: bytes = KEY) -> JobService:
    return JobService(
        world.store.unit_of_work, FakeQueue(), clock=world.clock, page_tokens=PageTokens(key)
    )


@pytest.mark.parametrize(
    ("at", "id"),
    [
        ("0001-01-01T00:00:00+14:00", "0b7c2d56-2f4e-4a8e-9a51-6f0c5d1e8a01"),
        ("9999-12-31T23:59:59-14:00", "0b7c2d56-2f4e-4a8e-9a51-6f0c5d1e8a01"),
        ("2025-01-06T09:00:00+00:00", "0b7c2d56-2f4e-4a8e-9a51-6f0c5d1e\x00a01"),
        ("2025-01-06T09:00:00+00:00", "not-a-uuid"),
    ],
    ids=["before year one", "after year 9999", "nul in id", "id not a uuid"],
)
def test_a_forged_token_is_invalid_not_an_internal_error(world: World, at: str, id: str) -> None:
    world.execute(2)

    with pytest.raises(InvalidArgument) as error:
        world.jobs.list_jobs(ALICE, token=_forged(at, id))

    assert error.value.message == "Invalid page_token"


@pytest.mark.parametrize(
    ("at", "id"),
    [
        ("0001-01-01T00:00:00+14:00", "0b7c2d56-2f4e-4a8e-9a51-6f0c5d1e8a01"),
        ("9999-12-31T23:59:59-14:00", "0b7c2d56-2f4e-4a8e-9a51-6f0c5d1e8a01"),
        ("2025-01-06T09:00:00", "0b7c2d56-2f4e-4a8e-9a51-6f0c5d1e8a01"),
        ("2025-01-06T09:00:00+00:00", "0b7c2d56-2f4e-4a8e-9a51-6f0c5d1e\x00a01"),
        ("2025-01-06T09:00:00+00:00", "not-a-uuid"),
        ("2025-01-06T09:00:00+00:00", "0B7C2D56-2F4E-4A8E-9A51-6F0C5D1E8A01"),
        ("2025-01-06T09:00:00+00:00", "0b7c2d562f4e4a8e9a516f0c5d1e8a01"),
    ],
    ids=[
        "before year one",
        "after year 9999",
        "naive time",
        "nul in id",
        "id not a uuid",
        "uppercase uuid",
        "uuid without dashes",
    ],
)
def test_a_correctly_signed_token_is_still_checked_in_full(world: World, at: str, id: str) -> None:
    world.execute(2)

    with pytest.raises(InvalidArgument) as error:
        _keyed_jobs(world).list_jobs(ALICE, token=_signed(_payload(at, id)))

    assert error.value.message == "Invalid page_token"


def test_a_signed_token_of_another_list_is_invalid(world: World) -> None:
    payload = _payload("2025-01-06T09:00:00+00:00", world.agent.id, scope="agents:acme")

    with pytest.raises(InvalidArgument) as error:
        _keyed_jobs(world).list_jobs(ALICE, token=_signed(payload))

    assert error.value.message == "Invalid page_token"


def test_services_sharing_a_key_read_each_others_tokens(world: World) -> None:
    jobs = world.execute(3)
    first = _keyed_jobs(world).list_jobs(ALICE, size=2)

    rest = _keyed_jobs(world).list_jobs(ALICE, size=2, token=first.next_token or "")

    assert _ids(first) + _ids(rest) == _newest_first(jobs)


def test_a_token_signed_with_another_key_is_invalid(world: World) -> None:
    world.execute(3)
    token = _keyed_jobs(world, b"other" * 8).list_jobs(ALICE, size=1).next_token

    with pytest.raises(InvalidArgument) as error:
        _keyed_jobs(world).list_jobs(ALICE, token=token or "")

    assert error.value.message == "Invalid page_token"


def test_a_token_with_a_changed_payload_is_invalid(world: World) -> None:
    world.execute(3)
    token = _keyed_jobs(world).list_jobs(ALICE, size=1).next_token or ""
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    tampered = _b64(raw[:32] + raw[32:].replace(b"+00:00", b"+01:00"))

    with pytest.raises(InvalidArgument) as error:
        _keyed_jobs(world).list_jobs(ALICE, token=tampered)

    assert error.value.message == "Invalid page_token"
    assert tampered != token


def test_tokens_are_url_safe(world: World) -> None:
    world.execute(3)
    token = _keyed_jobs(world).list_jobs(ALICE, size=1).next_token or ""

    assert token and all(c.isalnum() or c in "-_" for c in token)
