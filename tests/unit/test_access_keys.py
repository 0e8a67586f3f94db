"""API keys are stored as peppered digests and checked per request.

AccessService runs on the real store of a world (in-memory SQLite) and its clock.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event

from server.auth.principal import Principal
from server.errors import FieldViolation, InvalidArgument, NotFound, Unauthenticated
from server.ratelimit import Tier
from server.service.access import MAX_LIFETIME_S, AccessService, NewKey
from server.store.records import ApiKeyRecord
from server.store.sqlite import SqliteDatabase
from tests.world import START, World

PEPPER = b"unit-test-pepper-0123456789abcdef"
TIERS = {"free": Tier(rate=2, burst=20), "standard": Tier(rate=100, burst=200)}
VALID_SCOPES = "['agents:read', 'agents:write', 'jobs:read', 'jobs:write', 'keys:write']"
INVALID_KEY = "Invalid API key"
KEY_FORMAT = re.compile(r"agq_[A-Za-z0-9_-]{43}")


def _access(world: World, *, pepper: bytes = PEPPER) -> AccessService:
    return AccessService(
        world.store,
        pepper=pepper,
        tiers=TIERS,
        default_tier="free",
        max_unfinished_jobs=None,
        clock=world.clock,
    )


@pytest.fixture
def access(world: World) -> AccessService:
    return _access(world)


def _new_key(
    *,
    tenant_id: str = "acme",
    name: str = "CI deploys",
    role: str = "user",
    scopes: tuple[str, ...] = ("jobs:read", "jobs:write"),
    lifetime_s: int | None = None,
) -> NewKey:
    return NewKey(tenant_id, name, role, scopes, lifetime_s)


async def _stored(world: World, key_id: str) -> ApiKeyRecord:
    row = await world.store.api_keys.get(key_id)
    assert row is not None
    return row


async def _refused(access: AccessService, key: str) -> str:
    """The message `verify` refuses the key with."""
    with pytest.raises(Unauthenticated) as caught:
        await access.verify(key)
    return caught.value.message


async def _refusal(access: AccessService, new: NewKey) -> list[FieldViolation]:
    with pytest.raises(InvalidArgument) as caught:
        await access.create_key(new)
    return caught.value.violations


def _key_writes(world: World) -> list[str]:
    """Records every UPDATE of api_keys run from now on."""
    db = world.store.db
    assert isinstance(db, SqliteDatabase)
    writes: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE API_KEYS"):
            writes.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    return writes


# Creating keys.


async def test_a_created_key_is_agq_and_43_url_safe_characters_and_each_is_new(
    access: AccessService,
) -> None:
    _, first = await access.create_key(_new_key())
    _, second = await access.create_key(_new_key())

    assert KEY_FORMAT.fullmatch(first), first
    assert KEY_FORMAT.fullmatch(second), second
    assert first != second


async def test_the_stored_row_holds_the_peppered_hmac_digest_and_an_8_character_prefix_not_the_key(
    access: AccessService, world: World
) -> None:
    row, key = await access.create_key(_new_key())

    stored = await _stored(world, row.id)
    assert stored.digest == hmac.new(PEPPER, key.encode(), hashlib.sha256).hexdigest()
    assert stored.digest != hashlib.sha256(key.encode()).hexdigest()
    assert stored.prefix == key[:8]
    assert len(stored.prefix) == 8
    columns = stored.values().items()
    assert not [column for column, value in columns if value == key]
    assert not [c for c, v in columns if isinstance(v, str) and key[8:] in v]


async def test_the_key_is_shown_once_listing_gives_its_metadata_only(
    access: AccessService,
) -> None:
    row, key = await access.create_key(_new_key(name="  CI deploys  "))

    (listed,) = await access.list_keys("acme")

    assert listed.id == row.id
    assert (listed.name, listed.role, listed.scopes) == (
        "CI deploys",
        "user",
        "jobs:read jobs:write",
    )
    assert (listed.created_at, listed.expires_at, listed.last_used_at) == (START, None, None)
    assert key not in listed.values().values()


async def test_a_key_with_a_lifetime_expires_that_many_seconds_after_its_creation(
    access: AccessService,
) -> None:
    row, _ = await access.create_key(_new_key(lifetime_s=3600))

    assert row.expires_at == START + timedelta(hours=1)


# Checking keys.


async def test_a_key_verifies_to_its_tenant_role_and_scopes(access: AccessService) -> None:
    new = _new_key(tenant_id="globex", role="agent", scopes=("agents:read", "jobs:read"))
    row, key = await access.create_key(new)

    principal = await access.verify(key)

    assert principal == Principal(
        subject=f"apikey:{row.id}",
        role="agent",
        tenant_id="globex",
        scopes=frozenset({"agents:read", "jobs:read"}),
        api_key_id=row.id,
    )


async def test_a_scope_named_twice_is_stored_once(access: AccessService) -> None:
    new = _new_key(scopes=("jobs:read", "jobs:read", "agents:read"))
    row, key = await access.create_key(new)

    assert row.scopes == "jobs:read agents:read"
    assert (await access.verify(key)).scopes == frozenset({"jobs:read", "agents:read"})


async def test_an_unknown_key_is_refused_as_an_invalid_api_key(access: AccessService) -> None:
    _, key = await access.create_key(_new_key())
    forged = key[:-1] + ("A" if key[-1] != "A" else "B")

    assert await _refused(access, forged) == INVALID_KEY


async def test_a_key_digested_with_another_pepper_is_not_found(
    access: AccessService, world: World
) -> None:
    _, key = await access.create_key(_new_key())
    other = _access(world, pepper=b"another-pepper")

    assert await _refused(other, key) == INVALID_KEY


async def test_a_revoked_key_is_refused_from_the_next_request_on(
    access: AccessService, world: World
) -> None:
    row, key = await access.create_key(_new_key())
    await access.verify(key)
    world.clock.advance(5)

    await access.revoke_key(row.id)

    assert (await _stored(world, row.id)).revoked_at == START + timedelta(seconds=5)
    assert await _refused(access, key) == INVALID_KEY


async def test_revoking_a_revoked_key_again_keeps_the_first_revocation_time(
    access: AccessService, world: World
) -> None:
    row, _ = await access.create_key(_new_key())
    await access.revoke_key(row.id)
    world.clock.advance(60)

    await access.revoke_key(row.id)

    assert (await _stored(world, row.id)).revoked_at == START


async def test_revoking_an_unknown_key_is_not_found(access: AccessService) -> None:
    with pytest.raises(NotFound) as caught:
        await access.revoke_key("00000000-0000-4000-8000-000000000000")
    assert caught.value.message == "API key not found"


async def test_a_key_works_until_its_expiry_and_is_refused_from_that_instant(
    access: AccessService, world: World
) -> None:
    _, key = await access.create_key(_new_key(lifetime_s=60))
    world.clock.advance(59)
    assert (await access.verify(key)).tenant_id == "acme"

    world.clock.advance(1)

    assert await _refused(access, key) == INVALID_KEY


async def test_last_used_at_is_written_on_first_use_then_at_most_once_a_minute(
    access: AccessService, world: World
) -> None:
    row, key = await access.create_key(_new_key())
    assert (await _stored(world, row.id)).last_used_at is None
    writes = _key_writes(world)

    await access.verify(key)
    assert (await _stored(world, row.id)).last_used_at == START
    assert len(writes) == 1

    for _ in range(60):  # one a second, up to exactly a minute after the first use
        world.clock.advance(1)
        for _ in range(5):
            await access.verify(key)
    assert (await _stored(world, row.id)).last_used_at == START
    assert len(writes) == 1

    world.clock.advance(1)
    await access.verify(key)
    assert (await _stored(world, row.id)).last_used_at == START + timedelta(seconds=61)
    assert len(writes) == 2


# Refused keys.


async def test_an_unknown_scope_is_refused_with_the_valid_ones_listed(
    access: AccessService, world: World
) -> None:
    violations = await _refusal(access, _new_key(scopes=("jobs:read", "foo")))

    assert violations == [
        FieldViolation("scopes", f"Invalid scope(s): ['foo']. Valid: {VALID_SCOPES}")
    ]
    assert await world.store.api_keys.all(tenant_id=None) == []


async def test_an_empty_scope_list_is_refused(access: AccessService, world: World) -> None:
    violations = await _refusal(access, _new_key(scopes=()))

    assert violations == [FieldViolation("scopes", f"Invalid scope(s): []. Valid: {VALID_SCOPES}")]
    assert await world.store.api_keys.all(tenant_id=None) == []


@pytest.mark.parametrize("role", ["root", "", "Admin"])
async def test_a_role_outside_admin_user_and_agent_is_refused(
    access: AccessService, role: str
) -> None:
    violations = await _refusal(access, _new_key(role=role))

    assert violations == [FieldViolation("role", "Invalid role: must be one of admin, user, agent")]


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
async def test_a_name_empty_after_trimming_or_over_100_characters_is_refused(
    access: AccessService, name: str
) -> None:
    violations = await _refusal(access, _new_key(name=name))

    message = "Invalid name: must be 1 to 100 characters after trimming, without NUL"
    assert violations == [FieldViolation("name", message)]


@pytest.mark.parametrize("lifetime_s", [0, -1, MAX_LIFETIME_S + 1])
async def test_a_lifetime_outside_one_second_to_ten_years_is_refused(
    access: AccessService, lifetime_s: int
) -> None:
    violations = await _refusal(access, _new_key(lifetime_s=lifetime_s))

    message = f"Invalid lifetime_seconds: must be between 1 and {MAX_LIFETIME_S}"
    assert violations == [FieldViolation("lifetime_seconds", message)]


async def test_every_bad_field_of_a_key_request_is_reported_at_once(
    access: AccessService,
) -> None:
    violations = await _refusal(access, NewKey("", " ", "root", ("foo",), 0))

    assert [v.field for v in violations] == [
        "tenant_id",
        "name",
        "role",
        "scopes",
        "lifetime_seconds",
    ]


# Listing keys.


async def test_keys_are_listed_newest_first_and_by_tenant_when_one_is_given(
    access: AccessService, world: World
) -> None:
    created = []
    for tenant in ("acme", "globex", "acme", "acme"):
        created.append((await access.create_key(_new_key(tenant_id=tenant)))[0].id)
        world.clock.advance(1)

    assert [k.id for k in await access.list_keys("acme")] == [created[3], created[2], created[0]]
    assert [k.id for k in await access.list_keys("globex")] == [created[1]]
    assert [k.id for k in await access.list_keys(None)] == created[::-1]
    assert await access.list_keys("initech") == []
