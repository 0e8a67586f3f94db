"""A tenant's API keys a page at a time, newest first, on SQLite and PostgreSQL alike:
the list of self-service keys (README, Self-service API keys), and each key's own tier.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from server.paging import Cursor
from server.store.records import ApiKeyRecord
from server.store.store import Store

CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _key(tenant: str, *, at: datetime, tier: str | None = None) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=str(uuid.uuid4()),
        tenant_id=tenant,
        name="paged",
        role="user",
        scopes="jobs:read",
        digest=uuid.uuid4().hex * 2,
        prefix="agq_abcd",
        created_at=at,
        last_used_at=None,
        expires_at=None,
        revoked_at=None,
        tier=tier,
    )


async def test_pages_hold_the_tenants_keys_newest_first_each_once(store: Store) -> None:
    tenant = f"paged-{uuid.uuid4()}"
    # Two keys share a creation time: the id breaks the tie.
    times = [CREATED, CREATED + timedelta(seconds=1), CREATED + timedelta(seconds=1)]
    keys = [_key(tenant, at=at, tier="free" if i == 0 else None) for i, at in enumerate(times)]
    for key in [*keys, _key(f"other-{uuid.uuid4()}", at=CREATED)]:
        await store.api_keys.add(key)

    seen: list[ApiKeyRecord] = []
    after: Cursor | None = None
    while True:
        page = await store.api_keys.page(tenant, after=after, limit=2)
        seen += page
        if len(page) < 2:
            break
        after = Cursor(page[-1].created_at, page[-1].id)

    expected = sorted(keys, key=lambda k: (k.created_at, k.id), reverse=True)
    assert [k.id for k in seen] == [k.id for k in expected]
    assert [k.tier for k in seen] == [k.tier for k in expected]
    assert await store.api_keys.get(keys[0].id) == keys[0]
