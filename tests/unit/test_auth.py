"""Bearer-token verification and minting answer with the exact texts of docs/contract.md §1."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Collection
from typing import Any

import jwt
import pytest

from server.auth.principal import ROLES, Principal, require_role
from server.auth.tokens import mint_token, verify_bearer
from server.errors import PermissionDenied, Unauthenticated

# 64 bytes, so pyjwt signs the HS512 test token with the same secret without warning.
SECRET = "unit-test-secret-long-enough-for-hs256-hs384-and-hs512-signing!!"
ISSUER = "vex-api"
NOW = 1_700_000_000


def _claims(*, without: tuple[str, ...] = (), **overrides: Any) -> dict[str, Any]:
    """A valid claim set at NOW, with some claims replaced or removed."""
    claims: dict[str, Any] = {
        "sub": "alice",
        "role": "user",
        "iss": ISSUER,
        "iat": NOW,
        "exp": NOW + 3600,
    }
    claims.update(overrides)
    for name in without:
        del claims[name]
    return claims


def _encode(claims: dict[str, Any], *, secret: str = SECRET, algorithm: str = "HS256") -> str:
    """A token signed by pyjwt, claims exactly as given."""
    return jwt.encode(claims, key=secret.encode("utf-8"), algorithm=algorithm)


def _segment(value: object) -> str:
    """One base64url JWT segment holding JSON, unpadded."""
    raw = json.dumps(value).encode("utf-8")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _sign_by_hand(claims: dict[str, Any]) -> str:
    """An HS256 token of claims pyjwt refuses to encode (such as a non-string iss)."""
    signing_input = f"{_segment({'alg': 'HS256', 'typ': 'JWT'})}.{_segment(claims)}"
    digest = hmac.new(SECRET.encode("utf-8"), signing_input.encode("ascii"), hashlib.sha256)
    signature = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode("ascii")
    return f"{signing_input}.{signature}"


def _verify(
    token: str, *, audience: str | None = None, max_ttl_s: int | None = None, now: float = NOW
) -> Principal:
    """verify_bearer on a well-formed header carrying this token."""
    return verify_bearer(
        f"Bearer {token}",
        secret=SECRET,
        issuer=ISSUER,
        audience=audience,
        max_ttl_s=max_ttl_s,
        now=now,
    )


def _rejection_of_header(authorization: str | None) -> str:
    """The 401 message verify_bearer gives for this Authorization value."""
    with pytest.raises(Unauthenticated) as caught:
        verify_bearer(authorization, secret=SECRET, issuer=ISSUER, now=NOW)
    return caught.value.message


def _rejection(
    token: str, *, audience: str | None = None, max_ttl_s: int | None = None, now: float = NOW
) -> str:
    """The 401 message verify_bearer gives for this token."""
    with pytest.raises(Unauthenticated) as caught:
        _verify(token, audience=audience, max_ttl_s=max_ttl_s, now=now)
    return caught.value.message


# --- the Authorization header ---------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, ""])
def test_a_request_without_an_authorization_header_is_told_it_is_missing(
    authorization: str | None,
) -> None:
    assert _rejection_of_header(authorization) == "Missing Authorization header"


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_accepted_in_any_letter_case(scheme: str) -> None:
    principal = verify_bearer(
        f"{scheme} {_encode(_claims())}", secret=SECRET, issuer=ISSUER, now=NOW
    )
    assert principal == Principal(subject="alice", role="user", tenant_id="alice")


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic x",
        "Bearer",
        "Bearer ",
        "Bearer a b",
        "Bearer  token",
        "Bearer\ttoken",
        "Token abc.def.ghi",
        "   ",
    ],
)
def test_a_header_that_is_not_bearer_and_one_token_is_an_invalid_format(
    authorization: str,
) -> None:
    assert _rejection_of_header(authorization) == "Invalid Authorization header format"


# --- the token's shape ----------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "abc.def",
        "a.b.c.d",
        "nodots",
        ".def.ghi",
        "abc..ghi",
        "abc.def.ghi",
        "!!!.###.$$$",
    ],
)
def test_a_token_that_is_not_three_decodable_parts_is_an_invalid_token(token: str) -> None:
    assert _rejection(token) == "Invalid token"


def test_a_header_part_that_is_json_but_not_an_object_is_an_invalid_token() -> None:
    token = f"{_segment(['HS256'])}.{_segment(_claims())}.c2ln"
    assert _rejection(token) == "Invalid token"


def test_a_payload_part_that_is_not_json_is_an_invalid_token_even_when_unsigned() -> None:
    # Format is checked before the algorithm, so the broken payload is what is reported.
    not_json = base64.urlsafe_b64encode(b"not json").rstrip(b"=").decode("ascii")
    token = f"{_segment({'alg': 'none'})}.{not_json}."
    assert _rejection(token) == "Invalid token"


def test_an_hs256_token_with_an_empty_signature_part_is_an_invalid_token() -> None:
    token = f"{_segment({'alg': 'HS256', 'typ': 'JWT'})}.{_segment(_claims())}."
    assert _rejection(token) == "Invalid token"


# --- algorithm and signature ----------------------------------------------------------


def test_an_unsigned_alg_none_token_is_rejected_as_invalid_algorithm() -> None:
    token = f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{_segment(_claims())}."
    assert _rejection(token) == "Token validation failed: InvalidAlgorithm"


def test_a_token_whose_header_names_no_algorithm_is_rejected_as_invalid_algorithm() -> None:
    token = f"{_segment({'typ': 'JWT'})}.{_segment(_claims())}.c2ln"
    assert _rejection(token) == "Token validation failed: InvalidAlgorithm"


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_a_token_signed_with_the_right_secret_but_another_hmac_is_invalid_algorithm(
    algorithm: str,
) -> None:
    token = _encode(_claims(), algorithm=algorithm)
    assert _rejection(token) == "Token validation failed: InvalidAlgorithm"


def test_a_token_claiming_rs256_is_rejected_as_invalid_algorithm() -> None:
    token = f"{_segment({'alg': 'RS256', 'typ': 'JWT'})}.{_segment(_claims())}.c2lnbmF0dXJl"
    assert _rejection(token) == "Token validation failed: InvalidAlgorithm"


def test_the_algorithm_is_reported_before_an_expired_or_badly_issued_token() -> None:
    claims = _claims(exp=NOW - 3600, iss="someone-else", without=("role",))
    token = f"{_segment({'alg': 'none'})}.{_segment(claims)}."
    assert _rejection(token) == "Token validation failed: InvalidAlgorithm"


def test_a_token_signed_with_another_secret_has_an_invalid_signature() -> None:
    token = _encode(_claims(), secret="another-secret-also-at-least-32-bytes")
    assert _rejection(token) == "Token validation failed: InvalidSignature"


def test_a_token_whose_payload_was_altered_after_signing_has_an_invalid_signature() -> None:
    header, _, signature = _encode(_claims()).split(".")
    forged = f"{header}.{_segment(_claims(role='admin'))}.{signature}"
    assert _rejection(forged) == "Token validation failed: InvalidSignature"


def test_the_signature_is_reported_before_expiry() -> None:
    token = _encode(_claims(exp=NOW - 3600), secret="another-secret-also-at-least-32-bytes")
    assert _rejection(token) == "Token validation failed: InvalidSignature"


# --- expiry ---------------------------------------------------------------------------


def test_a_token_expired_beyond_the_60_second_leeway_is_expired() -> None:
    assert _rejection(_encode(_claims(exp=NOW - 61))) == "Token expired"


def test_a_token_expired_exactly_60_seconds_ago_is_expired() -> None:
    assert _rejection(_encode(_claims(exp=NOW - 60))) == "Token expired"


def test_a_token_expired_within_the_leeway_is_still_accepted() -> None:
    principal = _verify(_encode(_claims(exp=NOW - 59)))
    assert principal.subject == "alice"


def test_expiry_is_reported_before_a_wrong_issuer_or_a_missing_claim() -> None:
    token = _encode(_claims(exp=NOW - 3600, iss="someone-else", without=("role",)))
    assert _rejection(token) == "Token expired"


# --- not before, issued at and lifetime -----------------------------------------------


def test_a_token_used_before_its_nbf_beyond_the_leeway_is_refused_like_an_expired_one() -> None:
    assert _rejection(_encode(_claims(nbf=NOW + 61))) == "Token expired"


def test_a_token_whose_nbf_is_within_the_leeway_or_past_is_accepted() -> None:
    assert _verify(_encode(_claims(nbf=NOW + 60))).subject == "alice"
    assert _verify(_encode(_claims(nbf=NOW - 3600))).subject == "alice"


def test_a_token_becomes_usable_once_its_nbf_comes_within_the_leeway() -> None:
    token = _encode(_claims(nbf=NOW + 600, exp=NOW + 3600))
    assert _rejection(token, now=NOW + 539) == "Token expired"
    assert _verify(token, now=NOW + 540).subject == "alice"


def test_a_token_not_yet_valid_is_reported_before_a_wrong_issuer_or_a_missing_claim() -> None:
    token = _encode(_claims(nbf=NOW + 3600, iss="someone-else", without=("role",)))
    assert _rejection(token) == "Token expired"


@pytest.mark.parametrize("nbf", [float(NOW), str(NOW), "soon", True, None])
def test_a_malformed_nbf_is_rejected_instead_of_ignored(nbf: object) -> None:
    token = _sign_by_hand(_claims(nbf=nbf))
    assert _rejection(token) == "Token validation failed: MissingClaim(nbf)"


def test_a_token_issued_in_the_future_beyond_the_leeway_has_an_unusable_iat() -> None:
    token = _encode(_claims(iat=NOW + 61, exp=NOW + 3600))
    assert _rejection(token) == "Token validation failed: MissingClaim(iat)"


def test_a_token_issued_in_the_future_within_the_leeway_is_accepted() -> None:
    assert _verify(_encode(_claims(iat=NOW + 60))).subject == "alice"


def test_without_a_maximum_lifetime_a_token_valid_for_years_is_accepted() -> None:
    token = _encode(_claims(exp=NOW + 10 * 365 * 86400))
    assert _verify(token).subject == "alice"


def test_a_token_living_longer_than_the_maximum_lifetime_has_an_unusable_exp() -> None:
    token = _encode(_claims(iat=NOW - 100, exp=NOW + 3501))
    assert _rejection(token, max_ttl_s=3600) == "Token validation failed: MissingClaim(exp)"


def test_a_token_living_exactly_the_maximum_lifetime_is_accepted() -> None:
    token = _encode(_claims(iat=NOW - 100, exp=NOW + 3500))
    assert _verify(token, max_ttl_s=3600).subject == "alice"


def test_expiry_is_reported_before_a_lifetime_over_the_maximum() -> None:
    token = _encode(_claims(iat=NOW - 86400, exp=NOW - 3600))
    assert _rejection(token, max_ttl_s=3600) == "Token expired"


# --- issuer and audience --------------------------------------------------------------


def test_a_token_from_another_issuer_has_an_invalid_issuer() -> None:
    token = _encode(_claims(iss="someone-else"))
    assert _rejection(token) == "Token validation failed: InvalidIssuer"


def test_the_issuer_is_reported_before_the_audience() -> None:
    token = _encode(_claims(iss="someone-else", aud="agentq"))
    assert _rejection(token) == "Token validation failed: InvalidIssuer"


@pytest.mark.parametrize("aud", ["agentq", ["agentq"], "", []])
def test_a_token_carrying_aud_is_rejected_when_no_audience_is_configured(aud: object) -> None:
    token = _encode(_claims(aud=aud))
    assert _rejection(token) == "Token validation failed: InvalidAudience"


@pytest.mark.parametrize("aud", ["agentq", ["agentq"], ["other", "agentq"]])
def test_a_token_whose_aud_names_the_configured_audience_is_accepted(aud: object) -> None:
    principal = _verify(_encode(_claims(aud=aud)), audience="agentq")
    assert principal.subject == "alice"


@pytest.mark.parametrize("aud", ["other", ["other"], [], 42, ["agentq", 42]])
def test_a_token_whose_aud_does_not_name_the_configured_audience_is_rejected(
    aud: object,
) -> None:
    token = _encode(_claims(aud=aud))
    assert _rejection(token, audience="agentq") == "Token validation failed: InvalidAudience"


def test_a_token_without_aud_is_rejected_when_an_audience_is_configured() -> None:
    token = _encode(_claims())
    assert _rejection(token, audience="agentq") == "Token validation failed: MissingClaim(aud)"


def test_the_audience_is_reported_before_a_missing_claim() -> None:
    token = _encode(_claims(aud="agentq", without=("role",)))
    assert _rejection(token) == "Token validation failed: InvalidAudience"


# --- required claims ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sub", "exp", "iat", "iss", "role"])
def test_a_token_without_a_required_claim_names_the_missing_claim(name: str) -> None:
    token = _encode(_claims(without=(name,)))
    assert _rejection(token) == f"Token validation failed: MissingClaim({name})"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("sub", ""),
        ("sub", 123),
        ("sub", None),
        ("exp", float(NOW + 3600)),
        ("exp", str(NOW + 3600)),
        ("exp", True),
        ("iat", str(NOW)),
        ("iat", float(NOW)),
        ("iat", False),
        ("iss", 7),
        ("role", None),
        ("role", ["user"]),
    ],
)
def test_a_required_claim_of_the_wrong_type_counts_as_missing(name: str, value: object) -> None:
    token = _sign_by_hand(_claims(**{name: value}))
    assert _rejection(token) == f"Token validation failed: MissingClaim({name})"


def test_claims_are_checked_in_a_fixed_order_so_the_first_missing_one_is_named() -> None:
    token = _encode(_claims(without=("role", "sub")))
    assert _rejection(token) == "Token validation failed: MissingClaim(sub)"


# --- the principal --------------------------------------------------------------------


def test_the_tenant_is_the_subject_when_the_token_has_no_tenant_id() -> None:
    principal = _verify(_encode(_claims(sub="bob")))
    assert principal.tenant_id == "bob"


def test_the_tenant_is_the_tenant_id_claim_when_present() -> None:
    principal = _verify(_encode(_claims(sub="bob", tenant_id="acme")))
    assert principal == Principal(subject="bob", role="user", tenant_id="acme")


@pytest.mark.parametrize("tenant_id", ["", 42, None, ["acme"]])
def test_a_malformed_tenant_id_is_rejected_instead_of_falling_back_to_the_subject(
    tenant_id: object,
) -> None:
    token = _encode(_claims(tenant_id=tenant_id))
    assert _rejection(token) == "Token validation failed: MissingClaim(tenant_id)"


def test_a_tenant_id_of_255_characters_is_the_tenant() -> None:
    principal = _verify(_encode(_claims(tenant_id="t" * 255)))
    assert principal.tenant_id == "t" * 255


def test_a_tenant_id_over_255_characters_is_rejected_as_unusable() -> None:
    token = _encode(_claims(tenant_id="t" * 256))
    assert _rejection(token) == "Token validation failed: MissingClaim(tenant_id)"


def test_a_subject_over_255_characters_cannot_be_the_tenant() -> None:
    token = _encode(_claims(sub="s" * 256))
    assert _rejection(token) == "Token validation failed: MissingClaim(tenant_id)"


def test_a_long_subject_is_accepted_when_a_usable_tenant_id_is_given() -> None:
    principal = _verify(_encode(_claims(sub="s" * 256, tenant_id="acme")))
    assert (principal.subject, principal.tenant_id) == ("s" * 256, "acme")


def test_a_role_outside_the_known_roles_still_authenticates() -> None:
    principal = _verify(_encode(_claims(role="viewer")))
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
    assert _verify(token, now=NOW + 119).subject == "carol"
    assert _rejection(token, now=NOW + 120) == "Token expired"


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
    assert require_role(_principal(role), allowed) is None


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
