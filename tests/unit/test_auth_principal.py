"""The principal a token stands for, minting tokens, and the role check."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import jwt
import pytest

from server.auth.principal import ROLES, Principal, require_role
from server.auth.tokens import mint_token, verify_bearer
from server.errors import PermissionDenied
from tests.unit.jwt_tokens import (
    ISSUER,
    NOW,
    SECRET,
    encode,
    make_claims,
    rejection,
    verify,
)

# --- the principal --------------------------------------------------------------------


def test_the_tenant_is_the_subject_when_the_token_has_no_tenant_id() -> None:
    principal = verify(encode(make_claims(sub="bob")))
    assert principal.tenant_id == "bob"


def test_the_tenant_is_the_tenant_id_claim_when_present() -> None:
    principal = verify(encode(make_claims(sub="bob", tenant_id="acme")))
    assert principal == Principal(subject="bob", role="user", tenant_id="acme")


@pytest.mark.parametrize("tenant_id", ["", 42, None, ["acme"]])
def test_a_malformed_tenant_id_is_rejected_instead_of_falling_back_to_the_subject(
    tenant_id: object,
) -> None:
    token = encode(make_claims(tenant_id=tenant_id))
    assert rejection(token) == "Token validation failed: MissingClaim(tenant_id)"


def test_a_tenant_id_of_255_characters_is_the_tenant() -> None:
    principal = verify(encode(make_claims(tenant_id="t" * 255)))
    assert principal.tenant_id == "t" * 255


def test_a_tenant_id_over_255_characters_is_rejected_as_unusable() -> None:
    token = encode(make_claims(tenant_id="t" * 256))
    assert rejection(token) == "Token validation failed: MissingClaim(tenant_id)"


def test_a_subject_over_255_characters_cannot_be_the_tenant() -> None:
    token = encode(make_claims(sub="s" * 256))
    assert rejection(token) == "Token validation failed: MissingClaim(tenant_id)"


def test_a_long_subject_is_accepted_when_a_usable_tenant_id_is_given() -> None:
    principal = verify(encode(make_claims(sub="s" * 256, tenant_id="acme")))
    assert (principal.subject, principal.tenant_id) == ("s" * 256, "acme")


def test_a_role_outside_the_known_roles_still_authenticates() -> None:
    principal = verify(encode(make_claims(role="viewer")))
    assert principal.role == "viewer"
    assert principal.role not in ROLES


# --- minting --------------------------------------------------------------------------


def test_a_minted_token_verifies_to_the_principal_it_was_minted_for() -> None:
    token = mint_token(secret=SECRET, subject="carol", role="agent", now=NOW)
    principal = verify_bearer(f"Bearer {token}", secret=SECRET, issuer=ISSUER, now=NOW)
    assert principal == Principal(subject="carol", role="agent", tenant_id="carol")


def test_a_minted_token_carries_integer_times_and_only_the_given_claims() -> None:
    token = mint_token(secret=SECRET, subject="carol", role="user", lifetime_s=600, now=NOW + 0.9)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims == {
        "sub": "carol",
        "role": "user",
        "iss": "vex-api",
        "iat": NOW,
        "exp": NOW + 600,
    }


def test_a_minted_token_with_tenant_and_audience_verifies_against_that_audience() -> None:
    token = mint_token(
        secret=SECRET,
        subject="carol",
        role="admin",
        issuer="agentq-test",
        tenant_id="acme",
        audience="agentq",
        now=NOW,
    )
    principal = verify_bearer(
        f"Bearer {token}", secret=SECRET, issuer="agentq-test", audience="agentq", now=NOW
    )
    assert principal == Principal(subject="carol", role="admin", tenant_id="acme")


def test_a_minted_token_expires_after_its_lifetime_plus_the_leeway() -> None:
    token = mint_token(secret=SECRET, subject="carol", role="user", lifetime_s=60, now=NOW)
    assert verify(token, now=NOW + 119).subject == "carol"
    assert rejection(token, now=NOW + 120) == "Token expired"


def test_a_token_minted_and_verified_on_the_wall_clock_is_accepted() -> None:
    token = mint_token(secret=SECRET, subject="carol", role="user")
    principal = verify_bearer(f"Bearer {token}", secret=SECRET, issuer=ISSUER)
    assert principal.subject == "carol"


@pytest.mark.parametrize(
    "overrides",
    [{"subject": ""}, {"tenant_id": ""}, {"tenant_id": "t" * 256}, {"subject": "s" * 256}],
)
def test_minting_refuses_a_token_that_verification_would_reject(
    overrides: dict[str, str],
) -> None:
    arguments: dict[str, Any] = {"secret": SECRET, "subject": "carol", "role": "user"}
    arguments.update(overrides)
    with pytest.raises(ValueError):
        mint_token(**arguments)


# --- roles ----------------------------------------------------------------------------


def _principal(role: str) -> Principal:
    return Principal(subject="alice", role=role, tenant_id="alice")


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("admin", ()),
        ("admin", ("user",)),
        ("user", ("user",)),
        ("user", ("user", "agent")),
        ("agent", ("user", "agent")),
    ],
)
def test_a_role_that_is_allowed_or_admin_passes_the_role_check(
    role: str, allowed: Collection[str]
) -> None:
    require_role(_principal(role), allowed)  # passes: raises nothing


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("user", ()),
        ("agent", ("user",)),
        ("user", ("agent",)),
        ("viewer", ("user", "agent")),
        ("viewer", ROLES),
        ("", ("user",)),
    ],
)
def test_a_role_that_is_not_allowed_is_told_it_has_insufficient_permissions(
    role: str, allowed: Collection[str]
) -> None:
    with pytest.raises(PermissionDenied) as caught:
        require_role(_principal(role), allowed)
    assert caught.value.message == "Insufficient permissions"
