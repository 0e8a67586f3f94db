"""Bearer tokens' times, issuer, audience and claims: the texts of docs/contract.md §1."""

from __future__ import annotations

import pytest

from tests.unit.jwt_tokens import (
    NOW,
    encode,
    make_claims,
    rejection,
    sign_by_hand,
    verify,
)

# --- expiry ---------------------------------------------------------------------------


def test_a_token_expired_beyond_the_60_second_leeway_is_expired() -> None:
    assert rejection(encode(make_claims(exp=NOW - 61))) == "Token expired"


def test_a_token_expired_exactly_60_seconds_ago_is_expired() -> None:
    assert rejection(encode(make_claims(exp=NOW - 60))) == "Token expired"


def test_a_token_expired_within_the_leeway_is_still_accepted() -> None:
    principal = verify(encode(make_claims(exp=NOW - 59)))
    assert principal.subject == "alice"


def test_expiry_is_reported_before_a_wrong_issuer_or_a_missing_claim() -> None:
    token = encode(make_claims(exp=NOW - 3600, iss="someone-else", without=("role",)))
    assert rejection(token) == "Token expired"


# --- not before, issued at and lifetime -----------------------------------------------


def test_a_token_used_before_its_nbf_beyond_the_leeway_is_refused_like_an_expired_one() -> None:
    assert rejection(encode(make_claims(nbf=NOW + 61))) == "Token expired"


def test_a_token_whose_nbf_is_within_the_leeway_or_past_is_accepted() -> None:
    assert verify(encode(make_claims(nbf=NOW + 60))).subject == "alice"
    assert verify(encode(make_claims(nbf=NOW - 3600))).subject == "alice"


def test_a_token_becomes_usable_once_its_nbf_comes_within_the_leeway() -> None:
    token = encode(make_claims(nbf=NOW + 600, exp=NOW + 3600))
    assert rejection(token, now=NOW + 539) == "Token expired"
    assert verify(token, now=NOW + 540).subject == "alice"


def test_a_token_not_yet_valid_is_reported_before_a_wrong_issuer_or_a_missing_claim() -> None:
    token = encode(make_claims(nbf=NOW + 3600, iss="someone-else", without=("role",)))
    assert rejection(token) == "Token expired"


@pytest.mark.parametrize("nbf", [float(NOW), str(NOW), "soon", True, None])
def test_a_malformed_nbf_is_rejected_instead_of_ignored(nbf: object) -> None:
    token = sign_by_hand(make_claims(nbf=nbf))
    assert rejection(token) == "Token validation failed: MissingClaim(nbf)"


def test_a_token_issued_in_the_future_beyond_the_leeway_has_an_unusable_iat() -> None:
    token = encode(make_claims(iat=NOW + 61, exp=NOW + 3600))
    assert rejection(token) == "Token validation failed: MissingClaim(iat)"


def test_a_token_issued_in_the_future_within_the_leeway_is_accepted() -> None:
    assert verify(encode(make_claims(iat=NOW + 60))).subject == "alice"


def test_without_a_maximum_lifetime_a_token_valid_for_years_is_accepted() -> None:
    token = encode(make_claims(exp=NOW + 10 * 365 * 86400))
    assert verify(token).subject == "alice"


def test_a_token_living_longer_than_the_maximum_lifetime_has_an_unusable_exp() -> None:
    token = encode(make_claims(iat=NOW - 100, exp=NOW + 3501))
    assert rejection(token, max_ttl_s=3600) == "Token validation failed: MissingClaim(exp)"


def test_a_token_living_exactly_the_maximum_lifetime_is_accepted() -> None:
    token = encode(make_claims(iat=NOW - 100, exp=NOW + 3500))
    assert verify(token, max_ttl_s=3600).subject == "alice"


def test_expiry_is_reported_before_a_lifetime_over_the_maximum() -> None:
    token = encode(make_claims(iat=NOW - 86400, exp=NOW - 3600))
    assert rejection(token, max_ttl_s=3600) == "Token expired"


# --- issuer and audience --------------------------------------------------------------


def test_a_token_from_another_issuer_has_an_invalid_issuer() -> None:
    token = encode(make_claims(iss="someone-else"))
    assert rejection(token) == "Token validation failed: InvalidIssuer"


def test_the_issuer_is_reported_before_the_audience() -> None:
    token = encode(make_claims(iss="someone-else", aud="agentq"))
    assert rejection(token) == "Token validation failed: InvalidIssuer"


@pytest.mark.parametrize("aud", ["agentq", ["agentq"], "", []])
def test_a_token_carrying_aud_is_rejected_when_no_audience_is_configured(aud: object) -> None:
    token = encode(make_claims(aud=aud))
    assert rejection(token) == "Token validation failed: InvalidAudience"


@pytest.mark.parametrize("aud", ["agentq", ["agentq"], ["other", "agentq"]])
def test_a_token_whose_aud_names_the_configured_audience_is_accepted(aud: object) -> None:
    principal = verify(encode(make_claims(aud=aud)), audience="agentq")
    assert principal.subject == "alice"


@pytest.mark.parametrize("aud", ["other", ["other"], [], 42, ["agentq", 42]])
def test_a_token_whose_aud_does_not_name_the_configured_audience_is_rejected(
    aud: object,
) -> None:
    token = encode(make_claims(aud=aud))
    assert rejection(token, audience="agentq") == "Token validation failed: InvalidAudience"


def test_a_token_without_aud_is_rejected_when_an_audience_is_configured() -> None:
    token = encode(make_claims())
    assert rejection(token, audience="agentq") == "Token validation failed: MissingClaim(aud)"


def test_the_audience_is_reported_before_a_missing_claim() -> None:
    token = encode(make_claims(aud="agentq", without=("role",)))
    assert rejection(token) == "Token validation failed: InvalidAudience"


# --- required claims ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sub", "exp", "iat", "iss", "role"])
def test_a_token_without_a_required_claim_names_the_missing_claim(name: str) -> None:
    token = encode(make_claims(without=(name,)))
    assert rejection(token) == f"Token validation failed: MissingClaim({name})"


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
    token = sign_by_hand({**make_claims(), name: value})
    assert rejection(token) == f"Token validation failed: MissingClaim({name})"


def test_claims_are_checked_in_a_fixed_order_so_the_first_missing_one_is_named() -> None:
    token = encode(make_claims(without=("role", "sub")))
    assert rejection(token) == "Token validation failed: MissingClaim(sub)"
