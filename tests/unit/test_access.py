"""API keys are stored as peppered digests, checked per request; limits and caps per tenant.

AccessService and TokenIssuer run on the fakes; the cap on unfinished jobs is checked
through JobService, which reads it from the same tenant limits.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
from datetime import timedelta
from typing import Self

import pytest

from server.access import MAX_LIFETIME_S, AccessService, Limits, NewKey, TokenIssuer
from server.auth.principal import Principal
from server.auth.tokens import LEEWAY_S, verify_bearer
from server.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
)
from server.ratelimit import Tier
from server.services import AgentService, JobService
from server.store.models import Agent, JobStatus, TenantLimit
from server.validation import agent_spec, execution_spec
from tests.unit.fakes import (
    START,
    FakeClock,
    FakeQueue,
    FakeStore,
    FakeTenantLimitRepository,
    FakeUnitOfWork,
    snapshot,
)

PEPPER = b"unit-test-pepper-0123456789abcdef"
TIERS = {"free": Tier(rate=2, burst=20), "standard": Tier(rate=100, burst=200)}
VALID_SCOPES = "['agents:read', 'agents:write', 'jobs:read', 'jobs:write']"
INVALID_KEY = "Invalid API key"
SECRET = "unit-test-secret-long-enough-for-hs256-signing!!"
ISSUER = "agentq-test"
KEY_FORMAT = re.compile(r"agq_[A-Za-z0-9_-]{43}")


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _access(
    store: FakeStore,
    clock: FakeClock,
    *,
    tier_cache_s: float = 5.0,
    max_unfinished_jobs: int | None = None,
) -> AccessService:
    return AccessService(
        store.unit_of_work,
        pepper=PEPPER,
        tiers=TIERS,
        default_tier="free",
        max_unfinished_jobs=max_unfinished_jobs,
        tier_cache_s=tier_cache_s,
        clock=clock,
    )


@pytest.fixture
def access(store: FakeStore, clock: FakeClock) -> AccessService:
    return _access(store, clock)


def _new_key(
    *,
    tenant_id: str = "acme",
    name: str = "CI deploys",
    role: str = "user",
    scopes: tuple[str, ...] = ("jobs:read", "jobs:write"),
    lifetime_s: int | None = None,
) -> NewKey:
    return NewKey(tenant_id, name, role, scopes, lifetime_s)


def _refusal(access: AccessService, new: NewKey) -> list[FieldViolation]:
    with pytest.raises(InvalidArgument) as caught:
        access.create_key(new)
    return caught.value.violations


# Creating keys.


def test_a_created_key_is_agq_and_43_url_safe_characters_and_each_is_new(
    access: AccessService,
) -> None:
    _, first = access.create_key(_new_key())
    _, second = access.create_key(_new_key())

    assert KEY_FORMAT.fullmatch(first), first
    assert KEY_FORMAT.fullmatch(second), second
    assert first != second


def test_the_stored_row_holds_the_peppered_hmac_digest_and_an_8_character_prefix_not_the_key(
    access: AccessService, store: FakeStore
) -> None:
    row, key = access.create_key(_new_key())

    stored = store.api_keys[row.id]
    assert stored.digest == hmac.new(PEPPER, key.encode(), hashlib.sha256).hexdigest()
    assert stored.digest != hashlib.sha256(key.encode()).hexdigest()
    assert stored.prefix == key[:8]
    assert len(stored.prefix) == 8
    assert not [column for column, value in snapshot(stored).items() if value == key]
    assert not [c for c, v in snapshot(stored).items() if isinstance(v, str) and key[8:] in v]


def test_the_key_is_shown_once_listing_gives_its_metadata_only(access: AccessService) -> None:
    row, key = access.create_key(_new_key(name="  CI deploys  "))

    (listed,) = access.list_keys("acme")

    assert listed.id == row.id
    assert (listed.name, listed.role, listed.scopes) == (
        "CI deploys",
        "user",
        "jobs:read jobs:write",
    )
    assert (listed.created_at, listed.expires_at, listed.last_used_at) == (START, None, None)
    assert key not in snapshot(listed).values()


def test_a_key_with_a_lifetime_expires_that_many_seconds_after_its_creation(
    access: AccessService,
) -> None:
    row, _ = access.create_key(_new_key(lifetime_s=3600))

    assert row.expires_at == START + timedelta(hours=1)


# Checking keys.


def test_a_key_verifies_to_its_tenant_role_and_scopes(access: AccessService) -> None:
    new = _new_key(tenant_id="globex", role="agent", scopes=("agents:read", "jobs:read"))
    row, key = access.create_key(new)

    principal = access.verify(key)

    assert principal == Principal(
        subject=f"apikey:{row.id}",
        role="agent",
        tenant_id="globex",
        scopes=frozenset({"agents:read", "jobs:read"}),
    )


def test_a_scope_named_twice_is_stored_once(access: AccessService) -> None:
    row, key = access.create_key(_new_key(scopes=("jobs:read", "jobs:read", "agents:read")))

    assert row.scopes == "jobs:read agents:read"
    assert access.verify(key).scopes == frozenset({"jobs:read", "agents:read"})


def test_an_unknown_key_is_refused_as_an_invalid_api_key(access: AccessService) -> None:
    _, key = access.create_key(_new_key())
    forged = key[:-1] + ("A" if key[-1] != "A" else "B")

    with pytest.raises(Unauthenticated) as caught:
        access.verify(forged)
    assert caught.value.message == INVALID_KEY


def test_a_key_digested_with_another_pepper_is_not_found(
    access: AccessService, store: FakeStore, clock: FakeClock
) -> None:
    _, key = access.create_key(_new_key())
    other = AccessService(
        store.unit_of_work,
        pepper=b"another-pepper",
        tiers=TIERS,
        default_tier="free",
        max_unfinished_jobs=None,
        clock=clock,
    )

    with pytest.raises(Unauthenticated) as caught:
        other.verify(key)
    assert caught.value.message == INVALID_KEY


def test_a_revoked_key_is_refused_from_the_next_request_on(
    access: AccessService, store: FakeStore, clock: FakeClock
) -> None:
    row, key = access.create_key(_new_key())
    access.verify(key)
    clock.advance(5)

    access.revoke_key(row.id)

    assert store.api_keys[row.id].revoked_at == START + timedelta(seconds=5)
    with pytest.raises(Unauthenticated) as caught:
        access.verify(key)
    assert caught.value.message == INVALID_KEY


def test_revoking_a_revoked_key_again_keeps_the_first_revocation_time(
    access: AccessService, store: FakeStore, clock: FakeClock
) -> None:
    row, _ = access.create_key(_new_key())
    access.revoke_key(row.id)
    clock.advance(60)

    access.revoke_key(row.id)

    assert store.api_keys[row.id].revoked_at == START


def test_revoking_an_unknown_key_is_not_found(access: AccessService) -> None:
    with pytest.raises(NotFound) as caught:
        access.revoke_key("00000000-0000-4000-8000-000000000000")
    assert caught.value.message == "API key not found"


def test_a_key_works_until_its_expiry_and_is_refused_from_that_instant(
    access: AccessService, clock: FakeClock
) -> None:
    _, key = access.create_key(_new_key(lifetime_s=60))
    clock.advance(59)
    assert access.verify(key).tenant_id == "acme"

    clock.advance(1)

    with pytest.raises(Unauthenticated) as caught:
        access.verify(key)
    assert caught.value.message == INVALID_KEY


def test_last_used_at_is_written_on_first_use_then_at_most_once_a_minute(
    access: AccessService, store: FakeStore, clock: FakeClock
) -> None:
    row, key = access.create_key(_new_key())
    assert store.api_keys[row.id].last_used_at is None
    commits = store.commits

    access.verify(key)
    assert store.api_keys[row.id].last_used_at == START
    assert store.commits == commits + 1

    for _ in range(60):  # one a second, up to exactly a minute after the first use
        clock.advance(1)
        for _ in range(5):
            access.verify(key)
    assert store.api_keys[row.id].last_used_at == START
    assert store.commits == commits + 1

    clock.advance(1)
    access.verify(key)
    assert store.api_keys[row.id].last_used_at == START + timedelta(seconds=61)
    assert store.commits == commits + 2


# Refused keys.


def test_an_unknown_scope_is_refused_with_the_valid_ones_listed(
    access: AccessService, store: FakeStore
) -> None:
    violations = _refusal(access, _new_key(scopes=("jobs:read", "foo")))

    assert violations == [
        FieldViolation("scopes", f"Invalid scope(s): ['foo']. Valid: {VALID_SCOPES}")
    ]
    assert store.api_keys == {}


def test_an_empty_scope_list_is_refused(access: AccessService, store: FakeStore) -> None:
    violations = _refusal(access, _new_key(scopes=()))

    assert violations == [FieldViolation("scopes", f"Invalid scope(s): []. Valid: {VALID_SCOPES}")]
    assert store.api_keys == {}


@pytest.mark.parametrize("role", ["root", "", "Admin"])
def test_a_role_outside_admin_user_and_agent_is_refused(access: AccessService, role: str) -> None:
    violations = _refusal(access, _new_key(role=role))

    assert violations == [FieldViolation("role", "Invalid role: must be one of admin, user, agent")]


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
def test_a_name_empty_after_trimming_or_over_100_characters_is_refused(
    access: AccessService, name: str
) -> None:
    violations = _refusal(access, _new_key(name=name))

    message = "Invalid name: must be 1 to 100 characters after trimming, without NUL"
    assert violations == [FieldViolation("name", message)]


@pytest.mark.parametrize("lifetime_s", [0, -1, MAX_LIFETIME_S + 1])
def test_a_lifetime_outside_one_second_to_ten_years_is_refused(
    access: AccessService, lifetime_s: int
) -> None:
    violations = _refusal(access, _new_key(lifetime_s=lifetime_s))

    message = f"Invalid lifetime_seconds: must be between 1 and {MAX_LIFETIME_S}"
    assert violations == [FieldViolation("lifetime_seconds", message)]


def test_every_bad_field_of_a_key_request_is_reported_at_once(access: AccessService) -> None:
    violations = _refusal(access, NewKey("", " ", "root", ("foo",), 0))

    assert [v.field for v in violations] == [
        "tenant_id",
        "name",
        "role",
        "scopes",
        "lifetime_seconds",
    ]


# Listing keys.


def test_keys_are_listed_newest_first_and_by_tenant_when_one_is_given(
    access: AccessService, clock: FakeClock
) -> None:
    created = []
    for tenant in ("acme", "globex", "acme", "acme"):
        created.append(access.create_key(_new_key(tenant_id=tenant))[0].id)
        clock.advance(1)

    assert [k.id for k in access.list_keys("acme")] == [created[3], created[2], created[0]]
    assert [k.id for k in access.list_keys("globex")] == [created[1]]
    assert [k.id for k in access.list_keys(None)] == created[::-1]
    assert access.list_keys("initech") == []


# Tenant limits.


def test_a_tenant_without_overrides_gets_the_default_tier_and_cap(
    store: FakeStore, clock: FakeClock
) -> None:
    access = _access(store, clock, max_unfinished_jobs=100)

    assert access.limits("acme") == Limits("acme", "free", TIERS["free"], 100)


def test_setting_a_tier_keeps_the_default_cap_and_setting_a_cap_keeps_the_tier(
    store: FakeStore, clock: FakeClock
) -> None:
    access = _access(store, clock, max_unfinished_jobs=100)

    assert access.set_limits("acme", tier="standard", max_unfinished=None) == Limits(
        "acme", "standard", TIERS["standard"], 100
    )
    assert access.set_limits("acme", tier=None, max_unfinished=7) == Limits(
        "acme", "standard", TIERS["standard"], 7
    )
    assert access.limits("acme") == Limits("acme", "standard", TIERS["standard"], 7)
    assert access.limits("globex") == Limits("globex", "free", TIERS["free"], 100)


def test_a_cap_of_zero_is_a_cap_not_the_default(store: FakeStore, clock: FakeClock) -> None:
    access = _access(store, clock, max_unfinished_jobs=100)

    access.set_limits("acme", tier=None, max_unfinished=0)

    assert access.limits("acme").max_unfinished_jobs == 0


def test_an_unknown_tier_is_refused_with_the_valid_ones_listed(
    access: AccessService, store: FakeStore
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        access.set_limits("acme", tier="gold", max_unfinished=5)

    message = "Invalid tier: 'gold'. Valid: ['free', 'standard']"
    assert caught.value.violations == [FieldViolation("tier", message)]
    assert store.limits == {}


def test_a_negative_cap_is_refused(access: AccessService, store: FakeStore) -> None:
    with pytest.raises(InvalidArgument) as caught:
        access.set_limits("acme", tier="standard", max_unfinished=-1)

    message = "Invalid max_unfinished_jobs: must be 0 or more"
    assert caught.value.violations == [FieldViolation("max_unfinished_jobs", message)]
    assert store.limits == {}


def test_limits_of_an_empty_tenant_id_are_refused(access: AccessService) -> None:
    with pytest.raises(InvalidArgument) as caught:
        access.set_limits("", tier="standard", max_unfinished=None)
    assert caught.value.message == "Invalid tenant_id: must be 1 to 255 characters, without NUL"


def test_the_tier_is_cached_for_a_moment_then_read_again(
    store: FakeStore, clock: FakeClock
) -> None:
    access = _access(store, clock, tier_cache_s=0.05)
    assert access.tier_of("acme") == TIERS["free"]
    # Another replica's change, straight to the database.
    store.put(TenantLimit(tenant_id="acme", tier="standard"))

    assert access.tier_of("acme") == TIERS["free"]
    time.sleep(0.06)
    assert access.tier_of("acme") == TIERS["standard"]


def test_setting_a_tier_here_takes_effect_at_once_despite_the_cache(
    access: AccessService,
) -> None:
    assert access.tier_of("acme") == TIERS["free"]

    access.set_limits("acme", tier="standard", max_unfinished=None)

    assert access.tier_of("acme") == TIERS["standard"]


# The token exchange.


def _issuer(clock: FakeClock, lifetime_s: int = 900) -> TokenIssuer:
    return TokenIssuer(secret=SECRET, issuer=ISSUER, lifetime_s=lifetime_s, clock=clock)


def test_an_exchanged_token_carries_the_keys_tenant_role_and_scopes(
    access: AccessService, clock: FakeClock
) -> None:
    new = _new_key(tenant_id="globex", role="agent", scopes=("jobs:write", "agents:read"))
    _, key = access.create_key(new)
    principal = access.verify(key)

    token, expires_at = _issuer(clock).exchange(principal)

    assert expires_at == START + timedelta(seconds=900)
    now = START.timestamp()
    assert verify_bearer(f"Bearer {token}", secret=SECRET, issuer=ISSUER, now=now) == principal


def test_an_exchanged_token_expires_after_its_lifetime(clock: FakeClock) -> None:
    principal = Principal("apikey:1", "user", "acme", frozenset({"jobs:read"}))
    token, expires_at = _issuer(clock, lifetime_s=300).exchange(principal)
    header = f"Bearer {token}"
    last_moment = expires_at.timestamp() + LEEWAY_S - 1

    assert verify_bearer(header, secret=SECRET, issuer=ISSUER, now=last_moment) == principal
    with pytest.raises(Unauthenticated) as caught:
        verify_bearer(header, secret=SECRET, issuer=ISSUER, now=last_moment + 1)
    assert caught.value.message == "Token expired"


def test_a_key_without_scopes_left_still_exchanges_to_a_scoped_token(clock: FakeClock) -> None:
    # A principal limited by scopes must never become an unscoped (role-only) token.
    principal = Principal("apikey:1", "user", "acme", frozenset())
    token, _ = _issuer(clock).exchange(principal)

    found = verify_bearer(f"Bearer {token}", secret=SECRET, issuer=ISSUER, now=START.timestamp())

    assert found.scopes == frozenset()


# The cap on unfinished jobs, enforced by JobService from the same limits.


def _agent(store: FakeStore, clock: FakeClock, tenant: str = "acme") -> Agent:
    owner = Principal(subject="alice", role="user", tenant_id=tenant)
    spec = agent_spec(name="Researcher", role="You research.", max_depth=None, spawn_shadow=False)
    return AgentService(store.unit_of_work, clock=clock).create_agent(owner, spec)


def _submit(jobs: JobService, agent: Agent) -> str:
    owner = Principal(subject="alice", role="user", tenant_id=agent.tenant_id)
    spec = execution_spec(
        prompt="Summarise.",
        context_id=None,
        enable_adversarial=False,
        enable_self_correction=False,
        max_debate_rounds=None,
    )
    return jobs.execute(owner, agent.id, spec).id


def _jobs(store: FakeStore, clock: FakeClock, cap: int | None) -> JobService:
    return JobService(store.unit_of_work, FakeQueue(), max_unfinished_jobs=cap, clock=clock)


def test_a_submit_past_the_tenants_cap_is_refused_and_stores_nothing(
    store: FakeStore, clock: FakeClock
) -> None:
    jobs, agent = _jobs(store, clock, cap=2), _agent(store, clock)
    _submit(jobs, agent)
    _submit(jobs, agent)

    with pytest.raises(ResourceExhausted) as caught:
        _submit(jobs, agent)

    assert caught.value.message == "Too many unfinished jobs: the limit is 2 per tenant"
    assert caught.value.subject == "tenant:acme"
    assert caught.value.retry_after_s >= 1
    assert len(store.jobs) == 2


def test_a_finished_job_frees_its_place_under_the_cap(store: FakeStore, clock: FakeClock) -> None:
    jobs, agent = _jobs(store, clock, cap=1), _agent(store, clock)
    first = _submit(jobs, agent)
    store.jobs[first].status = JobStatus.COMPLETED

    second = _submit(jobs, agent)

    assert store.jobs[second].status == JobStatus.PENDING


def test_the_cap_counts_only_the_tenants_own_jobs(store: FakeStore, clock: FakeClock) -> None:
    jobs = _jobs(store, clock, cap=1)
    _submit(jobs, _agent(store, clock, "globex"))

    _submit(jobs, _agent(store, clock, "acme"))

    assert sorted(job.tenant_id for job in store.jobs.values()) == ["acme", "globex"]


def test_a_tenants_own_cap_overrides_the_default_and_zero_refuses_every_submit(
    store: FakeStore, clock: FakeClock
) -> None:
    access = _access(store, clock)
    jobs, agent = _jobs(store, clock, cap=None), _agent(store, clock)
    _submit(jobs, agent)  # no default cap

    access.set_limits("acme", tier=None, max_unfinished=0)

    with pytest.raises(ResourceExhausted) as caught:
        _submit(jobs, agent)
    assert caught.value.message == "Too many unfinished jobs: the limit is 0 per tenant"


def test_racing_submits_never_exceed_the_cap(store: FakeStore, clock: FakeClock) -> None:
    jobs, agent = _jobs(store, clock, cap=5), _agent(store, clock)
    refused: list[ResourceExhausted] = []
    start = threading.Barrier(20)

    def submit() -> None:
        start.wait()
        try:
            _submit(jobs, agent)
        except ResourceExhausted as error:
            refused.append(error)

    threads = [threading.Thread(target=submit) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(store.jobs) == 5
    assert len(refused) == 15


class _CapLoweredBeforeTheLock(FakeUnitOfWork):
    """A unit of work whose `limits.lock()` first lets the operator lower the cap to 1."""

    def __init__(self, store: FakeStore, access: AccessService) -> None:
        super().__init__(store)
        self._access = access

    def __enter__(self) -> Self:
        super().__enter__()
        self.limits = _LowerThenLock(self, self._access)
        return self


class _LowerThenLock(FakeTenantLimitRepository):
    def __init__(self, uow: FakeUnitOfWork, access: AccessService) -> None:
        super().__init__(uow)
        self._access = access

    def lock(self, tenant_id: str) -> TenantLimit:
        self._access.set_limits(tenant_id, tier=None, max_unfinished=1)
        return super().lock(tenant_id)


def test_a_cap_lowered_while_a_submit_waits_for_the_lock_is_the_cap_applied(
    store: FakeStore, clock: FakeClock
) -> None:
    access = _access(store, clock)
    access.set_limits("acme", tier=None, max_unfinished=10)
    agent = _agent(store, clock)
    _submit(_jobs(store, clock, cap=None), agent)
    jobs = JobService(lambda: _CapLoweredBeforeTheLock(store, access), FakeQueue(), clock=clock)

    with pytest.raises(ResourceExhausted) as caught:
        _submit(jobs, agent)
    assert caught.value.message == "Too many unfinished jobs: the limit is 1 per tenant"

    assert len(store.jobs) == 1


def test_setting_limits_while_the_tenants_first_capped_submit_creates_its_row_succeeds(
    store: FakeStore, clock: FakeClock
) -> None:
    access = _access(store, clock)
    jobs, agent = _jobs(store, clock, cap=10), _agent(store, clock)
    racer: list[threading.Thread] = []

    # The tenant's first submit under a cap starts while set_limits holds the
    # tenant's row; it waits for the lock, then runs under the new cap.
    def first_submit() -> None:
        thread = threading.Thread(target=_submit, args=(jobs, agent))
        thread.start()
        racer.append(thread)

    store.before_next_commit(first_submit)

    limits = access.set_limits("acme", tier="standard", max_unfinished=3)
    racer[0].join(timeout=10)

    assert limits == Limits("acme", "standard", TIERS["standard"], 3)
    assert access.limits("acme") == limits
    assert len(store.jobs) == 1
