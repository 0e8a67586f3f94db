"""Page tokens are opaque, signed, and bound to their list: anything else is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from server.errors import InvalidArgument
from server.paging import PageTokens
from server.service.jobs import JobService
from server.store.models import JobStatus
from server.store.records import AgentRecord
from tests.fakes.queue import FakeQueue
from tests.world import ALICE, BOB, World, agent_request, execute_request

SOME_ID = "0b7c2d56-2f4e-4a8e-9a51-6f0c5d1e8a01"
KEY = b"k" * 32


async def _execute(world: World, agent: AgentRecord, n: int) -> list[str]:
    """Queue `n` jobs of ALICE's, a second apart."""
    queued = []
    for i in range(n):
        world.clock.advance(1)
        spec = execute_request(f"Question {i}")
        queued.append(await world.jobs.execute(ALICE, agent.id, spec))
    return queued


async def _token_of(
    world: World,
    agent: AgentRecord,
    *,
    status: JobStatus | None = None,
    agent_id: str | None = None,
) -> str:
    await _execute(world, agent, 3)
    page = await world.jobs.list_jobs(ALICE, size=1, status=status, agent_id=agent_id)
    assert page.next_token is not None
    return page.next_token


# Tokens bound to their list.


@pytest.mark.parametrize(
    ("status", "agent_id"),
    [(JobStatus.PENDING, None), (None, SOME_ID), (None, None)],
    ids=["status added", "agent added", "filter dropped"],
)
async def test_a_token_used_with_other_filters_is_invalid(
    world: World, agent: AgentRecord, status: JobStatus | None, agent_id: str | None
) -> None:
    dropped = status is None and agent_id is None
    token = await _token_of(world, agent, status=JobStatus.PENDING if dropped else None)

    with pytest.raises(InvalidArgument) as error:
        await world.jobs.list_jobs(ALICE, token=token, status=status, agent_id=agent_id)

    assert error.value.message == "Invalid page_token"
    assert [v.field for v in error.value.violations] == ["page_token"]


async def test_a_token_of_another_tenant_is_invalid(world: World, agent: AgentRecord) -> None:
    token = await _token_of(world, agent)

    with pytest.raises(InvalidArgument) as error:
        await world.jobs.list_jobs(BOB, token=token)

    assert error.value.message == "Invalid page_token"


async def test_a_token_of_the_job_list_is_invalid_for_the_agent_list(
    world: World, agent: AgentRecord
) -> None:
    token = await _token_of(world, agent)

    with pytest.raises(InvalidArgument) as error:
        await world.agents.list_agents(ALICE, size=None, token=token)

    assert error.value.message == "Invalid page_token"


async def test_an_agent_list_token_is_invalid_for_another_tenant(
    world: World, agent: AgentRecord
) -> None:
    await world.agents.create_agent(ALICE, agent_request())
    token = (await world.agents.list_agents(ALICE, size=1, token="")).next_token
    assert token is not None

    with pytest.raises(InvalidArgument) as error:
        await world.agents.list_agents(BOB, size=1, token=token)

    assert error.value.message == "Invalid page_token"


# Garbage.


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
async def test_a_garbage_token_is_invalid(world: World, token: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        await world.jobs.list_jobs(ALICE, token=token)

    assert error.value.message == "Invalid page_token"


async def test_a_deeply_nested_garbage_token_is_invalid_not_an_internal_error(
    world: World,
) -> None:
    # A client (or a fuzzer) can send any string; json.loads recurses on nesting.
    token = _b64(b"[" * 100_000)

    with pytest.raises(InvalidArgument) as error:
        await world.jobs.list_jobs(ALICE, token=token)

    assert error.value.message == "Invalid page_token"


# Forged tokens.


def _payload(at: str, id: str, scope: str = "jobs:acme:None:None") -> bytes:
    fingerprint = hashlib.sha256(scope.encode()).hexdigest()[:16]
    return json.dumps({"at": at, "id": id, "s": fingerprint}).encode()


def _forged(at: str, id: str) -> str:
    return _b64(_payload(at, id))


def _signed(payload: bytes, key: bytes = KEY) -> str:
    return _b64(hmac.new(key, payload, hashlib.sha256).digest() + payload)


def _keyed_jobs(world: World, key: bytes = KEY) -> JobService:
    return JobService(world.store, FakeQueue(), clock=world.clock, page_tokens=PageTokens(key))


@pytest.mark.parametrize(
    ("at", "id"),
    [
        ("0001-01-01T00:00:00+14:00", SOME_ID),
        ("9999-12-31T23:59:59-14:00", SOME_ID),
        ("2025-01-06T09:00:00+00:00", "0b7c2d56-2f4e-4a8e-9a51-6f0c5d1e\x00a01"),
        ("2025-01-06T09:00:00+00:00", "not-a-uuid"),
    ],
    ids=["before year one", "after year 9999", "nul in id", "id not a uuid"],
)
async def test_a_forged_token_is_invalid_not_an_internal_error(
    world: World, agent: AgentRecord, at: str, id: str
) -> None:
    await _execute(world, agent, 2)

    with pytest.raises(InvalidArgument) as error:
        await world.jobs.list_jobs(ALICE, token=_forged(at, id))

    assert error.value.message == "Invalid page_token"


@pytest.mark.parametrize(
    ("at", "id"),
    [
        ("0001-01-01T00:00:00+14:00", SOME_ID),
        ("9999-12-31T23:59:59-14:00", SOME_ID),
        ("2025-01-06T09:00:00", SOME_ID),
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
async def test_a_correctly_signed_token_is_still_checked_in_full(
    world: World, agent: AgentRecord, at: str, id: str
) -> None:
    await _execute(world, agent, 2)

    with pytest.raises(InvalidArgument) as error:
        await _keyed_jobs(world).list_jobs(ALICE, token=_signed(_payload(at, id)))

    assert error.value.message == "Invalid page_token"


async def test_a_signed_token_of_another_list_is_invalid(world: World, agent: AgentRecord) -> None:
    payload = _payload("2025-01-06T09:00:00+00:00", agent.id, scope="agents:acme")

    with pytest.raises(InvalidArgument) as error:
        await _keyed_jobs(world).list_jobs(ALICE, token=_signed(payload))

    assert error.value.message == "Invalid page_token"


async def test_services_sharing_a_key_read_each_others_tokens(
    world: World, agent: AgentRecord
) -> None:
    jobs = await _execute(world, agent, 3)
    first = await _keyed_jobs(world).list_jobs(ALICE, size=2)

    rest = await _keyed_jobs(world).list_jobs(ALICE, size=2, token=first.next_token or "")

    assert [j.id for j in [*first.items, *rest.items]] == list(reversed(jobs))


async def test_a_token_signed_with_another_key_is_invalid(world: World, agent: AgentRecord) -> None:
    await _execute(world, agent, 3)
    token = (await _keyed_jobs(world, b"other" * 8).list_jobs(ALICE, size=1)).next_token

    with pytest.raises(InvalidArgument) as error:
        await _keyed_jobs(world).list_jobs(ALICE, token=token or "")

    assert error.value.message == "Invalid page_token"


async def test_a_token_with_a_changed_payload_is_invalid(world: World, agent: AgentRecord) -> None:
    await _execute(world, agent, 3)
    token = (await _keyed_jobs(world).list_jobs(ALICE, size=1)).next_token or ""
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    tampered = _b64(raw[:32] + raw[32:].replace(b"+00:00", b"+01:00"))

    with pytest.raises(InvalidArgument) as error:
        await _keyed_jobs(world).list_jobs(ALICE, token=tampered)

    assert error.value.message == "Invalid page_token"
    assert tampered != token


async def test_tokens_are_url_safe(world: World, agent: AgentRecord) -> None:
    await _execute(world, agent, 3)
    token = (await _keyed_jobs(world).list_jobs(ALICE, size=1)).next_token or ""

    assert token and all(c.isalnum() or c in "-_" for c in token)
