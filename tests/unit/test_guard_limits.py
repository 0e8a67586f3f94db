"""The guard takes each admitted call from its tenant's bucket and refuses past the limit.

The guard runs on the real AccessService over a world's store (in-memory SQLite) and a
MemoryRateLimiter (the `access` and `guard` fixtures of conftest.py), a limiter scripted to
fail, or a database that cannot be opened.
"""

from __future__ import annotations

import math
import time

import pytest

from server.api.guard import Admission, Guard
from server.errors import ResourceExhausted, Unavailable
from server.service.access import AccessService
from tests.unit.guard_calls import (
    CREATE_TOKEN,
    EXECUTE,
    UnreachableLimiter,
    admit,
    bearer,
    make_guard,
    new_key,
    refusal,
)


async def test_each_admitted_call_reports_its_rate_limit_in_the_trailers(
    guard: Guard, access: AccessService
) -> None:
    await access.set_limits("acme", tier="tiny", max_unfinished=None)
    before = time.time()

    trailers = [dict((await admit(guard, EXECUTE, bearer())).trailers) for _ in range(3)]

    assert [t["x-ratelimit-limit"] for t in trailers] == ["3", "3", "3"]
    assert [t["x-ratelimit-remaining"] for t in trailers] == ["2", "1", "0"]
    # Three taken at one a second: full again three seconds from now.
    reset = int(trailers[-1]["x-ratelimit-reset"])
    assert math.floor(before) + 3 <= reset <= math.ceil(time.time()) + 3


async def test_a_call_past_the_burst_is_refused_with_when_to_retry_and_who_hit_the_limit(
    guard: Guard, access: AccessService
) -> None:
    await access.set_limits("acme", tier="tiny", max_unfinished=None)
    for _ in range(3):
        await admit(guard, EXECUTE, bearer())
    admission = Admission()

    with pytest.raises(ResourceExhausted) as caught:
        await guard.admit(EXECUTE, bearer(), admission)

    error = caught.value
    assert error.message == "Too many requests"
    assert error.retry_after_s >= 1
    assert error.subject == "tenant:acme"
    assert error.limit == "3 requests at once, refilled at 1 per second"
    assert admission.principal is None
    assert dict(admission.trailers)["x-ratelimit-remaining"] == "0"


async def test_api_keys_and_jwts_of_one_tenant_share_its_bucket_and_others_have_their_own(
    guard: Guard, access: AccessService
) -> None:
    await access.set_limits("acme", tier="tiny", max_unfinished=None)
    key = await new_key(access)
    await admit(guard, EXECUTE, {"x-api-key": key})
    await admit(guard, EXECUTE, bearer())
    await admit(guard, CREATE_TOKEN, {"x-api-key": key})

    assert isinstance(await refusal(guard, EXECUTE, bearer()), ResourceExhausted)
    assert (await admit(guard, EXECUTE, bearer(tenant="globex"))).principal is not None


async def test_an_unreachable_rate_limiter_refuses_the_call_as_unavailable(
    access: AccessService,
) -> None:
    guard = make_guard(access, limiter=UnreachableLimiter())
    admission = Admission()

    with pytest.raises(Unavailable) as caught:
        await guard.admit(EXECUTE, bearer(), admission)

    assert caught.value.message == "Rate limiter unavailable"
    assert admission.principal is None


@pytest.mark.parametrize("caller", ["api-key", "jwt"])
async def test_an_unreachable_key_store_refuses_the_call_as_unavailable(
    access: AccessService, offline: AccessService, caller: str
) -> None:
    metadata = {"x-api-key": await new_key(access)} if caller == "api-key" else bearer()
    guard = make_guard(offline)
    admission = Admission()

    with pytest.raises(Unavailable) as caught:
        await guard.admit(EXECUTE, metadata, admission)

    assert caught.value.message == "Database unavailable"
    assert admission.principal is None
